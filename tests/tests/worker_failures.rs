//! Infrastructure failures: PostgreSQL taken away (through a proxy only this
//! test uses) pauses the worker: no dead letters, no attempt spent, nothing
//! lost; when it comes back everything is processed without a restart.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a failure should stop the test loudly

use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::proxy::TcpProxy;
use idv_tests::wait::eventually;
use idv_tests::worker_world::*;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn postgres_unavailable_for_a_while_then_everything_is_processed() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let direct = settings(Some(&broker), &db, &[]);
    migrate(&direct).await;
    let proxy = TcpProxy::start(db.server_addr()).await;
    let through_proxy = db.url_via(proxy.addr());
    let worker_settings = settings(
        Some(&broker),
        &db,
        &[
            ("DATABASE_URL", through_proxy.as_str()),
            ("WORKER_CONSUMERS", "2"),
            FAST_RETRIES,
        ],
    );
    let worker = RunningWorker::start(worker_settings).await;
    let client = db.client().await;
    let event = |i: usize| {
        failed(
            &format!("evt_pg{i}"),
            &format!("vs_pg{}", i % 10),
            &format!("user_pg{}", i % 10),
            1_700_000_000 + i64::try_from(i).unwrap(),
            "document_expired",
        )
    };
    for i in 0..10 {
        publish(
            &broker,
            "identity.verification_session.requires_input",
            &event(i),
        )
        .await;
    }
    eventually(DEADLINE, "the first events committed", || async {
        event_count(&client).await == 10
    })
    .await;

    proxy.cut();
    // Two failures per person in all: under the limit of three, so counting
    // any of them twice would show in the sum.
    for i in 10..20 {
        publish(
            &broker,
            "identity.verification_session.requires_input",
            &event(i),
        )
        .await;
    }
    // Ten retries (100 ms doubling, on whichever lanes the people landed):
    // seconds of outage, past any short retry budget a regression might
    // bring. The deadline covers all ten on one lane.
    eventually(
        Duration::from_secs(90),
        "the worker to keep retrying",
        || async { worker.metrics.infrastructure_retries.get() >= 10 },
    )
    .await;
    eventually(DEADLINE, "/readyz to report the outage", || async {
        worker.get("/readyz").await.0 == 503
    })
    .await;
    assert_eq!(
        event_count(&client).await,
        10,
        "nothing is applied while the database is away"
    );
    assert_eq!(
        worker.metric_sum("idv_worker_message_retries_total"),
        0.0,
        "no message attempt spent on the outage"
    );

    proxy.restore();
    eventually(DEADLINE, "every event committed after recovery", || async {
        event_count(&client).await == 20
    })
    .await;
    eventually(DEADLINE, "/readyz to recover", || async {
        worker.get("/readyz").await.0 == 200
    })
    .await;
    let attempts: i64 = client
        .query_one("SELECT sum(failed_attempts)::bigint FROM subjects", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        attempts, 20,
        "ten people with two failures each, counted once"
    );
    let metrics = worker.metrics.clone();
    worker.stop().await;
    broker
        .assert_all_acked(&broker.topology.events_queue(), DEADLINE)
        .await;
    // Counters, not queue samples: a retry or a dead letter at any moment
    // of the outage would show here.
    assert_no_message_failed(&broker, &[metrics.encode()]).await;
    assert_no_dead_letters(&db).await;
}
