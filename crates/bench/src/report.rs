//! The result of one workload against one target, and the table and JSON built from them.

use crate::procfs::{self, Sample};
use crate::workload::{Tally, Workload};

/// The result of one workload against one target.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcome {
    /// `chatroom`, `ngircd`, `ncat`.
    pub target: String,
    /// Workload name.
    pub workload: String,
    /// Members connected and joined.
    pub joined: usize,
    /// Seconds from the first connect until every member had joined.
    pub join_secs: f64,
    /// Deliveries expected if nothing is lost.
    pub expected: u64,
    /// Intact deliveries.
    pub delivered: u64,
    /// Expected but not delivered intact.
    pub lost: u64,
    /// Intact deliveries of a message the receiver already had.
    pub duplicated: u64,
    /// Damaged messages.
    pub corrupted: u64,
    /// Messages written by the senders.
    pub sent: u64,
    /// Messages the server acknowledged (chatroom only).
    pub acked: u64,
    /// Seconds from the start of sending until the last sender finished writing.
    pub send_secs: f64,
    /// `sent / send_secs`.
    pub sent_per_sec: f64,
    /// Seconds from the start of sending until the last intact delivery.
    pub deliver_secs: f64,
    /// `delivered / deliver_secs`.
    pub deliveries_per_sec: f64,
    /// End-to-end latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Server CPU seconds spent during the measured phase (needs its pid).
    pub server_cpu_secs: Option<f64>,
    /// Server CPU microseconds per intact delivery (deliver mode) or per join (connect mode).
    pub cpu_us_per_unit: Option<f64>,
    /// CPU seconds of the processes the server relies on (e.g. the nats-server nodes behind
    /// relay nodes), over the same phase, when their pids were given.
    pub backend_cpu_secs: Option<f64>,
    /// `backend_cpu_secs` per unit, in microseconds.
    pub backend_cpu_us_per_unit: Option<f64>,
    /// Server peak resident memory during the run, KiB.
    pub peak_rss_kib: Option<u64>,
    /// Server resident memory growth per joined member, KiB (idle mode).
    pub kib_per_member: Option<f64>,
    /// Connect mode: completed handshake-and-join cycles per second.
    pub joins_per_sec: Option<f64>,
    /// Connect mode: X25519 operations per second measured in this process on one core.
    pub x25519_per_sec: Option<f64>,
    /// Error messages seen (first few).
    pub errors: Vec<String>,
}

/// All outcomes of one invocation.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// One per target, in the order run.
    pub outcomes: Vec<Outcome>,
}

/// Readings of a server's processes around the measured phase: one process, or several whose
/// CPU time and memory are summed (the nodes of a relay cluster).
#[derive(Debug, Clone)]
pub struct ServerWatch {
    pids: Vec<u32>,
    before: Option<Sample>,
}

impl ServerWatch {
    /// Starts watching `pids` (if any): resets their peak memory and reads their CPU time.
    pub fn start(pids: &[u32]) -> Self {
        for &p in pids {
            procfs::reset_peak(p);
        }
        Self { pids: pids.to_vec(), before: procfs::sample_all(pids) }
    }

    /// Re-reads the starting point (e.g. after the join phase, to measure only sending).
    pub fn restart(&mut self) {
        self.before = procfs::sample_all(&self.pids);
    }

    /// The starting reading.
    pub fn before(&self) -> Option<Sample> {
        self.before
    }

    /// Reads the processes now.
    pub fn now(&self) -> Option<Sample> {
        procfs::sample_all(&self.pids)
    }

    /// CPU seconds since the start; `None` without a reading or when the two readings come
    /// from different sources (clock and ticks do not subtract).
    fn cpu_since(&self, after: Option<Sample>) -> Option<f64> {
        let (before, after) = (self.before?, after?);
        (before.cpu_precise == after.cpu_precise).then(|| (after.cpu_secs - before.cpu_secs).max(0.0))
    }

    /// CPU seconds since the start, and the peak RSS.
    pub fn finish(&self, outcome: &mut Outcome, units: u64) {
        let after = self.now();
        if let Some(cpu) = self.cpu_since(after) {
            outcome.server_cpu_secs = Some(cpu);
            outcome.cpu_us_per_unit = per_unit(cpu, units);
        }
        if self.before.is_some() {
            outcome.peak_rss_kib = after.map(|a| a.peak_rss_kib);
        }
    }

    /// CPU seconds since the start, as the backend's share of the outcome.
    pub fn finish_backend(&self, outcome: &mut Outcome, units: u64) {
        if let Some(cpu) = self.cpu_since(self.now()) {
            outcome.backend_cpu_secs = Some(cpu);
            outcome.backend_cpu_us_per_unit = per_unit(cpu, units);
        }
    }
}

fn per_unit(cpu_secs: f64, units: u64) -> Option<f64> {
    (units > 0).then(|| cpu_secs * 1e6 / units as f64)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    sorted.get(i).map_or(0.0, |&ns| ns as f64 / 1e6)
}

