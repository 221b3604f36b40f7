//! The worker end to end on the real broker and database: the fixtures flow
//! from the events exchange (routed as ingest publishes them) to committed
//! state; a poison message reaches the DLQ with its reason after the
//! retries; shutdown finishes and acks the work in hand.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a failure should stop the test loudly

use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::fixtures::{EVENT_FIXTURES, fixture};
use idv_tests::wait::eventually;
use idv_tests::worker_world::*;
use lapin::types::AMQPValue;
use worker::store::read;

const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_fixtures_flow_to_committed_state() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let settings = settings(
        Some(&broker),
        &db,
        &[("WORKER_CONSUMERS", "2"), FAST_RETRIES],
    );
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

    let (status, metrics) = worker.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("idv_worker_events_total{event_type=\"identity.verification_session.verified\",outcome=\"applied\"} 1"), "{metrics}");
    assert!(metrics.contains("idv_worker_failed_attempts_total{code=\"document_expired\"} 1"));
    assert_eq!(worker.get("/healthz").await.0, 200);
    let metrics = worker.metrics.clone();
    worker.stop().await;
    // Stopped: whatever it had not acked is back in the queue by now.
    broker
        .assert_all_acked(&broker.topology.events_queue(), DEADLINE)
        .await;
    assert_no_message_failed(&broker, &[metrics.encode()]).await;
    assert_no_dead_letters(&db).await;
}

/// The queues a message went through by dead-lettering, from its `x-death`
/// header (the broker's own record), with the reason of each.
fn deaths(headers: &lapin::types::FieldTable) -> Vec<(String, String)> {
    let Some(AMQPValue::FieldArray(entries)) = headers.inner().get("x-death") else {
        return Vec::new();
    };
    let text = |table: &lapin::types::FieldTable, name: &str| match table.inner().get(name) {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        Some(AMQPValue::ShortString(s)) => s.to_string(),
        _ => String::new(),
    };
    let mut deaths: Vec<(String, String)> = entries
        .as_slice()
        .iter()
        .filter_map(|entry| match entry {
            AMQPValue::FieldTable(table) => Some((text(table, "queue"), text(table, "reason"))),
            _ => None,
        })
        .collect();
    deaths.sort();
    deaths
}

#[tokio::test]
async fn a_poison_message_is_retried_then_dead_lettered_with_its_reason() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    // Long enough that three waits are measurable, short enough for a test.
    let delay = Duration::from_millis(400);
    let settings = settings(
        Some(&broker),
        &db,
        &[
            ("WORKER_CONSUMERS", "1"),
            ("WORKER_RETRY_DELAYS", "400ms,400ms,400ms"),
            // This test reads the DLQ itself.
            ("WORKER_DLQ_DRAIN", "off"),
        ],
    );
    migrate(&settings).await;
    let worker = RunningWorker::start(settings).await;
    let t = &broker.topology;
    let published = std::time::Instant::now();
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

    // Each went through the three retry queues, in turn, and waited there.
    let mut expected_deaths: Vec<(String, String)> = shared::topology::RETRY_DELAYS
        .iter()
        .map(|d| (t.retry_queue(*d), "expired".to_owned()))
        .collect();
    expected_deaths.sort();
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let dead = broker.get(&t.dead_letter_queue(), DEADLINE).await;
        let waited = published.elapsed();
        assert!(
            waited >= delay * 3,
            "dead-lettered after {waited:?}: the three retries did not wait"
        );
        let headers = dead.properties.headers().clone().unwrap();
        assert_eq!(
            deaths(&headers),
            expected_deaths,
            "the broker's x-death record"
        );
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
            // The type is in the message's `type` property (ingest sets
            // it); the reason quotes nothing of the body.
            assert_eq!(
                reason.to_string(),
                "the event type is not one the worker handles"
            );
            assert_eq!(
                dead.properties.kind().as_ref().map(|t| t.as_str()),
                Some("identity.verification_session.future_kind")
            );
            assert_eq!(dead.body, unknown.as_bytes(), "the body is kept unchanged");
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["unknown_type", "unparseable"]);
    assert_eq!(event_count(&db.client().await).await, 0);
    let metrics = worker.metrics.encode();
    for kind in ["unparseable", "unknown_type"] {
        assert!(
            metrics.contains(&format!(
                "idv_worker_message_retries_total{{kind=\"{kind}\"}} 3"
            )),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "idv_worker_dead_letters_total{{kind=\"{kind}\"}} 1"
            )),
            "{metrics}"
        );
    }
    worker.stop().await;
}

