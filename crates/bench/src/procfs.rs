//! Readings of a server process: CPU time (its CPU-time clock, or `/proc/PID/stat`) and
//! resident memory (`/proc/PID/status`).

use std::fs;

use crate::error::BenchError;

/// Linux reports `utime` and `stime` in `/proc/PID/stat` in units of `USER_HZ`, which is 100
/// on every architecture Linux supports today (the kernel ABI fixes it for user space).
const USER_HZ: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// User plus system CPU time of all its threads, in seconds.
    pub cpu_secs: f64,
    /// Whether `cpu_secs` came from the process's CPU-time clock (nanoseconds) rather than
    /// `/proc/PID/stat` (10 ms ticks).
    pub cpu_precise: bool,
    /// Resident set size now, in KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size, in KiB (`VmHWM`).
    pub peak_rss_kib: u64,
}

/// The process's CPU time in seconds from its CPU-time clock (`clock_getcpuclockid`): user
/// plus system time of every thread, including threads that have exited, with nanosecond
/// resolution. `None` where the kernel refuses (another user's process without privileges).
fn cpu_clock_secs(pid: u32) -> Option<f64> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).ok()?);
    let clock = nix::time::clock_getcpuclockid(pid).ok()?;
    let now = nix::time::clock_gettime(clock).ok()?;
    Some(now.tv_sec() as f64 + now.tv_nsec() as f64 / 1e9)
}

/// Reads the process's CPU time and `/proc/PID/status`; CPU time comes from `/proc/PID/stat`
/// where the CPU-time clock is not available.
pub fn sample(pid: u32) -> Result<Sample, BenchError> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(BenchError::io(format!("cannot read /proc/{pid}/stat (is process {pid} running?)")))?;
    // The command name (field 2) is in parentheses and may contain spaces: fields after it
    // start after the last ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| BenchError::Server(format!("/proc/{pid}/stat has no ')'")))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15 (1-based).
    let tick =
        |i: usize| -> Result<f64, BenchError> {
            fields.get(i).and_then(|f| f.parse::<u64>().ok()).map(|t| t as f64 / USER_HZ).ok_or_else(|| {
                BenchError::Server(format!("/proc/{pid}/stat: field {} is not a number", i + 3))
            })
        };
    let ticks = tick(11)? + tick(12)?;
    let (cpu_secs, cpu_precise) = match cpu_clock_secs(pid) {
        Some(secs) => (secs, true),
        None => (ticks, false),
    };
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(BenchError::io(format!("cannot read /proc/{pid}/status")))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(Sample { cpu_secs, cpu_precise, rss_kib: kib("VmRSS:"), peak_rss_kib: kib("VmHWM:") })
}

/// The sum of [`sample`] over `pids` (CPU time, resident and peak memory); precise only when
/// every reading is. `None` when `pids` is empty or any process cannot be read.
pub fn sample_all(pids: &[u32]) -> Option<Sample> {
    let mut total = Sample { cpu_precise: true, ..Sample::default() };
    for &pid in pids {
        let s = sample(pid).ok()?;
        total.cpu_secs += s.cpu_secs;
        total.cpu_precise &= s.cpu_precise;
        total.rss_kib += s.rss_kib;
        total.peak_rss_kib += s.peak_rss_kib;
    }
    (!pids.is_empty()).then_some(total)
}

/// Resets the peak resident set size (`VmHWM`) to the current one, so that a peak measured
/// afterwards belongs to one workload. Needs permission to write `/proc/PID/clear_refs`
/// (the process's owner or root); returns whether it worked.
pub fn reset_peak(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
        assert!(s.peak_rss_kib >= s.rss_kib);
        assert!(s.cpu_secs >= 0.0);
    }

    #[test]
    fn cpu_time_resolves_far_below_a_tick() {
        // Spin until the reading moves: a tick-based reading moves by 10 ms at once, the
        // CPU-time clock by about the work done between two readings (this process's other
        // test threads included, still far below a tick).
        let first = sample(std::process::id()).unwrap();
        assert!(first.cpu_precise, "the CPU-time clock of our own process is readable");
        let mut moved = None;
        for _ in 0..100_000 {
            let spin = std::time::Instant::now();
            while spin.elapsed() < std::time::Duration::from_micros(50) {
                std::hint::spin_loop();
            }
            let before = sample(std::process::id()).unwrap();
            let after = sample(std::process::id()).unwrap();
            if after.cpu_secs > before.cpu_secs {
                moved = Some(after.cpu_secs - before.cpu_secs);
                break;
            }
        }
        let moved = moved.expect("CPU time never moved");
        assert!(moved < 0.005, "two back-to-back readings differ by {moved} s");
    }

    #[test]
    fn several_processes_are_summed() {
        let me = std::process::id();
        let one = sample(me).unwrap();
        let two = sample_all(&[me, me]).unwrap();
        assert!(two.rss_kib > one.rss_kib, "counted twice: {one:?} {two:?}");
        assert!(two.cpu_secs >= 2.0 * one.cpu_secs, "{one:?} {two:?}");
        assert_eq!(sample_all(&[]), None);
        assert_eq!(sample_all(&[me, u32::MAX]), None, "one unreadable process spoils the sum");
    }

    #[test]
    fn missing_process_is_an_error_that_names_it() {
        let e = sample(u32::MAX).unwrap_err();
        assert!(matches!(&e, BenchError::Io { what, .. } if what.contains("is process")), "{e}");
    }
}
