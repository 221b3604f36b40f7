//! CPU time and peak memory of a process, read from `/proc`: what a request
//! or an event costs the process that serves it, measured from outside so
//! the load generator's own CPU is not counted.

use std::time::Duration;

/// A process's CPU time (user + system, all threads) at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTime(pub Duration);

impl CpuTime {
    /// `pid`'s CPU time so far (`/proc/<pid>/stat`, utime + stime).
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path)
            .map_err(|error| anyhow::anyhow!("cannot read {path}: {error}"))?;
        let ticks = cpu_ticks(&stat).ok_or_else(|| anyhow::anyhow!("{path}: unexpected format"))?;
        Ok(Self(Duration::from_secs_f64(
            ticks as f64 / clock_ticks_per_second() as f64,
        )))
    }

    /// The CPU spent between `self` and a later sample, per operation, in
    /// microseconds (`None` when nothing was done).
    pub fn micros_per_op(self, later: CpuTime, operations: u64) -> Option<f64> {
        (operations > 0)
            .then(|| later.0.saturating_sub(self.0).as_secs_f64() * 1e6 / operations as f64)
    }
}

/// utime + stime, in clock ticks, from the text of `/proc/<pid>/stat`.
/// The command name (field 2) is in parentheses and may itself hold spaces
/// or parentheses, so fields are counted from the last `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, utime field 14, stime field 15.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `pid`'s peak resident set size in bytes (`VmHWM` of `/proc/<pid>/status`).
pub fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|error| anyhow::anyhow!("cannot read {path}: {error}"))?;
    vm_hwm_bytes(&status).ok_or_else(|| anyhow::anyhow!("{path} has no VmHWM line"))
}

/// The `VmHWM:  1234 kB` line of `/proc/<pid>/status`, in bytes.
pub fn vm_hwm_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let kilobytes: u64 = parts.next()?.parse().ok()?;
    (parts.next()? == "kB").then_some(kilobytes * 1024)
}

/// The kernel's clock ticks per second for `/proc` times (`getconf
/// CLK_TCK`; 100 on every Linux this runs on when getconf is missing).
fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|ticks| *ticks > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_even_with_a_strange_name() {
        let stat = "4242 (idv (x) ingest) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    1500 250 0 0 20 0 6 0 100 1000 200";
        assert_eq!(cpu_ticks(stat), Some(1750));
        assert_eq!(cpu_ticks("4242 (short) S 1"), None);
    }

    #[test]
    fn the_peak_resident_set_is_read_in_bytes() {
        let status =
            "Name:\tidv-ingest\nVmPeak:\t  300000 kB\nVmHWM:\t   21504 kB\nVmRSS:\t 20000 kB\n";
        assert_eq!(vm_hwm_bytes(status), Some(21504 * 1024));
        assert_eq!(vm_hwm_bytes("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time_and_a_peak() {
        let pid = std::process::id();
        let before = CpuTime::of(pid).unwrap();
        // Burn a little CPU so that the later sample cannot be earlier.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = CpuTime::of(pid).unwrap();
        assert!(after.0 >= before.0);
        assert!(peak_rss_bytes(pid).unwrap() > 1024 * 1024);
        assert_eq!(
            CpuTime(Duration::from_millis(10))
                .micros_per_op(CpuTime(Duration::from_millis(30)), 1000),
            Some(20.0)
        );
        assert_eq!(before.micros_per_op(after, 0), None);
    }
}
