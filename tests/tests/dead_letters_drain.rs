//! The worker drains `idv.events.dlq` into `dead_letters` (issue 9): a
//! message the worker gave up on and one the broker dead-lettered at its
//! delivery limit each become one row with the right columns, and the DLQ
//! is left empty and acked; the same DLQ message delivered again is no
//! second row, a new dead-lettering of the same bytes is; a redaction
//! erases the session's dead letters, one drained afterwards is stored
//! without payload, and the drain and a redaction cannot interleave; the
//! gauges report what waits.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step should stop the test loudly

use std::sync::Arc;
use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::dead_letters::{Row, reject_until_dead_lettered, rows, wait_for_rows};
use idv_tests::fixtures::fixture;
use idv_tests::proxy::TcpProxy;
use idv_tests::wait::eventually;
use idv_tests::worker_world::*;
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicRejectOptions};
use worker::consume::now_ms;
use worker::dead_letter::{self, record};
use worker::store::dead_letters::{self as table, LOCK_SESSIONS};

const DEADLINE: Duration = Duration::from_secs(30);
const VERIFIED: &str = "identity.verification_session.verified";

/// A `verified` event whose session says `processing`: the worker retries
/// it, then dead-letters it (`status_mismatch`); its body names the session.
fn mismatch(event_id: &str, session_id: &str) -> Vec<u8> {
    event(
        event_id,
        "verified",
        1_700_000_000,
        session(session_id, "processing", Some("user_dl"), None),
    )
}

/// The row of `session_id` among `rows`.
fn of_session<'a>(rows: &'a [Row], session_id: &str) -> &'a Row {
    rows.iter()
        .find(|row| row.session_id.as_deref() == Some(session_id))
        .unwrap_or_else(|| panic!("a dead letter of {session_id}: {rows:?}"))
}

#[tokio::test]
async fn a_message_the_worker_gave_up_on_becomes_one_row_and_leaves_the_queue() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let settings = settings(
        Some(&broker),
        &db,
        &[("WORKER_CONSUMERS", "1"), FAST_RETRIES],
    );
    migrate(&settings).await;
    let worker = RunningWorker::start(settings).await;
    let client = db.client().await;
    let published_ms = now_ms();
    publish(&broker, VERIFIED, b"{not json").await;

    let found = wait_for_rows(&client, 1, DEADLINE).await;
    let row = &found[0];
    assert_eq!(row.kind, "unparseable");
    assert_eq!(
        row.reason,
        "not a Stripe Identity event: invalid JSON at line 1 column 2"
    );
    assert_eq!(row.attempts, 4, "the first try and three retries");
    assert_eq!(
        row.routing_key, VERIFIED,
        "the key it was published with, not the work queue's"
    );
    assert_eq!(
        row.payload.as_deref(),
        Some(&b"{not json"[..]),
        "the exact bytes"
    );
    assert_eq!(
        (
            &row.event_id,
            &row.event_type,
            &row.session_id,
            row.event_created
        ),
        (&None, &None, &None, None),
        "nothing taken from a body that is not an event"
    );
    // Milliseconds read back from timestamps: a millisecond of slack.
    assert!(row.first_failure_ms >= published_ms - 1, "{row:?}");
    assert!(
        row.last_failure_ms - row.first_failure_ms >= 3 * 50 - 1,
        "three retries of 50 ms between the first and the last failure: {row:?}"
    );
    assert!(row.dead_lettered_ms >= row.last_failure_ms - 1, "{row:?}");
    assert!(!row.replayed && !row.payload_erased);

    let metrics = worker.metrics.clone();
    worker.stop().await;
    assert_eq!(metrics.dead_letters_drained.get(), 1);
    broker
        .assert_all_acked(&broker.topology.dead_letter_queue(), DEADLINE)
        .await;
    assert_eq!(rows(&client).await.len(), 1);
}

