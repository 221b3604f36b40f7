//! The worker end to end on the real broker and database: the fixtures flow
//! from the events exchange (routed as ingest publishes them) to committed
//! state; a poison message reaches the DLQ with its reason after the
//! retries; shutdown finishes and acks the work in hand.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a failure should stop the test loudly

#[path = "worker_support/mod.rs"]
mod support;

use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::fixtures::{EVENT_FIXTURES, fixture};
use idv_tests::wait::eventually;
use lapin::types::AMQPValue;
use support::*;
use worker::store::read;

const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_fixtures_flow_to_committed_state() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let settings = settings(Some(&broker), &db, &[("WORKER_CONSUMERS", "2")]);
    migrate(&settings).await;
    let worker = RunningWorker::start(settings).await;
    let client = db.client().await;
    eventually(DEADLINE, "the worker to be ready", || async {
        worker.get("/readyz").await.0 == 200
    })
    .await;

    for name in EVENT_FIXTURES {
        let body = fixture(name);
        publish(&broker, &type_of(&body), &body).await;
    }
    eventually(DEADLINE, "all six fixtures committed", || async {
        event_count(&client).await == 6
    })
    .await;

    let subject = read::subject(&client, "user_8f14e45fceea", 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (subject.status.as_str(), subject.failed_attempts),
        ("verified", 1)
    );
    let session = read::session(&client, "vs_1Sk3Gh2eZvKYlo2CqR8tNw4P")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.status, "verified");
    assert!(session.redacted);
    let other = read::subject(&client, "user_c9f0f895fb98", 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other.status, "requires_input");
    let canceled = read::subject(&client, "user_45c48cce2e2d", 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(canceled.status, "canceled");

    let t = &broker.topology;
    broker.wait_for_count(&t.events_queue(), 0, DEADLINE).await;
    assert_eq!(broker.message_count(&t.dead_letter_queue()).await, 0);
    let (status, metrics) = worker.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("idv_worker_events_total{event_type=\"identity.verification_session.verified\",outcome=\"applied\"} 1"), "{metrics}");
    assert!(metrics.contains("idv_worker_failed_attempts_total{code=\"document_expired\"} 1"));
    assert_eq!(worker.get("/healthz").await.0, 200);
    worker.stop().await;
}

#[tokio::test]
async fn a_poison_message_is_retried_then_dead_lettered_with_its_reason() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let settings = settings(
        Some(&broker),
        &db,
        &[
            ("WORKER_CONSUMERS", "1"),
            ("WORKER_RETRY_DELAYS", "100ms,200ms,300ms"),
        ],
    );
    migrate(&settings).await;
    let worker = RunningWorker::start(settings).await;
    let t = &broker.topology;
    publish(
        &broker,
        "identity.verification_session.verified",
        b"{not json",
    )
    .await;
    let unknown = fixture("evt_verified.json");
    let unknown = String::from_utf8(unknown).unwrap().replace(
        "\"identity.verification_session.verified\"",
        "\"identity.verification_session.future_kind\"",
    );
    publish(
        &broker,
        "identity.verification_session.future_kind",
        unknown.as_bytes(),
    )
    .await;

    let mut kinds = Vec::new();
    for _ in 0..2 {
        let dead = broker.get(&t.dead_letter_queue(), DEADLINE).await;
        let headers = dead.properties.headers().clone().unwrap();
        let header = |name: &str| headers.inner().get(name).cloned();
        assert_eq!(header("x-idv-attempts"), Some(AMQPValue::LongLongInt(4)));
        assert!(
            matches!(header("x-idv-first-failure-at-ms"), Some(AMQPValue::LongLongInt(ms)) if ms > 0)
        );
        let Some(AMQPValue::LongString(reason)) = header("x-idv-failure-reason") else {
            panic!("no reason header");
        };
        assert!(!reason.to_string().is_empty());
        let Some(AMQPValue::LongString(kind)) = header("x-idv-failure-kind") else {
            panic!("no kind header");
        };
        kinds.push(kind.to_string());
        if kind.to_string() == "unknown_type" {
            assert!(reason.to_string().contains("future_kind"));
            assert_eq!(dead.body, unknown.as_bytes(), "the body is kept unchanged");
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["unknown_type", "unparseable"]);
    assert_eq!(event_count(&db.client().await).await, 0);
    assert!(
        worker
            .metrics
            .encode()
            .contains("idv_worker_message_retries_total{kind=\"unparseable\"} 3")
    );
    worker.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_and_acks_the_work_in_hand() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let settings = settings(
        Some(&broker),
        &db,
        &[("WORKER_CONSUMERS", "2"), ("WORKER_BATCH_SIZE", "20")],
    );
    migrate(&settings).await;
    let total = 3000; // enough that the stop lands mid-stream, even on a fast machine
    for i in 0..total {
        let body = failed(
            &format!("evt_sd{i}"),
            &format!("vs_sd{i}"),
            &format!("user_sd{i}"),
            1_700_000_000,
            "document_expired",
        );
        publish(
            &broker,
            "identity.verification_session.requires_input",
            &body,
        )
        .await;
    }
    let worker = RunningWorker::start(settings).await;
    let client = db.client().await;
    eventually(DEADLINE, "some events committed", || async {
        event_count(&client).await > 50
    })
    .await;
    worker.stop().await;
    let committed = event_count(&client).await;
    let t = &broker.topology;
    let left = i64::from(broker.message_count(&t.events_queue()).await);
    assert!(committed < total, "stopped before the end");
    assert_eq!(
        committed + left,
        total,
        "every message is either committed and acked, or still queued"
    );
    assert_eq!(broker.message_count(&t.dead_letter_queue()).await, 0);
}
