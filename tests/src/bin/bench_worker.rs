//! Benchmark of `idv-worker` against PostgreSQL's own ceiling, in one run:
//!
//! 1. ceiling: transactions/s of "dedupe insert + session upsert + outbox
//!    insert" (one event per transaction, the unbatched design) at 16
//!    connections, on the worker's schema;
//! 2. end to end with 1 worker, then 2: Identity events (processing, a
//!    failed submission, verified, per person) published to the events
//!    exchange as ingest publishes them, as fast as the broker confirms;
//!    events/s from the first publish to the last commit;
//! 3. the same at half that rate, open loop, for the latency of a normal
//!    load. Latency = `events.processed_at` − the publish time the event
//!    carries (`x-received-at-ms`), so it covers queueing, delivery, the
//!    transaction up to the event's insert (the commit follows within its
//!    batch).
//!
//! `cargo run --release -p idv-tests --bin bench_worker [events]` against
//! 127.0.0.1 only; every database and queue it creates is removed at the end.
//! `WORKER_*` and `DATABASE_POOL_SIZE` in the environment are passed to the
//! workers (to compare settings); `BENCH_WORKERS=1` runs only the 1-worker
//! phases. Each phase also prints the events per commit it saw.
#![allow(clippy::expect_used)] // a benchmark whose set-up fails should stop loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection, ConnectionProperties};
use shared::config::Env;
use tokio_postgres::NoTls;
use worker::consume::now_ms;
use worker::settings::Settings;
use worker::startup::Application;

const CEILING_CONNECTIONS: usize = 16;
const CEILING_SECONDS: u64 = 8;
const PACED_SECONDS: u64 = 8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: usize = std::env::args()
        .nth(1)
        .map(|raw| raw.parse())
        .transpose()?
        .unwrap_or(24_000);
    println!(
        "worker benchmark: {events} events per burst, 127.0.0.1, {} cores",
        cores()
    );
    let ceiling = ceiling().await?;
    println!(
        "ceiling: {ceiling:.0} tx/s (dedupe insert + session upsert + outbox insert, {CEILING_CONNECTIONS} connections, one event per transaction)"
    );
    let worker_counts: Vec<usize> = std::env::var("BENCH_WORKERS")
        .unwrap_or_else(|_| "1,2".to_owned())
        .split(',')
        .map(|n| n.trim().parse())
        .collect::<Result<_, _>>()?;
    for workers in worker_counts {
        let burst = end_to_end(workers, events, None).await?;
        println!(
            "{workers} worker(s), burst: {:.0} events/s ({:.0}% of the ceiling), p50 {:?}, p99 {:?}, {:.1} events/commit",
            burst.rate,
            100.0 * burst.rate / ceiling,
            burst.p50,
            burst.p99,
            burst.per_commit
        );
        let half = burst.rate / 2.0;
        let count = (half * PACED_SECONDS as f64) as usize;
        let paced = end_to_end(workers, count, Some(half)).await?;
        println!(
            "{workers} worker(s), paced at {half:.0}/s: {:.0} events/s, p50 {:?}, p99 {:?}, {:.1} events/commit",
            paced.rate, paced.p50, paced.p99, paced.per_commit
        );
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

fn settings(broker: &TestBroker, db: &TestDatabase) -> Settings {
    let mut pairs: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("WORKER_") || k == "DATABASE_POOL_SIZE")
        .collect();
    pairs.extend([
        ("DATABASE_URL".to_owned(), db.url.clone()),
        ("AMQP_URL".to_owned(), broker.url.clone()),
        ("AMQP_PREFIX".to_owned(), broker.prefix.clone()),
        ("WORKER_ADMIN_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
    ]);
    Settings::from_env(&Env::from_pairs(pairs)).expect("settings")
}

/// Transactions committed in the current database so far (statistics are
/// flushed within a second, so read it after a pause).
async fn commits(client: &tokio_postgres::Client) -> anyhow::Result<i64> {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    Ok(client
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await?
        .get(0))
}

/// Phase 1: one event per transaction, 16 connections, fixed duration.
async fn ceiling() -> anyhow::Result<f64> {
    let db = TestDatabase::new().await;
    worker::migrate::migrate(
        &Settings::from_env(&Env::from_pairs([("DATABASE_URL", db.url.as_str())]))?.database_url,
    )
    .await?;
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
    tokio::time::sleep(Duration::from_secs(CEILING_SECONDS)).await;
    done.store(true, Ordering::Relaxed);
    let measured = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    for task in tasks {
        task.await??;
    }
    Ok(measured)
}

/// What one end-to-end phase measured.
struct Measured {
    rate: f64,
    /// Events per committed transaction (all of the database's commits).
    per_commit: f64,
    p50: Duration,
    p99: Duration,
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

/// Phases 2 and 3: `workers` workers; publish `count` events as fast as
/// confirms allow (`rate: None`) or at `rate` per second.
async fn end_to_end(workers: usize, count: usize, rate: Option<f64>) -> anyhow::Result<Measured> {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let settings = settings(&broker, &db);
    worker::migrate::migrate(&settings.database_url).await?;
    let mut running = Vec::new();
    for _ in 0..workers {
        let app = Application::build(settings.clone()).await?;
        let token = tokio_util::sync::CancellationToken::new();
        let run = app.run_until_stopped(token.clone().cancelled_owned());
        running.push((token, tokio::spawn(run)));
    }
    let events = stream(count);
    let client = connect(&db.url).await?;
    let commits_before = commits(&client).await?;
    let (connection, channel) = publisher(&broker.url).await?;
    let exchange = broker.topology.events_exchange();
    let start = Instant::now();
    let mut confirms = FuturesUnordered::new();
    let mut ticker = rate.map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / r)));
    for (event_type, body) in &events {
        if let Some(ticker) = ticker.as_mut() {
            ticker.tick().await;
        }
        // As ingest publishes them: persistent, typed, with the receive time.
        let properties = shared::envelope::Envelope {
            event_type,
            event_id: None,
            created: None,
            request_id: None,
            received_at_ms: now_ms(),
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
    // Each poll is a commit too: counted, to leave them out of the ratio.
    let mut polls = 0i64;
    loop {
        polls += 1;
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
    let row = client
        .query_one(
            "SELECT extract(epoch FROM max(processed_at) - min(received_at))::float8, \
             (percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - received_at)))::float8, \
             (percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - received_at)))::float8 \
             FROM events",
            &[],
        )
        .await?;
    let (span, p50, p99): (f64, f64, f64) = (row.get(0), row.get(1), row.get(2));
    let elapsed = span.max(start.elapsed().as_secs_f64().min(span.max(0.001)));
    // The two statistics reads and the percentiles query also commit.
    let committed = commits(&client).await? - commits_before - polls - 3;
    for (token, handle) in running {
        token.cancel();
        handle.await??;
    }
    let _ = connection.close(200, "bench done".into()).await;
    Ok(Measured {
        rate: count as f64 / elapsed,
        per_commit: count as f64 / committed.max(1) as f64,
        p50: Duration::from_secs_f64(p50.max(0.0)),
        p99: Duration::from_secs_f64(p99.max(0.0)),
    })
}