impl Outcome {
    /// Fills the delivery figures from the merged tally.
    pub fn from_tally(target: &str, w: &Workload, mut tally: Tally, sent: u64, send_secs: f64) -> Self {
        tally.latencies_ns.sort_unstable();
        let expected = w.expected_deliveries();
        let deliver_secs = tally.last_ns as f64 / 1e9;
        Self {
            target: target.into(),
            workload: w.name.clone(),
            expected,
            delivered: tally.delivered,
            lost: expected.saturating_sub(tally.delivered),
            duplicated: tally.duplicated,
            corrupted: tally.corrupted,
            sent,
            acked: tally.acked,
            send_secs,
            sent_per_sec: if send_secs > 0.0 { sent as f64 / send_secs } else { 0.0 },
            deliver_secs,
            deliveries_per_sec: if deliver_secs > 0.0 { tally.delivered as f64 / deliver_secs } else { 0.0 },
            p50_ms: percentile(&tally.latencies_ns, 50.0),
            p99_ms: percentile(&tally.latencies_ns, 99.0),
            max_ms: tally.latencies_ns.last().map_or(0.0, |&ns| ns as f64 / 1e6),
            errors: tally.errors,
            ..Self::default()
        }
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

fn count(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

impl Report {
    /// A Markdown table of every outcome, then ratios of chatroom to each baseline.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str("| workload | server | joined | deliveries/s | sent/s | p50 ms | p99 ms | max ms | lost | dup | corrupt | server CPU µs/unit | peak RSS MiB | KiB/member | joins/s |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for o in &self.outcomes {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.1} | {} | {} | {} | {} | {} | {} | {} |\n",
                o.workload,
                o.target,
                o.joined,
                count(o.deliveries_per_sec),
                count(o.sent_per_sec),
                o.p50_ms,
                o.p99_ms,
                o.max_ms,
                o.lost,
                o.duplicated,
                o.corrupted,
                opt(o.cpu_us_per_unit, 3),
                o.peak_rss_kib.map_or_else(|| "-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
                opt(o.kib_per_member, 1),
                o.joins_per_sec.map_or_else(|| "-".into(), count),
            ));
        }
        if let Some(chat) = self.outcomes.iter().find(|o| o.target == "chatroom") {
            for base in self.outcomes.iter().filter(|o| o.target != "chatroom" && o.joined > 0) {
                let parts = ratios(chat, base);
                if !parts.is_empty() {
                    out.push_str(&format!(
                        "\n{} chatroom / {}: {}",
                        chat.workload,
                        base.target,
                        parts.join(", ")
                    ));
                }
            }
            out.push('\n');
            x25519_line(chat, &mut out);
        }
        for o in &self.outcomes {
            if let Some(us) = o.backend_cpu_us_per_unit {
                out.push_str(&format!(
                    "{} {}: backend processes' CPU µs/unit {us:.3}\n",
                    o.workload, o.target
                ));
            }
        }
        for o in &self.outcomes {
            for e in o.errors.iter().take(3) {
                out.push_str(&format!("{} {}: {e}\n", o.workload, o.target));
            }
        }
        out
    }
}

/// Chatroom's figures over one baseline's, where both measured them.
fn ratios(chat: &Outcome, base: &Outcome) -> Vec<String> {
    let mut parts = Vec::new();
    if chat.deliveries_per_sec > 0.0 && base.deliveries_per_sec > 0.0 {
        parts.push(format!("deliveries/s x{:.2}", chat.deliveries_per_sec / base.deliveries_per_sec));
    }
    if let (Some(c), Some(b)) = (chat.cpu_us_per_unit, base.cpu_us_per_unit) {
        if b > 0.0 {
            parts.push(format!("server CPU per unit x{:.2}", c / b));
        }
    }
    if let (Some(c), Some(b)) = (chat.kib_per_member, base.kib_per_member) {
        if b > 0.0 {
            parts.push(format!("memory per member x{:.2}", c / b));
        }
    }
    if let (Some(c), Some(b)) = (chat.joins_per_sec, base.joins_per_sec) {
        if b > 0.0 {
            parts.push(format!("joins/s x{:.2}", c / b));
        }
    }
    if chat.p99_ms > 0.0 && base.p99_ms > 0.0 {
        parts.push(format!("p99 {:.3} ms vs {:.3} ms", chat.p99_ms, base.p99_ms));
    }
    parts
}

/// The handshake limit X25519 sets on this machine, next to the joins measured.
fn x25519_line(chat: &Outcome, out: &mut String) {
    if let (Some(x), Some(j)) = (chat.x25519_per_sec, chat.joins_per_sec) {
        let limit = x / 4.0;
        out.push_str(&format!(
            "X25519: {} operations/s on one core; a relay handshake needs 4 (ephemeral key and 3 DH), so the limit is {} handshakes/s per core; measured {} joins/s ({:.0}% of one core's limit)",
            count(x),
            count(limit),
            count(j),
            100.0 * j / limit
        ));
        // The generator does the client half of every handshake on the same cores, so
        // the relay's own CPU per join is the per-core figure to compare.
        if let Some(us) = chat.cpu_us_per_unit.filter(|&us| us > 0.0) {
            let per_core = 1e6 / us;
            out.push_str(&format!(
                "; relay CPU {us:.0} us per join = {} joins per relay core-second ({:.0}% of the limit)",
                count(per_core),
                100.0 * per_core / limit
            ));
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1_000_000).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }

    #[test]
    fn counts_are_grouped() {
        assert_eq!(count(1234567.0), "1 234 567");
        assert_eq!(count(12.0), "12");
    }
}
