//! Readings of a server process from `/proc/PID`: CPU time and resident memory.

use std::fs;

/// Linux reports `utime` and `stime` in `/proc/PID/stat` in units of `USER_HZ`, which is 100
/// on every architecture Linux supports today (the kernel ABI fixes it for user space).
const USER_HZ: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// User plus system CPU time, in seconds.
    pub cpu_secs: f64,
    /// Resident set size now, in KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size, in KiB (`VmHWM`).
    pub peak_rss_kib: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub fn sample(pid: u32) -> Result<Sample, String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}; is process {pid} running?"))?;
    // The command name (field 2) is in parentheses and may contain spaces: fields after it
    // start after the last ')'.
    let after =
        stat.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| format!("/proc/{pid}/stat has no ')'"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15 (1-based).
    let tick = |i: usize| -> Result<f64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| t as f64 / USER_HZ)
            .ok_or_else(|| format!("/proc/{pid}/stat: field {} is not a number", i + 3))
    };
    let cpu_secs = tick(11)? + tick(12)?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(Sample { cpu_secs, rss_kib: kib("VmRSS:"), peak_rss_kib: kib("VmHWM:") })
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
    fn missing_process_is_an_error_that_names_it() {
        let e = sample(u32::MAX).unwrap_err();
        assert!(e.contains("is process"), "{e}");
    }
}
