//! The fault run: the real binaries (`idv-ingest`, two `idv-worker`s and
//! `idv-worker --dispatcher-only`) take a Stripe-like load (session stories
//! with failures, retries, limits, cancels and redactions; duplicates; out
//! of order; every non-2xx retried with backoff) while the broker, the
//! database, the workers and the dispatcher are broken on a schedule; then
//! the record is audited against a reference model and the ledger printed.
//!
//! The broker and the database are the run's own (a RabbitMQ node from
//! `deploy/rabbitmq-cluster.sh`, a PostgreSQL from `initdb`), so that it
//! may stop and restart them without touching the shared services other
//! tests use; both are taken down, their state deleted, even when the run
//! fails. `deploy/fault-run.sh` runs it alone. Settings (environment):
//! `IDV_FAULT_SUBJECTS` (420), `IDV_FAULT_SECS` (how long the load lasts,
//! 75; the fault cycle repeats through it: a soak), `IDV_FAULT_SEED`,
//! `IDV_FAULT_PG_PORT` (5491), `IDV_FAULT_AMQP_PORT` (5691).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use idv_tests::database::TestDatabase;
use idv_tests::fault::RunDir;
use idv_tests::fault::amqp::{queue_state, take_event_ids};
use idv_tests::fault::audit::{self, WebhookRequest};
use idv_tests::fault::ledger::Ledger;
use idv_tests::fault::pipeline::{Pipeline, Wiring};
use idv_tests::fault::private_pg::PrivatePostgres;
use idv_tests::fault::private_rabbit::PrivateRabbit;
use idv_tests::fault::sender::{self, Pace};
use idv_tests::fault::stories;
use idv_tests::wait::eventually;
use idv_tests::worker_world::{migrate, settings};
use rand::{Rng, SeedableRng};
use shared::topology::Topology;
use tokio::time::Instant;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// `IDV_MAX_FAILED_ATTEMPTS` (the worker's default).
const MAX_ATTEMPTS: i32 = 3;
/// Poison events sent with the stories: the DLQ's only rightful content.
const POISON: usize = 4;
/// How long the pipeline may take to settle once the load and faults end
/// (a dispatcher's row left unmarked waits out its 30 s lease).
const SETTLE: Duration = Duration::from_secs(150);

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: expected a whole number, found {value:?}")),
        Err(_) => default,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_faults_nothing_is_lost_or_applied_twice_and_actions_repeat_only_after_a_crash() {
    let subjects = usize::try_from(env_number("IDV_FAULT_SUBJECTS", 420)).unwrap();
    let spread = Duration::from_secs(env_number("IDV_FAULT_SECS", 75));
    let seed = env_number("IDV_FAULT_SEED", rand::rng().random());
    let tag = format!(
        "{}{}",
        idv_tests::run_tag(),
        &idv_tests::unique_suffix()[..6]
    );
    println!("fault run {tag}: {subjects} subjects over {spread:?}, IDV_FAULT_SEED={seed}");

    // Private services, torn down by their guards whatever happens.
    // Dropped last: deleted once the services in it are down.
    let state = RunDir(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/fault-run")
            .join(&tag),
    );
    let pg_port = u16::try_from(env_number("IDV_FAULT_PG_PORT", 5491)).unwrap();
    let amqp_port = u16::try_from(env_number("IDV_FAULT_AMQP_PORT", 5691)).unwrap();
    let pg = PrivatePostgres::start(&state.0.join("pg"), pg_port);
    let rabbit = PrivateRabbit::start(&state.0.join("rabbit"), amqp_port);
    let db = TestDatabase::new_at(&pg.server_url()).await;
    migrate(&settings(None, &db, &[])).await;
    let webhook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&webhook)
        .await;
    let prefix = format!("fault-{tag}.");
    let topology = Topology::new(&prefix).unwrap();
    let wiring = Wiring {
        amqp_url: rabbit.url.clone(),
        amqp_prefix: prefix,
        database_url: db.url.clone(),
        webhook_url: format!("{}/outcomes", webhook.uri()),
    };
    let ledger = Arc::new(Ledger::default());
    let pipeline = Pipeline::start(&wiring, &ledger).await;

    // The load: every story's events, duplicates, poison, shuffled.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let start_of_time = idv_tests::fixtures::now_unix() - 86_400;
    let stories: Vec<_> = (0..subjects)
        .map(|n| stories::story(&mut rng, &tag, n, start_of_time + 10 * n as i64))
        .collect();
    let poison = stories::poison(&tag, POISON, start_of_time);
    let poison_ids: BTreeSet<String> = poison.iter().map(|(id, _)| id.clone()).collect();
    let deliveries = sender::plan(&mut rng, &stories, &poison);
    let events = stories.iter().map(|s| s.events.len()).sum::<usize>() + POISON;
    let pace = Pace {
        concurrency: 24,
        spread,
    };
    let load = tokio::spawn(sender::send_all(
        pipeline.webhook_url.clone(),
        deliveries,
        pace,
        Arc::clone(&ledger),
    ));

    // Worker 2 is SIGKILLed at random moments while the faults go on.
    let killing = tokio_util::sync::CancellationToken::new();
    let killer = tokio::spawn({
        let (worker, killing) = (Arc::clone(&pipeline.workers[1]), killing.clone());
        async move {
            while !killing.is_cancelled() {
                let pause = Duration::from_millis(rand::rng().random_range(2_000..6_000));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = killing.cancelled() => return,
                }
                worker.kill_now("worker SIGKILLed at a random moment").await;
            }
        }
    });

    // The schedule: one cycle of faults, again while the load lasts.
    let began = Instant::now();
    loop {
        fault_cycle(&rabbit, &pg, &db, &pipeline, &ledger, &wiring, &topology).await;
        if began.elapsed() + Duration::from_secs(50) > spread {
            break;
        }
    }
    tokio::time::timeout(spread + Duration::from_secs(180), load)
        .await
        .expect("every delivery answered 2xx in the end")
        .expect("the sender");
    killing.cancel();
    killer.await.unwrap();
    pipeline.disarm().await;
    println!("load done after {:?}; settling", began.elapsed());

    let settled = settle(
        &db,
        &wiring,
        &topology,
        stories.iter().map(|s| s.events.len()).sum(),
        POISON,
    )
    .await;
    pipeline.shut_down().await;
    let (ready, consumers) = queue_state(&wiring.amqp_url, &topology.events_queue())
        .await
        .unwrap();
    let dlq_left = take_event_ids(&wiring.amqp_url, &topology.dead_letter_queue())
        .await
        .unwrap();
    let webhook_log: Vec<WebhookRequest> = webhook
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|request| WebhookRequest {
            key: request
                .headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body_key: serde_json::from_slice::<serde_json::Value>(&request.body)
                .ok()
                .and_then(|v| v["idempotency_key"].as_str().map(str::to_owned)),
        })
        .collect();
    let answered = ledger.answered_ids();
    let dispatcher_log = pipeline.dispatcher.log().await;
    let mut report = audit::audit(
        &db.client().await,
        &audit::Inputs {
            stories: &stories,
            max_attempts: MAX_ATTEMPTS,
            answered: &answered,
            poison: &poison_ids,
            webhook: &webhook_log,
            dispatcher_log: &dispatcher_log,
            dlq_queue: &dlq_left,
        },
    )
    .await;
    if ready != 0 || consumers != 0 {
        report.discrepancies.push(format!(
            "idv.events holds {ready} messages unacked or unread after the workers stopped"
        ));
    }
    report.discrepancies.extend(pipeline.unexpected());
    if let Err(unsettled) = settled {
        report.discrepancies.push(unsettled);
    }
    println!("{}", ledger.render(events, &report));
    drop(pipeline);
    drop(db);
    rabbit.stop();
    pg.stop();
    drop(state);
    assert!(
        report.discrepancies.is_empty(),
        "the audit found {} discrepancies (IDV_FAULT_SEED={seed}):\n{}",
        report.discrepancies.len(),
        report.discrepancies.join("\n")
    );
}