#[tokio::test]
async fn a_message_the_broker_dead_lettered_at_its_delivery_limit_becomes_a_row() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let body = fixture("evt_verified.json");
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let published_ms = now_ms();
    publish(&broker, VERIFIED, &body).await;
    // No worker yet: a consumer of the test's returns it until the broker
    // dead-letters it.
    let deliveries = reject_until_dead_lettered(&broker, DEADLINE).await;
    assert_eq!(
        deliveries, 21,
        "x-delivery-limit 20: the first and 20 returns"
    );

    let settings = settings(Some(&broker), &db, &[("WORKER_CONSUMERS", "1")]);
    migrate(&settings).await;
    let worker = RunningWorker::start(settings).await;
    let client = db.client().await;
    let found = wait_for_rows(&client, 1, DEADLINE).await;
    let row = &found[0];
    assert_eq!(row.kind, "delivery_limit");
    assert!(row.reason.contains("x-delivery-limit"), "{}", row.reason);
    assert_eq!(row.attempts, 21, "deliveries");
    assert_eq!(row.routing_key, VERIFIED);
    assert_eq!(row.event_id.as_deref(), event["id"].as_str());
    assert_eq!(row.event_type.as_deref(), Some(VERIFIED));
    assert_eq!(
        row.session_id.as_deref(),
        event["data"]["object"]["id"].as_str()
    );
    assert_eq!(row.event_created, event["created"].as_i64());
    assert_eq!(row.payload.as_deref(), Some(&body[..]));
    // The broker's x-death time, in whole seconds, is both.
    assert_eq!(row.first_failure_ms, row.last_failure_ms);
    assert_eq!(row.last_failure_ms % 1000, 0, "{row:?}");
    assert!(row.last_failure_ms >= published_ms / 1000 * 1000, "{row:?}");
    assert!(row.last_failure_ms <= row.dead_lettered_ms, "{row:?}");

    worker.stop().await;
    broker
        .assert_all_acked(&broker.topology.dead_letter_queue(), DEADLINE)
        .await;
    assert_eq!(event_count(&client).await, 0, "never applied");
}

#[tokio::test]
async fn a_dlq_message_delivered_again_is_no_second_row_but_a_new_dead_lettering_is() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let client = db.client().await;
    let dlq = broker.topology.dead_letter_queue();
    // A worker that leaves its dead letter in the DLQ.
    let leaving = settings(
        Some(&broker),
        &db,
        &[
            ("WORKER_CONSUMERS", "1"),
            FAST_RETRIES,
            ("WORKER_DLQ_DRAIN", "off"),
        ],
    );
    migrate(&leaving).await;
    let worker = RunningWorker::start(leaving.clone()).await;
    publish(&broker, VERIFIED, b"{not json").await;
    broker.wait_for_count(&dlq, 1, DEADLINE).await;
    worker.stop().await;

    // A drain that committed its row and died before its ack: the same
    // step, then the message let go unacked (the broker delivers it again,
    // x-delivery-count changed).
    let tasks = dead_letter::Tasks {
        pool: worker::store::connect_pool(&leaving.database_url, 1)
            .await
            .unwrap(),
        amqp_url: leaving.amqp_url.clone(),
        topology: leaving.topology.clone(),
        metrics: Arc::new(worker::metrics::Metrics::default()),
        health: Arc::new(worker::health::Health::default()),
        shutdown: tokio_util::sync::CancellationToken::new(),
    };
    let taken = broker
        .channel()
        .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("the dead letter");
    assert!(dead_letter::drain::record(&tasks, std::slice::from_ref(&taken.delivery)).await);
    let first = wait_for_rows(&client, 1, DEADLINE).await;
    taken
        .delivery
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();

    let draining = settings(
        Some(&broker),
        &db,
        &[("WORKER_CONSUMERS", "1"), FAST_RETRIES],
    );
    let worker = RunningWorker::start(draining).await;
    eventually(DEADLINE, "the delivery drained again", || async {
        worker.metrics.dead_letters_drained.get() == 1
    })
    .await;
    assert_eq!(rows(&client).await, first, "the same row, and no other");

    // The same bytes dead-lettered again (a Stripe redelivery): a new row.
    publish(&broker, VERIFIED, b"{not json").await;
    let both = wait_for_rows(&client, 2, DEADLINE).await;
    assert_eq!(both[0], first[0]);
    assert_eq!(both[1].payload, both[0].payload);
    assert_ne!(both[1].fingerprint, both[0].fingerprint);
    worker.stop().await;
    broker.assert_all_acked(&dlq, DEADLINE).await;
}

