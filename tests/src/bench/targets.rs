//! The speed targets of issue 10, each a bound on a figure measured in the
//! same run (mostly a ratio to a ceiling that run measured), and whether
//! the run met it.

use super::results::{IngestResults, WorkerResults};
use super::sweep;

/// How a measured figure must compare with its limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    AtLeast(f64),
    AtMost(f64),
    Below(f64),
}

impl Bound {
    pub fn holds_for(self, measured: f64) -> bool {
        match self {
            Self::AtLeast(limit) => measured >= limit,
            Self::AtMost(limit) => measured <= limit,
            Self::Below(limit) => measured < limit,
        }
    }

    /// `≥ 0.7`, `≤ 2`, `< 50`.
    pub fn symbol_and_limit(self) -> (&'static str, f64) {
        match self {
            Self::AtLeast(limit) => ("≥", limit),
            Self::AtMost(limit) => ("≤", limit),
            Self::Below(limit) => ("<", limit),
        }
    }
}

/// One target: what, its bound, and the figure this run measured (`None`
/// when the run did not measure it, e.g. no 128-connection phase).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub what: &'static str,
    pub bound: Bound,
    /// Unit of the figure and the limit: `""` for a ratio, `" ms"`, `" MB"`.
    pub unit: &'static str,
    pub measured: Option<f64>,
}

impl Target {
    pub fn met(&self) -> Option<bool> {
        self.measured.map(|value| self.bound.holds_for(value))
    }
}

/// The targets issue 10 sets, evaluated on one run's results.
pub fn evaluate(ingest: &IngestResults, worker: &WorkerResults) -> Vec<Target> {
    let first = ingest.ingest.first();
    let wide = ingest.ingest.iter().find(|max| max.connections >= 128);
    let run = |workers: usize| worker.runs.iter().find(|run| run.workers == workers);
    let half_p99 = |workers: usize| {
        if workers == 1 {
            // The 1-worker sweep's half point is the same measurement.
            sweep::at_half(&worker.sweep)
                .map(|point| point.phase.p99_ms)
                .or_else(|| run(1).map(|run| run.half.p99_ms))
        } else {
            run(workers).map(|run| run.half.p99_ms)
        }
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    vec![
        Target {
            what: "idv-ingest at 128+ connections / broker pipelined ceiling",
            bound: Bound::AtLeast(0.7),
            unit: "",
            measured: ratio(
                wide.map(|max| max.phase.rate),
                Some(ingest.broker_ceiling.rate),
            ),
        },
        Target {
            what: "idv-ingest at the first connection count / broker at as many confirms in flight",
            bound: Bound::AtLeast(0.8),
            unit: "",
            measured: ratio(
                first.map(|max| max.phase.rate),
                Some(ingest.broker_same_in_flight.rate),
            ),
        },
        Target {
            what: "idv-ingest CPU per accepted request / actix handler's (verify + 200)",
            bound: Bound::AtMost(2.0),
            unit: "",
            measured: ratio(
                first.and_then(|max| max.cost.cpu_us_per_op),
                ingest.handler.cost.cpu_us_per_op,
            ),
        },
        Target {
            what: "end-to-end p99 at half the maximum rate, 1 worker",
            bound: Bound::Below(50.0),
            unit: " ms",
            measured: half_p99(1),
        },
        Target {
            what: "end-to-end p99 at half the maximum rate, 2 workers",
            bound: Bound::Below(50.0),
            unit: " ms",
            measured: half_p99(2),
        },
        Target {
            what: "2-worker burst rate / 1-worker burst rate",
            bound: Bound::AtLeast(1.0),
            unit: "",
            measured: ratio(run(2).map(|r| r.burst.rate), run(1).map(|r| r.burst.rate)),
        },
        Target {
            what: "idv-ingest peak RSS at full load",
            bound: Bound::Below(50.0),
            unit: " MB",
            measured: max_of(ingest.ingest.iter().map(|max| max.cost.peak_rss_mb)),
        },
        Target {
            what: "idv-worker peak RSS after a burst (largest worker)",
            bound: Bound::Below(100.0),
            unit: " MB",
            measured: max_of(
                worker
                    .runs
                    .iter()
                    .flat_map(|run| run.costs.iter().map(|cost| cost.peak_rss_mb)),
            ),
        },
    ]
}

fn max_of(values: impl Iterator<Item = f64>) -> Option<f64> {
    values.fold(None, |max, value| {
        Some(max.map_or(value, |m: f64| m.max(value)))
    })
}
