//! Measures mls-rs alone (so this binary's size is mls-rs's weight over the baseline).
fn main() {
    if let Err(e) = chatroom_mls_bench::mlsrs::run() {
        eprintln!("mls-rs measurement failed: {e}");
        std::process::exit(1);
    }
}
