//! Infrastructure failures: PostgreSQL taken away (through a proxy only this
//! test uses) pauses the worker: no dead letters, no attempt spent, nothing
//! lost; when it comes back everything is processed without a restart.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a failure should stop the test loudly

#[path = "worker_support/mod.rs"]
mod support;

use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::proxy::TcpProxy;
use idv_tests::wait::eventually;
use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn postgres_unavailable_for_a_while_then_everything_is_processed() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let direct = settings(Some(&broker), &db, &[]);
    migrate(&direct).await;
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let through_proxy = db.url.replace("127.0.0.1:5432", &proxy.addr().to_string());
    assert_ne!(
        through_proxy, db.url,
        "the test database URL goes through the proxy"
    );
    let worker_settings = settings(
        Some(&broker),
        &db,
        &[
            ("DATABASE_URL", through_proxy.as_str()),
            ("WORKER_CONSUMERS", "2"),
            ("WORKER_RETRY_DELAYS", "100ms,100ms,100ms"),
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
    eventually(DEADLINE, "the worker to notice and retry", || async {
        worker.metrics.infrastructure_retries.get() >= 3
    })
    .await;
    eventually(DEADLINE, "/readyz to report the outage", || async {
        worker.get("/readyz").await.0 == 503
    })
    .await;
    let t = &broker.topology;
    assert_eq!(
        event_count(&client).await,
        10,
        "nothing is applied while the database is away"
    );
    assert_eq!(broker.message_count(&t.dead_letter_queue()).await, 0);
    for delay in shared::topology::RETRY_DELAYS {
        assert_eq!(
            broker.message_count(&t.retry_queue(delay)).await,
            0,
            "no attempt spent"
        );
    }

    proxy.restore();
    eventually(DEADLINE, "every event committed after recovery", || async {
        event_count(&client).await == 20
    })
    .await;
    eventually(DEADLINE, "/readyz to recover", || async {
        worker.get("/readyz").await.0 == 200
    })
    .await;
    assert_eq!(broker.message_count(&t.dead_letter_queue()).await, 0);
    let attempts: i64 = client
        .query_one("SELECT sum(failed_attempts)::bigint FROM subjects", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        attempts, 20,
        "ten people with two failures each, counted once"
    );
    let spent = worker
        .metrics
        .encode()
        .lines()
        .filter(|line| line.starts_with("idv_worker_message_retries_total"))
        .filter(|line| !line.ends_with(" 0"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert!(spent.is_empty(), "no message attempt spent: {spent:?}");
    worker.stop().await;
}
