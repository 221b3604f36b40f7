//! Benchmark of `idv-worker` against PostgreSQL's own ceiling, in one run:
//!
//! 1. ceiling: transactions/s of "dedupe insert + session upsert + outbox
//!    insert" (one event per transaction, the unbatched design) at 16
//!    connections, on the worker's schema;
//! 2. end to end with 1 worker, then 2: Identity events (processing, a
//!    failed submission, verified, per person) published to the events
//!    exchange as ingest publishes them, as fast as the broker confirms;
//!    events/s from the first publish to the last commit;
//! 3. open loop: with 1 worker at fractions of its burst rate (10 % … 100 %),
//!    with 2 at half theirs, for the latency each offered rate gets.
//!    Latency = `events.processed_at` − the time the event was scheduled
//!    to be published, which it carries (`x-received-at-ms`), so it covers
//!    a publisher falling behind, queueing, delivery, the transaction up to
//!    the event's insert (the commit follows within its batch).
//!
//! The workers are the release `idv-worker` binary, each its own process,
//! so that each one's CPU time and peak RSS (`/proc/<pid>`) are its own.
//!
//! `target/release/bench_worker [EVENTS] [--json PATH]` against 127.0.0.1
//! only; every database and queue it creates is removed at the end.
//! `WORKER_*` and `DATABASE_POOL_SIZE` in the environment reach the workers
//! (to compare settings); `BENCH_WORKERS=1` runs only the 1-worker phases.
//! Each phase also prints the events per batch (per transaction that
//! inserted events), and the machine's CPU
//! over the phase by process group. `--fractions 0.25,0.5` picks the
//! 1-worker sweep's points. The workers run as consumers only
//! (`WORKER_ROLE=consumer`) unless `WORKER_ROLE` is set.
#![allow(clippy::expect_used)] // a benchmark whose set-up fails should stop loudly

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use idv_tests::bench::child::{Child, free_port, sibling_binary};
use idv_tests::bench::cpu_split::{CpuSnapshot, CpuSplit};
use idv_tests::bench::results::{self, Phase, ProcessCost, SweepPoint, WorkerResults, WorkerRun};
use idv_tests::bench::sweep;
use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::wait::until_ready;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection, ConnectionProperties};
use shared::config::Env;
use tokio_postgres::NoTls;
use worker::consume::now_ms;
use worker::settings::Settings;

const CEILING_CONNECTIONS: usize = 16;

