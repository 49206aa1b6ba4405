//! Replays every committed fuzz seed and every saved crash input through the same checks
//! the fuzz targets run (`fuzz/seeds/<target>/` and `fuzz/regressions/<target>/`).

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use chatroom_fuzz_checks::TARGETS;

type TestResult = Result<(), Box<dyn Error>>;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out: Vec<PathBuf> = fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    // Skip `.gitkeep` and other hidden files.
    out.retain(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')));
    out.sort();
    Ok(out)
}

fn replay(target: &str) -> TestResult {
    let (_, check) = TARGETS.iter().find(|(name, _)| *name == target).ok_or("unknown target")?;
    let seeds = files(&fuzz_dir().join("seeds").join(target))?;
    assert!(!seeds.is_empty(), "no seeds for {target}: run scripts/fuzz-seeds");
    let regressions = files(&fuzz_dir().join("regressions").join(target))?;
    for path in seeds.iter().chain(&regressions) {
        eprintln!("replaying {}", path.display());
        check(&fs::read(path)?);
    }
    Ok(())
}

/// Every fuzz target of `fuzz/` (a file in `fuzz/fuzz_targets/`) is in `TARGETS` and has a
/// `<target>_corpus` test in this file, and `TARGETS` names no target that does not exist.
#[test]
fn every_target_has_a_replay_test() -> TestResult {
    let mut on_disk: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))?
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    on_disk.sort();
    assert!(!on_disk.is_empty(), "no fuzz targets found in fuzz/fuzz_targets");
    let mut listed: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    listed.sort();
    assert_eq!(listed, on_disk, "TARGETS and fuzz/fuzz_targets disagree");
    let this_file = include_str!("corpus.rs");
    for name in &on_disk {
        let test = format!("fn {name}_corpus() -> TestResult {{\n    replay(\"{name}\")\n}}");
        assert!(this_file.contains(&test), "no replay test `{name}_corpus` in tests/corpus.rs");
    }
    Ok(())
}

#[test]
fn frame_decode_corpus() -> TestResult {
    replay("frame_decode")
}

#[test]
fn message_decode_corpus() -> TestResult {
    replay("message_decode")
}

#[test]
fn envelope_open_corpus() -> TestResult {
    replay("envelope_open")
}

#[test]
fn handshake_responder_corpus() -> TestResult {
    replay("handshake_responder")
}

#[test]
fn handshake_initiator_corpus() -> TestResult {
    replay("handshake_initiator")
}

#[test]
fn client_session_corpus() -> TestResult {
    replay("client_session")
}

/// The client_session seeds reach every outcome, so the fuzzer starts from all of them.
#[test]
fn client_session_seeds_reach_every_outcome() -> TestResult {
    use chatroom_fuzz_checks::client_session::{tally, Tally};
    let dir = fuzz_dir().join("seeds/client_session");
    let t = |name: &str| -> Result<Tally, Box<dyn Error>> { Ok(tally(&fs::read(dir.join(name))?)) };
    assert_eq!(t("history-and-live")?, Tally { shown: 4, ..Tally::default() });
    // A `Deliver` item takes an envelope of either protocol version's bounds, so the short
    // forged envelope reaches the view and fails verification there instead of failing to decode.
    assert_eq!(t("forgeries")?, Tally { shown: 1, unverified: 6, dropped: 1, ..Tally::default() });
    // Pins come from signed messages only: a presence or member list claiming a nickname
    // pins nothing, so only the signed impostor is rejected.
    assert_eq!(t("impostors")?, Tally { shown: 3, nick_rejected: 1, ..Tally::default() });
    assert_eq!(t("replays-and-gaps")?, Tally { shown: 2, replayed: 2, dropped: 2, ..Tally::default() });
    Ok(())
}

#[test]
fn relay_session_corpus() -> TestResult {
    replay("relay_session")
}

/// The relay_session seeds get past the joins: sends are acknowledged and delivered.
#[test]
fn relay_session_seeds_reach_the_room() -> TestResult {
    use chatroom_fuzz_checks::relay_session::tally;
    let dir = fuzz_dir().join("seeds/relay_session");
    let chat = tally(&fs::read(dir.join("chat"))?);
    assert_eq!(chat.acked, 6, "{chat:?}");
    assert!(chat.delivered >= 6, "{chat:?}");
    let hostile = tally(&fs::read(dir.join("hostile"))?);
    eprintln!("chat: {chat:?}; hostile: {hostile:?}");
    assert!(hostile.acked >= 1 && hostile.delivered >= 1, "{hostile:?}");
    // dave's version 2 room: both uploads stored (GroupInfoStored) and both fetches answered
    // (one GroupInfo item each), the v2 envelope acknowledged, the verifier replaced.
    let group = tally(&fs::read(dir.join("group-info"))?);
    assert_eq!((group.group_info, group.acked, group.errors), (4, 1, 0), "{group:?}");
    Ok(())
}

#[test]
fn group_content_kind_corpus() -> TestResult {
    replay("group_content_kind")
}

#[test]
fn group_info_open_corpus() -> TestResult {
    replay("group_info_open")
}

#[test]
fn group_process_corpus() -> TestResult {
    replay("group_process")
}

#[test]
fn history_share_decode_corpus() -> TestResult {
    replay("history_share_decode")
}

/// The group_process seeds show a message, merge a commit, refuse and skip entries.
#[test]
fn group_process_seeds_reach_every_outcome() -> TestResult {
    use chatroom_fuzz_checks::group_process::{tally, Tally};
    let dir = fuzz_dir().join("seeds/group_process");
    let t = |name: &str| -> Result<Tally, Box<dyn Error>> { Ok(tally(&fs::read(dir.join(name))?)) };
    // Bob's message, bob's update wins epoch 1, carol's entry and the wrong password's come late.
    assert_eq!(t("each-known-message")?, Tally { shown: 1, merged: 1, skipped: 2, ..Tally::default() });
    assert_eq!(t("entry-wins-then-stale")?, Tally { merged: 1, skipped: 2, ..Tally::default() });
    // Every lie is refused and spoils nothing: the genuine message and commit still go through.
    assert_eq!(t("lying-envelopes")?, Tally { shown: 1, merged: 1, refused: 5, ..Tally::default() });
    Ok(())
}
