//! The baseline: one Argon2id derivation at chatroom's default parameters, and (as a binary)
//! the size of a program with only ed25519-dalek and argon2, to subtract from the MLS ones.
use ed25519_dalek::Signer as _;

fn main() {
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let sig = key.sign(b"baseline");
    if key.verifying_key().verify_strict(b"baseline", &sig).is_err() {
        std::process::exit(1);
    }
    match chatroom_mls_bench::common::argon2_ms(5) {
        Ok((cpu, wall)) => {
            println!("argon2id\t-\tm65536t3p1\tcpu_ms={cpu:.1}\twall_ms={wall:.1}\tn=5")
        }
        Err(e) => {
            eprintln!("argon2 measurement failed: {e}");
            std::process::exit(1);
        }
    }
}