#[derive(Debug, Parser)]
#[command(about = "Measure idv-worker end to end against PostgreSQL's transaction ceiling")]
struct Args {
    /// Events per burst.
    #[arg(default_value_t = 24_000)]
    events: usize,
    /// Seconds of PostgreSQL's ceiling phase.
    #[arg(long, default_value_t = 8)]
    ceiling_seconds: u64,
    /// Seconds of each open-loop (paced) phase.
    #[arg(long, default_value_t = 6)]
    paced_seconds: u64,
    /// The 1-worker sweep's offered rates, as fractions of its burst rate
    /// (default 0.1,0.25,0.5,0.75,0.9,1; the report needs 0.5).
    #[arg(long, value_delimiter = ',')]
    fractions: Option<Vec<f64>>,
    /// The `idv-worker` binary; default: beside this one.
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Write the results as JSON here (for `bench_report`).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let events = args.events;
    let worker_bin = sibling_binary(args.worker_bin.as_ref(), "idv-worker")?;
    println!(
        "worker benchmark: {events} events per burst, 127.0.0.1, {} cores",
        cores()
    );
    let ceiling = ceiling(args.ceiling_seconds).await?;
    println!(
        "ceiling: {ceiling:.0} tx/s (dedupe insert + session upsert + outbox insert, {CEILING_CONNECTIONS} connections, one event per transaction)"
    );
    let worker_counts: Vec<usize> = std::env::var("BENCH_WORKERS")
        .unwrap_or_else(|_| "1,2".to_owned())
        .split(',')
        .map(|n| n.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("BENCH_WORKERS: expected worker counts like 1,2"))?;
    let (mut runs, mut points) = (Vec::new(), Vec::new());
    for workers in worker_counts {
        let burst = end_to_end(&worker_bin, workers, events, None).await?;
        println!(
            "{workers} worker(s), burst: {:.0} events/s ({:.0}% of the ceiling), p50 {:.1} ms, p99 {:.1} ms, {:.1} events/batch, peak RSS {} MB; {}",
            burst.phase.rate,
            100.0 * burst.phase.rate / ceiling,
            burst.phase.p50_ms,
            burst.phase.p99_ms,
            burst.per_batch,
            burst
                .costs
                .iter()
                .map(|cost| format!("{:.1}", cost.peak_rss_mb))
                .collect::<Vec<_>>()
                .join(" + "),
            burst
                .phase
                .cpu
                .as_ref()
                .map_or_else(String::new, CpuSplit::summary)
        );
        // With one worker, the whole sweep (its 50 % point is "half");
        // with more, only half the burst rate.
        let fractions: &[f64] = if workers == 1 {
            args.fractions.as_deref().unwrap_or(&sweep::FRACTIONS)
        } else {
            &[0.5]
        };
        let mut half = None;
        for fraction in fractions {
            let offered = burst.phase.rate * fraction;
            let count = (offered * args.paced_seconds as f64).max(1.0) as usize;
            let paced = end_to_end(&worker_bin, workers, count, Some(offered)).await?;
            println!(
                "{workers} worker(s), paced at {offered:.0}/s ({:.0}%): {:.0} events/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {:.1} events/batch; {}",
                fraction * 100.0,
                paced.phase.rate,
                paced.phase.p50_ms,
                paced.phase.p99_ms,
                paced.phase.max_ms,
                paced.per_batch,
                paced
                    .phase
                    .cpu
                    .as_ref()
                    .map_or_else(String::new, CpuSplit::summary)
            );
            if (fraction - 0.5).abs() < 1e-9 {
                half = Some(paced.phase.clone());
            }
            if workers == 1 {
                points.push(SweepPoint {
                    fraction: *fraction,
                    offered,
                    phase: paced.phase,
                });
            }
        }
        runs.push(WorkerRun {
            workers,
            burst: burst.phase,
            burst_events_per_batch: burst.per_batch,
            costs: burst.costs,
            half: half.ok_or_else(|| anyhow::anyhow!("no half-rate phase"))?,
        });
    }
    let results = WorkerResults {
        burst_events: events,
        paced_seconds: args.paced_seconds,
        ceiling_tx_per_s: ceiling,
        ceiling_connections: CEILING_CONNECTIONS,
        runs,
        sweep: points,
    };
    if let Some(path) = &args.json {
        results::write_json(path, &results)?;
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// What a worker process is given: where the database and the broker
/// are, its own admin port, and the consumer's role alone unless
/// `WORKER_ROLE` says otherwise: what is measured is publish → committed,
/// and a dispatcher in the same process (which scales apart, see
/// `WORKER_ROLE`) would spend the same two cores on the outcome messages
/// of two events in three. `WORKER_*` and `DATABASE_POOL_SIZE` of this
/// environment are inherited.
fn worker_env(broker: &TestBroker, db: &TestDatabase, admin_port: u16) -> Vec<(String, String)> {
    let role = std::env::var("WORKER_ROLE").unwrap_or_else(|_| "consumer".to_owned());
    vec![
        ("WORKER_ROLE".to_owned(), role),
        ("DATABASE_URL".to_owned(), db.url.clone()),
        ("AMQP_URL".to_owned(), broker.url.clone()),
        ("AMQP_PREFIX".to_owned(), broker.prefix.clone()),
        (
            "WORKER_ADMIN_LISTEN".to_owned(),
            format!("127.0.0.1:{admin_port}"),
        ),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ]
}

async fn migrate(db: &TestDatabase) -> anyhow::Result<()> {
    let settings = Settings::from_env(&Env::from_pairs([("DATABASE_URL", db.url.as_str())]))?;
    worker::migrate::migrate(&settings.database_url).await?;
    Ok(())
}

/// Phase 1: one event per transaction, 16 connections, fixed duration.
async fn ceiling(seconds: u64) -> anyhow::Result<f64> {
    let db = TestDatabase::new().await;
    migrate(&db).await?;
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let payload = serde_json::json!({"object": "event", "padding": "x".repeat(1800)});
    let mut tasks = Vec::new();
    for c in 0..CEILING_CONNECTIONS {
        let (done, count, payload) = (Arc::clone(&done), Arc::clone(&count), payload.clone());
        let mut client = connect(&db.url).await?;
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) {
                i += 1;
                let (id, vs) = (format!("evt_c{c}_{i}"), format!("vs_c{c}_{i}"));
                let tx = client.transaction().await?;
                tx.execute(
                    "INSERT INTO events (id, type, session_id, created, livemode, outcome, received_at, payload) \
                     VALUES ($1, 'identity.verification_session.verified', $2, 1700000000, false, 'applied', now(), $3) \
                     ON CONFLICT (id) DO NOTHING",
                    &[&id, &vs, &payload],
                )
                .await?;
                tx.execute(
                    "INSERT INTO sessions (id, status, last_event_id, last_event_created, last_event_rank) \
                     VALUES ($1, 'verified', $2, 1700000000, 3) ON CONFLICT (id) DO UPDATE SET \
                     status = excluded.status, last_event_id = excluded.last_event_id, updated_at = now()",
                    &[&vs, &id],
                )
                .await?;
                tx.execute(
                    "INSERT INTO outbox (kind, idempotency_key, session_id, payload) \
                     VALUES ('notify_user_verified', $1, $2, '{}') ON CONFLICT DO NOTHING",
                    &[&format!("{vs}:verified"), &vs],
                )
                .await?;
                tx.commit().await?;
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    done.store(true, Ordering::Relaxed);
    let measured = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    for task in tasks {
        task.await??;
    }
    Ok(measured)
}

/// What one end-to-end phase measured.
struct Measured {
    phase: Phase,
    /// Events per transaction that applied events (the rows one
    /// transaction inserted share its `xmin`): the worker's batch size.
    per_batch: f64,
    /// Each worker process over the phase: CPU per event of the whole
    /// stream (so the workers' figures add up), and its peak RSS.
    costs: Vec<ProcessCost>,
}

/// Events for `count / 3` people: processing, a failed submission, verified.
fn stream(count: usize) -> Vec<(String, Vec<u8>)> {
    let run = idv_tests::unique_suffix();
    (0..count)
        .map(|i| {
            let person = i / 3;
            let (vs, user) = (format!("vs_b{run}_{person}"), format!("user_b{run}_{person}"));
            let created = 1_700_000_000 + i64::try_from(i % 3).unwrap_or(0);
            let (kind, status, error) = match i % 3 {
                0 => ("processing", "processing", serde_json::Value::Null),
                1 => ("requires_input", "requires_input",
                      serde_json::json!({"code": "document_expired", "reason": "The provided identity document has expired."})),
                _ => ("verified", "verified", serde_json::Value::Null),
            };
            let session = serde_json::json!({
                "id": vs, "object": "identity.verification_session", "status": status,
                "type": "document", "client_reference_id": user, "last_error": error,
                "metadata": {"flow": "onboarding"}, "livemode": false, "redaction": null,
                "options": {"document": {"allowed_types": ["driving_license", "id_card", "passport"],
                    "require_live_capture": true, "require_matching_selfie": true}},
            });
            let event_type = format!("identity.verification_session.{kind}");
            let body = idv_tests::fixtures::session_event(&format!("evt_b{run}_{i}"), &event_type, created, session);
            (event_type, body)
        })
        .collect()
}

async fn publisher(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions { nowait: false })
        .await?;
    Ok((connection, channel))
}

/// Starts `workers` idv-worker processes and waits until each is ready.
async fn start_workers(
    binary: &std::path::Path,
    workers: usize,
    broker: &TestBroker,
    db: &TestDatabase,
) -> anyhow::Result<Vec<Child>> {
    let mut running = Vec::new();
    for n in 0..workers {
        let admin_port = free_port()?;
        let env = worker_env(broker, db, admin_port);
        running.push(Child::spawn(
            &format!("idv-worker {}", n + 1),
            binary,
            &[],
            &env,
        )?);
        until_ready(admin_port, "idv-worker", Duration::from_secs(30)).await;
    }
    Ok(running)
}

/// Phases 2 and 3: `workers` workers; publish `count` events as fast as
/// confirms allow (`rate: None`) or at `rate` per second.
async fn end_to_end(
    binary: &std::path::Path,
    workers: usize,
    count: usize,
    rate: Option<f64>,
) -> anyhow::Result<Measured> {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    migrate(&db).await?;
    let running = start_workers(binary, workers, &broker, &db).await?;
    let events = stream(count);
    let client = connect(&db.url).await?;
    let meters = running
        .iter()
        .map(Child::meter)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (connection, channel) = publisher(&broker.url).await?;
    let exchange = broker.topology.events_exchange();
    let cpu_before = CpuSnapshot::take()?;
    let start = Instant::now();
    let start_ms = now_ms();
    let mut confirms = FuturesUnordered::new();
    let mut ticker = rate.map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / r)));
    for (n, (event_type, body)) in events.iter().enumerate() {
        // Paced: the time it was due (a publisher behind schedule shows in
        // the latency); burst: the time it is published.
        let received_at_ms = match (ticker.as_mut(), rate) {
            (Some(ticker), Some(rate)) => {
                ticker.tick().await;
                start_ms + (n as f64 * 1000.0 / rate) as i64
            }
            _ => now_ms(),
        };
        // As ingest publishes them: persistent, typed, with the receive time.
        let properties = shared::envelope::Envelope {
            event_type,
            event_id: None,
            created: None,
            request_id: None,
            received_at_ms,
        }
        .properties();
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                event_type.as_str().into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await?;
        confirms.push(confirm);
        while confirms.len() >= 2000 {
            if let Some(result) = confirms.next().await {
                result?;
            }
        }
    }
    while let Some(result) = confirms.next().await {
        result?;
    }
    let expected = i64::try_from(count)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n: i64 = client
            .query_one("SELECT count(*) FROM events", &[])
            .await?
            .get(0);
        if n >= expected {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {n} of {expected} events committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = CpuSnapshot::take()?.since(&cpu_before);
    let costs = meters
        .into_iter()
        .map(|meter| meter.finish(u64::try_from(count).unwrap_or(u64::MAX)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let row = client
        .query_one(
            "WITH latency AS (SELECT extract(epoch FROM processed_at - received_at) AS s FROM events) \
             SELECT (SELECT extract(epoch FROM max(processed_at) - min(received_at)) FROM events)::float8, \
             (percentile_cont(0.5) WITHIN GROUP (ORDER BY s))::float8, \
             (percentile_cont(0.9) WITHIN GROUP (ORDER BY s))::float8, \
             (percentile_cont(0.99) WITHIN GROUP (ORDER BY s))::float8, \
             max(s)::float8 FROM latency",
            &[],
        )
        .await?;
    let span: f64 = row.get(0);
    let batches: i64 = client
        .query_one("SELECT count(DISTINCT xmin::text) FROM events", &[])
        .await?
        .get(0);
    let per_batch = count as f64 / batches.max(1) as f64;
    let seconds = |column: usize| -> f64 { row.get::<_, f64>(column).max(0.0) * 1e3 };
    let elapsed = span.max(start.elapsed().as_secs_f64().min(span.max(0.001)));
    for worker in running {
        worker.terminate().await?;
    }
    let _ = connection.close(200, "bench done".into()).await;
    let name = match rate {
        Some(rate) => format!("{workers} worker(s) paced at {rate:.0}/s"),
        None => format!("{workers} worker(s) burst"),
    };
    Ok(Measured {
        phase: Phase {
            name,
            rate: count as f64 / elapsed,
            ok: u64::try_from(count).unwrap_or(u64::MAX),
            failed: 0,
            p50_ms: seconds(1),
            p90_ms: seconds(2),
            p99_ms: seconds(3),
            max_ms: seconds(4),
            cpu: Some(cpu),
        },
        per_batch,
        costs,
    })
}
