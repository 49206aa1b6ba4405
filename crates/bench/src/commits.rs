//! The floor of a durable commit on this disk: what one commit like the relay's costs with
//! nothing of the relay around it. SQLite (the relay's bundled build) in WAL mode with
//! `synchronous = FULL`, one history row the size of a stored 100-byte message per
//! transaction, paced like the ticks of the paced workload P, the log checkpointed between
//! commits about once a second as the relay's checkpoint thread does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};

use crate::error::BenchError;

/// Bytes of the envelope column: what the relay stores for a 100-byte message.
pub const ENVELOPE_BYTES: usize = 273;
/// The probe's database file, created in the directory given and removed at the end.
const FILE: &str = "chatroom-bench-commits.sqlite3";

/// The relay's history table (crates/relay/src/store.rs, schema version 4).
const SCHEMA: &str = "
CREATE TABLE history (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sender BLOB NOT NULL,
    counter INTEGER NOT NULL,
    envelope BLOB NOT NULL,
    stored INTEGER NOT NULL,
    PRIMARY KEY (room, seq),
    UNIQUE (room, sender, counter)
) WITHOUT ROWID;
";

/// How many commits, how fast.
#[derive(Debug, Clone, Copy)]
pub struct CommitProbe {
    /// Transactions to time.
    pub commits: usize,
    /// Commits per second; `None`: back to back.
    pub rate: Option<f64>,
}

/// The latency of one transaction, `BEGIN IMMEDIATE` to the end of `COMMIT`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CommitLatency {
    /// Transactions timed.
    pub commits: usize,
    /// Commits per second asked for (0: back to back).
    pub rate: f64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl CommitLatency {
    /// A one-row Markdown table.
    pub fn table(&self) -> String {
        format!(
            "| commits | per second | p50 ms | p90 ms | p99 ms | max ms | mean ms |\n\
             |---|---|---|---|---|---|---|\n\
             | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            self.commits,
            if self.rate > 0.0 { format!("{}", self.rate) } else { "back to back".into() },
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms,
            self.mean_ms
        )
    }
}

fn sqlite(what: &str) -> impl FnOnce(rusqlite::Error) -> BenchError + '_ {
    move |e| BenchError::Io { what: format!("commit probe: {what}"), source: std::io::Error::other(e) }
}

/// Removes the probe's database and its log, whatever happened.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.0.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}

fn open(path: &Path) -> Result<Connection, BenchError> {
    let conn = Connection::open(path).map_err(sqlite("opening the database"))?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
        .map_err(sqlite("switching to WAL mode"))?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(sqlite("setting synchronous"))?;
    conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(sqlite("setting wal_autocheckpoint"))?;
    conn.execute_batch(SCHEMA).map_err(sqlite("creating the table"))?;
    Ok(conn)
}

/// Times `probe.commits` transactions in a new database in `dir`.
pub fn measure(dir: &Path, probe: CommitProbe) -> Result<CommitLatency, BenchError> {
    if probe.commits == 0 || probe.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(BenchError::Workload("the commit probe needs commits > 0 and a positive rate".into()));
    }
    let path = dir.join(FILE);
    if path.exists() {
        return Err(BenchError::Workload(format!(
            "{} exists (left by an interrupted probe?); remove it and rerun",
            path.display()
        )));
    }
    let _cleanup = Cleanup(path.clone());
    let mut conn = open(&path)?;
    let envelope = [0x5a_u8; ENVELOPE_BYTES];
    let every = probe.rate.map_or(probe.commits, |r| r.ceil() as usize).max(1);
    let mut latencies = Vec::with_capacity(probe.commits);
    let start = Instant::now();
    for n in 0..probe.commits {
        if let Some(rate) = probe.rate {
            let due = start + Duration::from_secs_f64(n as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let began = Instant::now();
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite("beginning"))?;
        tx.prepare_cached(
            "INSERT INTO history (room, seq, sender, counter, envelope, stored) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut s| s.execute(params!["bench-room", n as i64, [7u8; 32], n as i64, &envelope[..], n as i64]))
        .map_err(sqlite("inserting"))?;
        tx.commit().map_err(sqlite("committing"))?;
        latencies.push(began.elapsed());
        if (n + 1) % every == 0 {
            // Between ticks, as the relay's checkpoint thread does: the next commit restarts the log.
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .map_err(sqlite("checkpointing"))?;
        }
    }
    Ok(summarise(latencies, probe.rate))
}

fn summarise(mut latencies: Vec<Duration>, rate: Option<f64>) -> CommitLatency {
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |p: f64| {
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies.get(rank.clamp(1, latencies.len().max(1)) - 1).map_or(0.0, |&d| ms(d))
    };
    let total: Duration = latencies.iter().sum();
    CommitLatency {
        commits: latencies.len(),
        rate: rate.unwrap_or(0.0),
        p50_ms: at(50.0),
        p90_ms: at(90.0),
        p99_ms: at(99.0),
        max_ms: latencies.last().map_or(0.0, |&d| ms(d)),
        mean_ms: if latencies.is_empty() { 0.0 } else { ms(total) / latencies.len() as f64 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_commit_is_timed_and_the_database_is_removed() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let got = measure(dir.path(), CommitProbe { commits: 40, rate: None })?;
        assert_eq!(got.commits, 40);
        assert!(got.p50_ms > 0.0 && got.p50_ms <= got.p99_ms && got.p99_ms <= got.max_ms);
        assert!(std::fs::read_dir(dir.path())?.next().is_none(), "the probe left files behind");
        Ok(())
    }

    #[test]
    fn a_database_left_behind_is_not_overwritten() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join(FILE), b"not ours")?;
        let err = measure(dir.path(), CommitProbe { commits: 1, rate: None }).err().ok_or("no error")?;
        assert!(err.to_string().contains("exists"), "{err}");
        assert_eq!(std::fs::read(dir.path().join(FILE))?, b"not ours");
        Ok(())
    }
}