#[tokio::test]
async fn a_redaction_erases_its_sessions_dead_letters_and_those_drained_after_it() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let settings = settings(
        Some(&broker),
        &db,
        &[("WORKER_CONSUMERS", "1"), FAST_RETRIES],
    );
    migrate(&settings).await;
    let worker = RunningWorker::start(settings).await;
    let client = db.client().await;
    let (redacted, kept) = (unique("vs_red"), unique("vs_keep"));
    publish(&broker, VERIFIED, &mismatch(&unique("evt_a"), &redacted)).await;
    publish(&broker, VERIFIED, &mismatch(&unique("evt_b"), &kept)).await;
    let before = wait_for_rows(&client, 2, DEADLINE).await;
    for session in [&redacted, &kept] {
        let row = of_session(&before, session);
        assert_eq!(row.kind, "status_mismatch");
        assert!(row.payload.is_some() && !row.payload_erased);
    }

    let redaction = event(
        &unique("evt_r"),
        "redacted",
        1_700_000_100,
        session(&redacted, "canceled", None, None),
    );
    publish(
        &broker,
        "identity.verification_session.redacted",
        &redaction,
    )
    .await;
    eventually(DEADLINE, "the dead letter's payload erased", || async {
        let rows = rows(&client).await;
        let row = of_session(&rows, &redacted);
        row.payload.is_none() && row.payload_erased
    })
    .await;
    let after = rows(&client).await;
    assert_eq!(
        of_session(&after, &kept).payload,
        of_session(&before, &kept).payload,
        "another session's dead letter keeps its payload"
    );

    // Dead-lettered after the redaction: stored without its payload.
    publish(&broker, VERIFIED, &mismatch(&unique("evt_c"), &redacted)).await;
    let found = wait_for_rows(&client, 3, DEADLINE).await;
    let late = &found[2];
    assert_eq!(late.session_id.as_deref(), Some(redacted.as_str()));
    assert_eq!(late.payload, None);
    assert!(late.payload_erased);
    worker.stop().await;
    broker
        .assert_all_acked(&broker.topology.dead_letter_queue(), DEADLINE)
        .await;
}

#[tokio::test]
async fn dead_letters_are_held_through_a_database_outage_and_recorded_after_it() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    migrate(&settings(Some(&broker), &db, &[])).await;
    let proxy = TcpProxy::start(db.server_addr()).await;
    let through_proxy = db.url_via(proxy.addr());
    let settings = settings(
        Some(&broker),
        &db,
        &[
            ("DATABASE_URL", through_proxy.as_str()),
            ("WORKER_CONSUMERS", "1"),
        ],
    );
    let worker = RunningWorker::start(settings).await;
    let t = &broker.topology;
    let dlq = t.dead_letter_queue();
    eventually(DEADLINE, "the drain consuming the DLQ", || async {
        broker.queue_state(&dlq).await.consumers == 1
    })
    .await;

    proxy.cut();
    for n in 0..2 {
        broker
            .publish_confirmed(
                &t.dead_letter_exchange(),
                VERIFIED,
                format!("dead during the outage {n}").as_bytes(),
                BasicProperties::default(),
            )
            .await;
    }
    eventually(DEADLINE, "the drain retrying its batch", || async {
        worker.metrics.infrastructure_retries.get() >= 3
    })
    .await;
    let client = db.client().await;
    assert_eq!(rows(&client).await, [], "nothing recorded while away");
    assert_eq!(
        worker.metrics.dead_letters_drained.get(),
        0,
        "nothing acked before it was recorded"
    );

    proxy.restore();
    let recorded = wait_for_rows(&client, 2, DEADLINE).await;
    assert!(
        recorded.iter().all(|row| row.kind == "unknown"),
        "{recorded:?}"
    );
    eventually(DEADLINE, "both acked", || async {
        worker.metrics.dead_letters_drained.get() == 2
    })
    .await;
    worker.stop().await;
    broker.assert_all_acked(&dlq, DEADLINE).await;
    assert_eq!(rows(&client).await.len(), 2);
}

