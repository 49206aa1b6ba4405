//! mls-rs built with only `std`, `private_message` and `psk` (no `prior_epoch`, no
//! `out_of_order`, no `rayon`): checks that this build still does what protocol v2 needs
//! (entry by external commit with a PSK) and what it deletes. Prints one line per check and
//! exits non-zero if any check fails. Run: `cargo run --release --locked -p chatroom-mls-minimal`.
#![forbid(unsafe_code)]

use mls_rs::client_builder::MlsConfig;
use mls_rs::crypto::{SignaturePublicKey, SignatureSecretKey};
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::identity::SigningIdentity;
use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules, EncryptionOptions};
use mls_rs::psk::{ExternalPskId, PreSharedKey};
use mls_rs::storage_provider::in_memory::InMemoryPreSharedKeyStorage;
use mls_rs::{CipherSuite, Client, ExtensionList, Group, MlsMessage};
use mls_rs_crypto_rustcrypto::RustCryptoProvider;

const CS: CipherSuite = CipherSuite::CURVE25519_CHACHA;
const PSK_ID: &[u8] = b"chatroom/2 psk\0\0\0\0";

type Res<T> = Result<T, String>;

fn err<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e:?}")
}

fn client() -> Client<impl MlsConfig> {
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let public = key.verifying_key().to_bytes().to_vec();
    let mut psks = InMemoryPreSharedKeyStorage::default();
    psks.insert(ExternalPskId::new(PSK_ID.to_vec()), PreSharedKey::new(vec![0x42; 32]));
    let rules = DefaultMlsRules::new()
        .with_commit_options(
            CommitOptions::new().with_ratchet_tree_extension(true).with_allow_external_commit(true),
        )
        .with_encryption_options(EncryptionOptions::new(true, Default::default()));
    Client::builder()
        .identity_provider(BasicIdentityProvider)
        .crypto_provider(RustCryptoProvider::default())
        .psk_store(psks)
        .mls_rules(rules)
        .signing_identity(
            SigningIdentity::new(
                BasicCredential::new(public.clone()).into_credential(),
                SignaturePublicKey::new(public),
            ),
            SignatureSecretKey::new(key.to_keypair_bytes().to_vec()),
            CS,
        )
        .build()
}

fn send<C: MlsConfig>(g: &mut Group<C>, text: &[u8]) -> Res<MlsMessage> {
    g.encrypt_application_message(text, vec![]).map_err(err("encrypt"))
}

fn check(name: &str, ok: bool, failures: &mut u32) {
    println!("{}\t{name}", if ok { "ok" } else { "FAILED" });
    if !ok {
        *failures += 1;
    }
}

fn run() -> Res<u32> {
    let mut failures = 0;
    let (a, b) = (client(), client());
    let mut ga = a.create_group(ExtensionList::new(), ExtensionList::new(), None).map_err(err("create"))?;
    let gi = ga.group_info_message_allowing_ext_commit(true).map_err(err("group info"))?;
    let (mut gb, commit) = b
        .external_commit_builder()
        .map_err(err("builder"))?
        .with_external_psk(ExternalPskId::new(PSK_ID.to_vec()))
        .build(gi)
        .map_err(err("external commit"))?;
    ga.process_incoming_message(commit).map_err(err("process entry"))?;
    check("entry by external commit with a PSK, features std+private_message+psk", true, &mut failures);

    let (m1, m2, m3) = (send(&mut ga, b"one")?, send(&mut ga, b"two")?, send(&mut ga, b"three")?);
    check("in order: first message", gb.process_incoming_message(m1).is_ok(), &mut failures);
    let skipped_ahead = gb.process_incoming_message(m3).is_ok();
    check("forward gap (a message never stored) skipped, later one read", skipped_ahead, &mut failures);
    let late = gb.process_incoming_message(m2).is_ok();
    check("the skipped message's key is not kept (refused afterwards)", !late, &mut failures);

    let old_epoch = send(&mut ga, b"sent before the commit")?;
    let update = ga.commit_builder().build().map_err(err("update"))?;
    ga.apply_pending_commit().map_err(err("apply"))?;
    gb.process_incoming_message(update.commit_message).map_err(err("process update"))?;
    let read_old = gb.process_incoming_message(old_epoch).is_ok();
    check(
        "a message of the previous epoch is refused after the commit (no prior epoch kept)",
        !read_old,
        &mut failures,
    );
    let same = ga.epoch_authenticator().map_err(err("auth"))?.to_vec()
        == gb.epoch_authenticator().map_err(err("auth"))?.to_vec();
    check("both members agree on the epoch authenticator", same, &mut failures);
    Ok(failures)
}

fn main() {
    match run() {
        Ok(0) => {}
        Ok(n) => {
            eprintln!("{n} check(s) failed");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("mls-rs minimal check failed: {e}");
            std::process::exit(1);
        }
    }
}
