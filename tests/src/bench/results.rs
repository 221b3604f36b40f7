//! What the bench binaries measured, as the JSON they write with `--json`
//! and `bench_report` reads back: the one contract between them.

use serde::{Deserialize, Serialize};

use super::cpu_split::CpuSplit;
use super::stats::PhaseResult;

/// One measured phase: throughput and latency percentiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    /// Operations that succeeded, per second.
    pub rate: f64,
    pub ok: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Where the machine's CPU went during the phase, where measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuSplit>,
}

impl From<&PhaseResult> for Phase {
    fn from(result: &PhaseResult) -> Self {
        let ms = |q: f64| result.quantile(q).as_secs_f64() * 1e3;
        Self {
            name: result.name.clone(),
            rate: result.rate(),
            ok: result.ok,
            failed: result.failed,
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            max_ms: ms(1.0),
            cpu: None,
        }
    }
}

/// One open-loop point of a sweep: a rate offered, what it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The offered rate as a fraction of the measured maximum.
    pub fraction: f64,
    /// Offered operations per second.
    pub offered: f64,
    pub phase: Phase,
}

/// What one process cost over a phase at full load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessCost {
    pub process: String,
    /// CPU time (user + system) per operation answered, in microseconds.
    pub cpu_us_per_op: Option<f64>,
    /// Peak resident set (`VmHWM`) after the phase, in MB (10^6 bytes).
    pub peak_rss_mb: f64,
}

/// One closed-loop maximum of ingest at a number of connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestMax {
    pub connections: usize,
    pub phase: Phase,
    pub cost: ProcessCost,
}

/// Everything `bench_ingest` measured in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestResults {
    pub seconds: u64,
    pub body_bytes: usize,
    /// The broker's pipelined ceiling (`broker_in_flight` confirms in flight).
    pub broker_in_flight: usize,
    pub broker_ceiling: Phase,
    /// The broker with as many confirms in flight as the first connection
    /// count (ingest has one per connection at most).
    pub broker_same_in_flight: Phase,
    /// The in-process actix handler that only verifies and answers 200, at
    /// the first connection count.
    pub handler: IngestMax,
    /// `idv-ingest` at each connection count, the first one first.
    pub ingest: Vec<IngestMax>,
    /// `idv-ingest` open loop at fractions of its maximum (first count).
    pub sweep: Vec<SweepPoint>,
}

/// One worker count's end-to-end results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRun {
    pub workers: usize,
    pub burst: Phase,
    /// Events per transaction that applied events during the burst (the
    /// rows one transaction inserted share its `xmin`): the batch size.
    pub burst_events_per_batch: f64,
    /// Each worker process after the burst.
    pub costs: Vec<ProcessCost>,
    /// Paced at half the burst rate.
    pub half: Phase,
}

/// Everything `bench_worker` measured in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerResults {
    pub burst_events: usize,
    pub paced_seconds: u64,
    /// PostgreSQL: one event per transaction, transactions/s.
    pub ceiling_tx_per_s: f64,
    pub ceiling_connections: usize,
    pub runs: Vec<WorkerRun>,
    /// 1 worker, open loop at fractions of its burst rate.
    pub sweep: Vec<SweepPoint>,
}

/// Writes `value` as pretty JSON to `path`, creating its directory.
pub fn write_json<T: Serialize>(path: &std::path::Path, value: &T) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text)
        .map_err(|error| anyhow::anyhow!("cannot write {}: {error}", path.display()))
}

/// Reads what [`write_json`] wrote.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &std::path::Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|error| anyhow::anyhow!("{} is not a bench result: {error}", path.display()))
}