/// The race: a redaction and a drain of the same session, each inside the
/// other's transaction. Whichever holds the session's erasure lock, the
/// other waits for it, and no payload of a redacted session survives.
#[tokio::test]
async fn a_drain_and_a_redaction_of_one_session_do_not_interleave() {
    let db = TestDatabase::new().await;
    let settings = settings(None, &db, &[]);
    let store = store(&settings).await;
    let pool = worker::store::connect_pool(&settings.database_url, 2)
        .await
        .unwrap();
    let client = db.client().await;
    let dead_letter = |session_id: &str| {
        let body = mismatch(&unique("evt_race"), session_id);
        let context = record::Context {
            work_queue: "idv.events",
            now_ms: now_ms(),
        };
        record::read(&body, VERIFIED, &BasicProperties::default(), context)
    };
    let payload_of = |session_id: String| {
        let client = &client;
        async move {
            let rows = rows(client).await;
            let row = of_session(&rows, &session_id);
            (row.payload.is_some(), row.payload_erased)
        }
    };

    // 1. A redaction holds the lock (mid-transaction, the session marked
    // redacted): the drain waits, then stores the dead letter without payload.
    let first = unique("vs_race_a");
    let redaction = db.client().await;
    redaction.batch_execute("BEGIN").await.unwrap();
    redaction
        .execute(LOCK_SESSIONS, &[&vec![Some(first.as_str())]])
        .await
        .unwrap();
    redaction
        .execute(
            "INSERT INTO sessions (id, redacted_at) VALUES ($1, now())",
            &[&first],
        )
        .await
        .unwrap();
    let row = dead_letter(&first);
    let drain_pool = pool.clone();
    let drain = tokio::spawn(async move {
        let mut client = drain_pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        let inserted = table::insert(&tx, std::slice::from_ref(&row))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        inserted
    });
    eventually(DEADLINE, "the drain to wait for the redaction", || async {
        waiting_on_a_lock(&client, &db).await > 0
    })
    .await;
    assert!(!drain.is_finished());
    redaction.batch_execute("COMMIT").await.unwrap();
    assert_eq!(drain.await.unwrap(), 1);
    assert_eq!(payload_of(first).await, (false, true));

    // 2. A drain holds the lock (its row inserted, not committed): the
    // redaction waits, then erases the payload the drain committed.
    let second = unique("vs_race_b");
    let mut drain_client = pool.get().await.unwrap();
    let drain_tx = drain_client.transaction().await.unwrap();
    let row = dead_letter(&second);
    assert_eq!(
        table::insert(&drain_tx, std::slice::from_ref(&row))
            .await
            .unwrap(),
        1
    );
    let redacted = incoming(
        &settings,
        &event(
            &unique("evt_race_r"),
            "redacted",
            1_700_000_100,
            session(&second, "canceled", None, None),
        ),
    );
    let redacting = store.clone();
    let apply = tokio::spawn(async move { redacting.apply(&[&redacted]).await.is_ok() });
    eventually(DEADLINE, "the redaction to wait for the drain", || async {
        waiting_on_a_lock(&client, &db).await > 0
    })
    .await;
    assert!(!apply.is_finished());
    drain_tx.commit().await.unwrap();
    assert!(apply.await.unwrap(), "the redaction applied");
    assert_eq!(payload_of(second).await, (false, true));
}

/// `name{labels} value` in Prometheus `text`.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn the_gauges_report_what_waits_and_the_queue_depths() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    // The drain off, so that dead letters stay in the DLQ to be counted.
    let settings = settings(
        Some(&broker),
        &db,
        &[("WORKER_CONSUMERS", "1"), ("WORKER_DLQ_DRAIN", "off")],
    );
    migrate(&settings).await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO dead_letters (fingerprint, routing_key, reason, kind, attempts, \
             first_failure_at, last_failure_at, dead_lettered_at, replayed_at) VALUES \
             ('\\x01', 'k', 'r', 'unparseable', 4, now(), now(), now() - interval '90 s', NULL), \
             ('\\x02', 'k', 'r', 'unparseable', 4, now(), now(), now() - interval '10 s', NULL), \
             ('\\x03', 'k', 'r', 'unparseable', 4, now(), now(), now() - interval '1 day', now())",
        )
        .await
        .unwrap();
    let t = &broker.topology;
    for n in 0..2 {
        broker
            .publish_confirmed(
                &t.dead_letter_exchange(),
                VERIFIED,
                format!("dead {n}").as_bytes(),
                BasicProperties::default(),
            )
            .await;
    }
    let worker = RunningWorker::start(settings).await;
    let dlq = format!(
        "idv_worker_queue_messages{{queue=\"{}\"}}",
        t.dead_letter_queue()
    );
    let work = format!(
        "idv_worker_queue_messages{{queue=\"{}\"}}",
        t.events_queue()
    );
    eventually(DEADLINE, "the gauges on /metrics", || async {
        let (_, text) = worker.get("/metrics").await;
        let oldest = series(&text, "idv_worker_dead_letter_oldest_age_seconds");
        series(&text, "idv_worker_dead_letters_waiting") == Some(2.0)
            && oldest.is_some_and(|age| (90.0..3600.0).contains(&age))
            && series(&text, &dlq) == Some(2.0)
            && series(&text, &work) == Some(0.0)
    })
    .await;

    client
        .batch_execute("UPDATE dead_letters SET replayed_at = now()")
        .await
        .unwrap();
    eventually(DEADLINE, "nothing waiting, after a replay", || async {
        let (_, text) = worker.get("/metrics").await;
        series(&text, "idv_worker_dead_letters_waiting") == Some(0.0)
            && series(&text, "idv_worker_dead_letter_oldest_age_seconds") == Some(0.0)
    })
    .await;
    worker.stop().await;
}
