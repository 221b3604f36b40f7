//! The good stream: distinct, correctly signed events at a steady rate
//! (open loop: each request has its scheduled time, and its latency is
//! measured from it, so a stall shows however long it lasts), over
//! keep-alive connections. It remembers which events were answered 200.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shared::{WebhookSecret, sign_test_header};
use tokio_util::sync::CancellationToken;

use crate::bench::http_load::event_body;
use crate::bench::http1;
use crate::bench::stats::{PhaseResult, micros};
use crate::fixtures::now_unix;

/// How the good stream is sent.
#[derive(Debug, Clone)]
pub struct GoodLoad {
    pub url: String,
    pub secret: WebhookSecret,
    /// Requests per second in total.
    pub rate: f64,
    /// Keep-alive connections sharing the rate.
    pub connections: usize,
    /// Approximate body size.
    pub body_bytes: usize,
    /// How long one request may take before it counts as failed.
    pub timeout: Duration,
}

/// What one run of the stream saw.
#[derive(Debug)]
pub struct GoodResult {
    pub phase: PhaseResult,
    /// The event ids answered 200.
    pub accepted: Vec<String>,
    /// The requests not answered 200: (event id, status or error).
    pub refused: Vec<(String, String)>,
}

/// Event ids are `evt_bench{16 digits}` numbered from a base shared by
/// every phase of a run, so that no two requests carry the same id.
#[derive(Debug, Clone)]
pub struct Numbering(Arc<AtomicU64>);

impl Default for Numbering {
    fn default() -> Self {
        Self(Arc::new(AtomicU64::new(
            u64::from(rand::random::<u32>()) << 16,
        )))
    }
}

/// [`run`] on a thread and runtime of its own: the load generator's other
/// tasks (building a mebibyte of attack, say) cannot then delay a good
/// request's sending, which would count against ingest's latency.
pub async fn run_apart(
    name: &str,
    load: &GoodLoad,
    numbering: &Numbering,
    duration: Option<Duration>,
    stop: CancellationToken,
) -> anyhow::Result<GoodResult> {
    let (name, load, numbering) = (name.to_owned(), load.clone(), numbering.clone());
    let thread = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(run(&name, &load, &numbering, duration, stop))
    });
    tokio::task::spawn_blocking(move || thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the good stream's thread panicked"))?
}

/// Sends the stream until `stop` (or, with none, for `duration`).
pub async fn run(
    name: &str,
    load: &GoodLoad,
    numbering: &Numbering,
    duration: Option<Duration>,
    stop: CancellationToken,
) -> anyhow::Result<GoodResult> {
    let target = http1::Target::parse(&load.url)?;
    let started = Instant::now();
    let period = Duration::from_secs_f64(load.connections as f64 / load.rate);
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(load.connections);
    for n in 0..load.connections {
        let (load, numbering, done, target) = (
            load.clone(),
            numbering.clone(),
            Arc::clone(&done),
            target.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut connection = http1::Connection::new(target.clone());
            let mut seen = Seen::default();
            let mut next = started + period.mul_f64(n as f64 / load.connections as f64);
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep_until(next.into()).await;
                let sequence = numbering.0.fetch_add(1, Ordering::Relaxed);
                let body = event_body(sequence, load.body_bytes);
                let id = format!("evt_bench{sequence:016}");
                let signature = sign_test_header(&load.secret, &body, now_unix());
                let answer =
                    tokio::time::timeout(load.timeout, connection.post(&signature, &body)).await;
                match answer {
                    Ok(Ok(200)) => {
                        seen.latencies_us.push(micros(next.elapsed()));
                        seen.accepted.push(id);
                    }
                    Ok(Ok(status)) => seen.refused.push((id, format!("status {status}"))),
                    Ok(Err(error)) => seen.refused.push((id, error.to_string())),
                    Err(_) => {
                        seen.refused
                            .push((id, format!("no answer in {:?}", load.timeout)));
                        connection = http1::Connection::new(target.clone());
                    }
                }
                next += period;
            }
            seen
        }));
    }
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => stop.cancelled().await,
    }
    done.store(true, Ordering::Relaxed);
    let mut all = Seen::default();
    for task in tasks {
        let seen = task.await?;
        all.accepted.extend(seen.accepted);
        all.refused.extend(seen.refused);
        all.latencies_us.extend(seen.latencies_us);
    }
    Ok(GoodResult {
        phase: PhaseResult::new(
            name,
            all.accepted.len() as u64,
            all.refused.len() as u64,
            started.elapsed(),
            all.latencies_us,
        ),
        accepted: all.accepted,
        refused: all.refused,
    })
}

#[derive(Debug, Default)]
struct Seen {
    accepted: Vec<String>,
    refused: Vec<(String, String)>,
    latencies_us: Vec<u32>,
}
