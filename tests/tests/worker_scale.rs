//! Several workers on one queue are correct together: four workers consume a
//! shuffled stream in which every event appears three times; every worker
//! takes part, every copy after the first is seen as a duplicate, and the
//! result is the record a single sequential pass produces, each event
//! applied once and each side effect written once.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a failure should stop the test loudly

use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::wait::eventually;
use idv_tests::worker_world::*;
use rand::seq::SliceRandom;

/// Also the `fetch_verified_outputs` rows, so every kind is compared.
const FETCH_OUTPUTS: (&str, &str) = ("IDV_FETCH_VERIFIED_OUTPUTS", "true");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_on_a_shuffled_duplicated_stream_apply_each_event_once() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let subjects = 60;
    let distinct = scenario("sc", subjects);
    let mut stream: Vec<Vec<u8>> = distinct
        .iter()
        .flat_map(|b| [b.clone(), b.clone(), b.clone()])
        .collect();
    stream.shuffle(&mut rand::rng());

    let worker_settings = settings(
        Some(&broker),
        &db,
        &[
            ("WORKER_CONSUMERS", "2"),
            ("WORKER_BATCH_SIZE", "16"),
            FETCH_OUTPUTS,
            FAST_RETRIES,
        ],
    );
    migrate(&worker_settings).await;
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(RunningWorker::start(worker_settings.clone()).await);
    }
    for body in &stream {
        publish(&broker, &type_of(body), body).await;
    }
    let client = db.client().await;
    let expected = i64::try_from(distinct.len()).unwrap();
    eventually(
        Duration::from_secs(60),
        "every distinct event committed",
        || async { event_count(&client).await == expected },
    )
    .await;
    let copies = i64::try_from(stream.len()).unwrap();
    eventually(
        Duration::from_secs(30),
        "every copy taken by a worker",
        || async {
            let taken: f64 = workers
                .iter()
                .map(|w| w.metric_sum("idv_worker_events_total"))
                .sum();
            taken == copies as f64
        },
    )
    .await;
    let metrics: Vec<String> = workers.iter().map(|w| w.metrics.encode()).collect();
    for worker in workers {
        worker.stop().await;
    }
    let t = &broker.topology;
    broker
        .assert_all_acked(&t.events_queue(), Duration::from_secs(30))
        .await;
    assert_no_message_failed(&broker, &metrics).await;
    for (i, text) in metrics.iter().enumerate() {
        assert!(
            metric_sum(text, "idv_worker_events_total") > 0.0,
            "worker {i} took part"
        );
    }
    let duplicates: f64 = metrics
        .iter()
        .map(|text| metric_sum(text, "idv_worker_duplicates_total"))
        .sum();
    assert_eq!(
        duplicates,
        (copies - expected) as f64,
        "every copy after the first of each event was seen as a duplicate"
    );

    let reference_db = TestDatabase::new().await;
    let reference_settings = settings(None, &reference_db, &[FETCH_OUTPUTS]);
    let reference = store(&reference_settings).await;
    apply_each(&reference, &reference_settings, &distinct).await;
    let reference_client = reference_db.client().await;
    assert_eq!(
        snapshot(&client, "%sc%").await,
        snapshot(&reference_client, "%sc%").await,
        "concurrent, duplicated and shuffled gives the sequential record"
    );
    for s in 0..subjects {
        let status: String = client
            .query_one(
                "SELECT status FROM subjects WHERE key = $1",
                &[&format!("user_sc{s}")],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(status, scenario_status(s), "subject {s}");
    }

    // Side effects: every kind, row for row. Retry notices are the one kind
    // whose rows still depend on arrival order (a notice is written only
    // for a failure newer than the session's state; issue 8 makes rows a
    // function of the event set): for them, no row the sequential pass
    // would not write. The unique idempotency key already forbids twins.
    let sql = "SELECT kind, idempotency_key, subject_key, session_id FROM outbox \
               WHERE session_id LIKE '%sc%' AND kind <> $1 ORDER BY idempotency_key";
    let keys = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, String, Option<String>, String)> {
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    };
    let retry = "notify_user_retry";
    let concurrent = keys(client.query(sql, &[&retry]).await.unwrap());
    let sequential = keys(reference_client.query(sql, &[&retry]).await.unwrap());
    assert_eq!(
        concurrent, sequential,
        "every other side effect once, as in one pass"
    );
    let mut kinds: Vec<&str> = concurrent.iter().map(|(kind, ..)| kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "alert_reviewers",
            "cancel_stripe_session",
            "fetch_verified_outputs",
            "notify_user_alternative",
            "notify_user_verified",
            "platform_follow_up",
        ],
        "the scenario writes every other kind"
    );
    let retries = "SELECT idempotency_key FROM outbox WHERE kind = $1 AND session_id LIKE '%sc%'";
    let sequential: Vec<String> = reference_client
        .query(retries, &[&retry])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for row in client.query(retries, &[&retry]).await.unwrap() {
        let key: String = row.get(0);
        assert!(
            sequential.contains(&key),
            "retry notice {key} not in the sequential pass"
        );
    }
}
