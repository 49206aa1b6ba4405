//! Measures openmls alone (so this binary's size is openmls's weight over the baseline).
fn main() {
    if let Err(e) = chatroom_mls_bench::om::run() {
        eprintln!("openmls measurement failed: {e}");
        std::process::exit(1);
    }
}