/// A dead letter's headers say why by class and position, never by quoting
/// the body: secret-looking values in the wrong place (a status, a
/// `created`) are nowhere in them.
#[tokio::test]
async fn a_dead_letter_reason_never_quotes_the_body() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let settings = settings(
        Some(&broker),
        &db,
        // This test reads the DLQ itself.
        &[
            ("WORKER_CONSUMERS", "1"),
            FAST_RETRIES,
            ("WORKER_DLQ_DRAIN", "off"),
        ],
    );
    migrate(&settings).await;
    let worker = RunningWorker::start(settings).await;
    let secrets = ["SSN-123-45-6789", "4111111111111111"];
    let verified = String::from_utf8(fixture("evt_verified.json")).unwrap();
    let bad_status = verified.replace(
        "\"status\": \"verified\"",
        &format!("\"status\": \"{}\"", secrets[0]),
    );
    let created = serde_json::from_str::<serde_json::Value>(&verified).unwrap()["created"].clone();
    let bad_created = verified.replacen(
        &format!("\"created\": {created}"),
        &format!("\"created\": \"{}\"", secrets[1]),
        1,
    );
    assert!(bad_status.contains(secrets[0]) && bad_created.contains(secrets[1]));
    for body in [&bad_status, &bad_created] {
        publish(
            &broker,
            "identity.verification_session.verified",
            body.as_bytes(),
        )
        .await;
    }
    let t = &broker.topology;
    for _ in 0..2 {
        let dead = broker.get(&t.dead_letter_queue(), DEADLINE).await;
        let headers = dead.properties.headers().clone().unwrap();
        let Some(AMQPValue::LongString(reason)) =
            headers.inner().get("x-idv-failure-reason").cloned()
        else {
            panic!("no reason header");
        };
        let reason = reason.to_string();
        assert!(
            reason.starts_with("not a Stripe Identity event: "),
            "{reason}"
        );
        let all_headers = format!("{headers:?}");
        for secret in secrets {
            assert!(!reason.contains(secret), "{secret} in the reason: {reason}");
            assert!(
                !all_headers.contains(secret),
                "{secret} in the headers: {all_headers}"
            );
        }
    }
    worker.stop().await;
}

#[tokio::test]
async fn shutdown_commits_and_acks_the_batch_in_hand() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let settings = settings(
        Some(&broker),
        &db,
        &[
            ("WORKER_CONSUMERS", "1"),
            ("WORKER_BATCH_SIZE", "20"),
            FAST_RETRIES,
        ],
    );
    migrate(&settings).await;
    let client = db.client().await;
    let event = |i: usize, user: &str| {
        failed(
            &format!("evt_sd{i}"),
            &format!("vs_sd{i}"),
            user,
            1_700_000_000,
            "document_expired",
        )
    };
    let worker = RunningWorker::start(settings).await;
    let requires_input = "identity.verification_session.requires_input";
    publish(&broker, requires_input, &event(0, "user_held")).await;
    eventually(DEADLINE, "the first event committed", || async {
        event_count(&client).await == 1
    })
    .await;

    // The next batch starts with an event for the held person: its
    // transaction waits for the test's lock, with the batch in hand.
    let holder = hold_subject_lock(&db, "user_held").await;
    publish(&broker, requires_input, &event(1, "user_held")).await;
    let total = 500;
    for i in 2..total {
        publish(&broker, requires_input, &event(i, &format!("user_sd{i}"))).await;
    }
    eventually(DEADLINE, "a batch waiting on the held row", || async {
        waiting_on_a_lock(&client, &db).await > 0
    })
    .await;
    let metrics = worker.metrics.clone();
    worker.request_stop();
    // Released only after the stop was asked for: the batch in hand then
    // commits and is acked, and the worker takes no other batch.
    holder.batch_execute("ROLLBACK").await.unwrap();
    worker.join().await;

    let committed: Vec<String> = client
        .query("SELECT id FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        committed.contains(&"evt_sd1".to_owned()),
        "the batch in hand when the stop came was committed, not rolled back"
    );
    let committed = i64::try_from(committed.len()).unwrap();
    assert!(
        committed < i64::try_from(total).unwrap(),
        "stopped before the end"
    );
    // The first event's batch, then the one held by the lock: no batch was
    // taken after the stop.
    let text = metrics.encode();
    assert_eq!(
        metric_sum(&text, "idv_worker_batch_size_count"),
        2.0,
        "batches taken: {text}"
    );
    assert_eq!(
        metric_sum(&text, "idv_worker_batch_size_sum"),
        committed as f64,
        "every delivery of those two batches, and only those, committed"
    );
    let t = &broker.topology;
    let left = broker.settled_count(&t.events_queue(), DEADLINE).await;
    assert_eq!(
        committed + i64::from(left),
        i64::try_from(total).unwrap(),
        "every message is either committed and acked, or back in the queue"
    );
    assert_no_message_failed(&broker, &[metrics.encode()]).await;
    assert_no_dead_letters(&db).await;
}