/// One cycle of faults while the load goes on.
async fn fault_cycle(
    rabbit: &PrivateRabbit,
    pg: &PrivatePostgres,
    db: &TestDatabase,
    pipeline: &Pipeline,
    ledger: &Ledger,
    wiring: &Wiring,
    topology: &Topology,
) {
    tokio::time::sleep(Duration::from_secs(5)).await;
    rabbit.close_all_connections();
    ledger.fault("broker: close_all_connections");

    tokio::time::sleep(Duration::from_secs(5)).await;
    let terminated = pg.terminate_backends(&db.name).await;
    for _ in 0..terminated {
        ledger.fault("PostgreSQL: backends terminated");
    }

    tokio::time::sleep(Duration::from_secs(4)).await;
    broker_outage(rabbit, ledger).await;

    tokio::time::sleep(Duration::from_secs(4)).await;
    pg.restart();
    ledger.fault("PostgreSQL: restart (fast)");

    tokio::time::sleep(Duration::from_secs(4)).await;
    slow_consumers(pipeline, ledger, wiring, topology).await;
}

/// `stop_app`: ingest answers 503 while the broker is away, and 200 again
/// once it is back.
async fn broker_outage(rabbit: &PrivateRabbit, ledger: &Ledger) {
    let refused = Ledger::count(&ledger.retried_503);
    rabbit.stop_app();
    ledger.fault("broker: stop_app / start_app");
    eventually(
        Duration::from_secs(30),
        "ingest to answer 503 while the broker is stopped",
        || async { Ledger::count(&ledger.retried_503) > refused },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    rabbit.start_app();
    let accepted = Ledger::count(&ledger.answered_2xx);
    eventually(
        Duration::from_secs(90),
        "ingest to answer 200 again once the broker is back",
        || async { Ledger::count(&ledger.answered_2xx) > accepted },
    )
    .await;
}

/// The consumers stopped for a while: the queue grows, then drains.
async fn slow_consumers(
    pipeline: &Pipeline,
    ledger: &Ledger,
    wiring: &Wiring,
    topology: &Topology,
) {
    for worker in &pipeline.workers {
        worker.pause().await;
    }
    ledger.fault("consumers stopped (queue grows)");
    let queue = topology.events_queue();
    let at_pause = queue_state(&wiring.amqp_url, &queue)
        .await
        .map_or(0, |s| s.0);
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut peak = at_pause;
    while Instant::now() < deadline {
        if let Ok((ready, _)) = queue_state(&wiring.amqp_url, &queue).await {
            peak = peak.max(ready);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        peak >= at_pause + 40,
        "the queue grew while no consumer ran ({at_pause} → {peak})"
    );
    println!("queue grew from {at_pause} to {peak} while the consumers were stopped");
    for worker in &pipeline.workers {
        worker.resume();
    }
}

/// Waits until every event is in the inbox, the queues are drained, the
/// poison dead-lettered and the outbox has nothing pending; `Err` says
/// what was still not so at the deadline (the audit then lists why).
async fn settle(
    db: &TestDatabase,
    wiring: &Wiring,
    topology: &Topology,
    events: usize,
    poison: usize,
) -> Result<(), String> {
    let wanted = (
        i64::try_from(events).unwrap(),
        i64::try_from(poison).unwrap(),
    );
    let deadline = Instant::now() + SETTLE;
    let mut last = String::from("nothing read yet");
    while Instant::now() < deadline {
        if let Ok(client) = try_client(&db.url).await
            && let Ok(counts) = client
                .query_one(
                    "SELECT (SELECT count(*) FROM events), \
                     (SELECT count(DISTINCT event_id) FROM dead_letters), \
                     (SELECT count(*) FROM outbox WHERE status = 'pending')",
                    &[],
                )
                .await
        {
            let (applied, dead, pending): (i64, i64, i64) =
                (counts.get(0), counts.get(1), counts.get(2));
            let ready = queue_state(&wiring.amqp_url, &topology.events_queue())
                .await
                .map_or(u32::MAX, |s| s.0);
            if applied >= wanted.0 && dead >= wanted.1 && pending == 0 && ready == 0 {
                return Ok(());
            }
            last = format!(
                "{applied} of {} events applied, {dead} of {} poison dead-lettered, \
                 {pending} outbox rows pending, {ready} deliveries ready in idv.events",
                wanted.0, wanted.1
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("not settled within {SETTLE:?}: {last}"))
}

async fn try_client(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}
