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
            FAST_RETRIES,
            EVERY_SINK[0],
            EVERY_SINK[1],
            EVERY_SINK[2],
            EVERY_SINK[3],
            EVERY_SINK[4],
            EVERY_SINK[5],
            EVERY_SINK[6],
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
    assert_no_dead_letters(&db).await;
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
    let reference_settings = settings(None, &reference_db, &EVERY_SINK);
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

    // Side effects: every kind, row for row, as in one sequential pass.
    let sql = "SELECT kind, idempotency_key, payload FROM outbox \
               WHERE idempotency_key LIKE '%sc%' ORDER BY idempotency_key";
    let rows = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, String, serde_json::Value)> {
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    };
    let concurrent = rows(client.query(sql, &[]).await.unwrap());
    let sequential = rows(reference_client.query(sql, &[]).await.unwrap());
    assert_eq!(
        concurrent, sequential,
        "every side effect once, as in one pass"
    );
    let mut kinds: Vec<&str> = concurrent.iter().map(|(kind, ..)| kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "cancel_stripe_session",
            "compare_verified_outputs",
            "notify_user_alternative",
            "notify_user_retry",
            "notify_user_verified",
            "outcome_message",
            "outcome_webhook",
        ],
        "the scenario writes every kind"
    );
}
