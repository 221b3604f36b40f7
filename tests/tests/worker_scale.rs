//! Several workers on one queue are correct together: four workers consume a
//! shuffled stream in which every event appears three times; the result is
//! the record a single sequential pass produces, each event applied once.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a failure should stop the test loudly

#[path = "worker_support/mod.rs"]
mod support;

use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::wait::eventually;
use rand::seq::SliceRandom;
use support::*;

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
        &[("WORKER_CONSUMERS", "2"), ("WORKER_BATCH_SIZE", "16")],
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
    let t = &broker.topology;
    broker
        .wait_for_count(&t.events_queue(), 0, Duration::from_secs(30))
        .await;
    for worker in workers {
        worker.stop().await;
    }
    assert_eq!(broker.message_count(&t.dead_letter_queue()).await, 0);

    let reference_db = TestDatabase::new().await;
    let reference_settings = settings(None, &reference_db, &[]);
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
    let count = |kind: &'static str| {
        let client = &client;
        async move {
            let n: i64 = client
                .query_one("SELECT count(*) FROM outbox WHERE kind = $1", &[&kind])
                .await
                .unwrap()
                .get(0);
            n
        }
    };
    assert_eq!(
        count("notify_user_verified").await,
        40,
        "one per verified session"
    );
    assert_eq!(
        count("alert_reviewers").await,
        20,
        "one per subject at the limit"
    );
}
