//! Throughput and latency of one benchmark phase.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// What one load task counted.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
    /// Latencies of the successes, in microseconds.
    pub latencies_us: Vec<u32>,
}

impl Tally {
    pub fn success(&mut self, latency: Duration) {
        self.ok += 1;
        self.latencies_us.push(micros(latency));
    }

    pub fn failure(&mut self) {
        self.failed += 1;
    }
}

/// Lets `tasks` run until `duration` after `started`, raises `stop`, and adds
/// up what they counted.
pub async fn run_phase(
    name: &str,
    started: Instant,
    duration: Duration,
    stop: &AtomicBool,
    tasks: Vec<JoinHandle<Tally>>,
) -> anyhow::Result<PhaseResult> {
    tokio::time::sleep_until((started + duration).into()).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await?;
        total.ok += tally.ok;
        total.failed += tally.failed;
        total.latencies_us.extend(tally.latencies_us);
    }
    Ok(PhaseResult::new(
        name,
        total.ok,
        total.failed,
        started.elapsed(),
        total.latencies_us,
    ))
}

/// What one phase measured.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub name: String,
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed (non-200, nack, error).
    pub failed: u64,
    pub elapsed: Duration,
    /// Sorted latencies of the successful operations, in microseconds.
    latencies_us: Vec<u32>,
}

impl PhaseResult {
    pub fn new(
        name: &str,
        ok: u64,
        failed: u64,
        elapsed: Duration,
        mut latencies_us: Vec<u32>,
    ) -> Self {
        latencies_us.sort_unstable();
        Self {
            name: name.to_owned(),
            ok,
            failed,
            elapsed,
            latencies_us,
        }
    }

    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// The latency at quantile `q` (0.0–1.0).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies_us.is_empty() {
            return Duration::ZERO;
        }
        let last = self.latencies_us.len() - 1;
        let at = ((last as f64) * q).round() as usize;
        Duration::from_micros(u64::from(self.latencies_us[at.min(last)]))
    }
}

impl fmt::Display for PhaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<34} {:>9.0}/s  ok {:>7}  failed {:>4}  p50 {:>7.2} ms  p99 {:>7.2} ms",
            self.name,
            self.rate(),
            self.ok,
            self.failed,
            self.quantile(0.50).as_secs_f64() * 1e3,
            self.quantile(0.99).as_secs_f64() * 1e3,
        )
    }
}

/// Microseconds, saturating, for compact latency samples.
pub fn micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_rate() {
        let result = PhaseResult::new(
            "x",
            100,
            0,
            Duration::from_secs(2),
            (1..=100).rev().collect(),
        );
        assert_eq!(result.rate(), 50.0);
        assert_eq!(result.quantile(0.0), Duration::from_micros(1));
        assert_eq!(result.quantile(0.99), Duration::from_micros(99));
        assert_eq!(result.quantile(1.0), Duration::from_micros(100));
    }
}
