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

#[test]
fn every_target_has_a_replay_test() {
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["frame_decode", "message_decode", "envelope_open", "handshake_responder", "handshake_initiator"]
    );
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
