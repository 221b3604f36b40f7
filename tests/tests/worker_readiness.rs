//! `/readyz` checks the database itself: an idle worker (no event to fail
//! on) whose PostgreSQL goes away, or hangs, through a proxy only this test
//! uses, says 503, and 200 again once it is back, without a restart; a
//! worker whose every lane waits on a row lock is still ready.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::time::{Duration, Instant};

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::proxy::TcpProxy;
use idv_tests::wait::eventually;
use idv_tests::worker_world::*;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

async fn readyz(worker: &RunningWorker) -> (u16, Value) {
    let (status, body) = worker.get("/readyz").await;
    (status, serde_json::from_str(&body).expect("JSON"))
}

/// An idle worker whose PostgreSQL is reached through a proxy the test
/// controls, once it says ready (the broker and database are kept alive by
/// the caller holding them).
async fn ready_worker_behind_a_proxy() -> (TestBroker, TestDatabase, TcpProxy, RunningWorker) {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    migrate(&settings(Some(&broker), &db, &[])).await;
    let proxy = TcpProxy::start(db.server_addr()).await;
    let via_proxy = db.url_via(proxy.addr());
    let worker = RunningWorker::start(settings(
        Some(&broker),
        &db,
        &[("DATABASE_URL", via_proxy.as_str())],
    ))
    .await;
    eventually(DEADLINE, "/readyz 200 once consuming", || async {
        readyz(&worker).await.0 == 200
    })
    .await;
    (broker, db, proxy, worker)
}

#[tokio::test]
async fn an_idle_worker_is_not_ready_while_its_database_is_away() {
    let (_broker, _db, proxy, worker) = ready_worker_behind_a_proxy().await;

    proxy.cut();
    eventually(DEADLINE, "/readyz 503 with the database away", || async {
        let (status, body) = readyz(&worker).await;
        status == 503 && body["database"] == false && body["consumers"] == 1
    })
    .await;

    proxy.restore();
    eventually(DEADLINE, "/readyz 200 with the database back", || async {
        let (status, body) = readyz(&worker).await;
        status == 200 && body["database"] == true
    })
    .await;
    assert_eq!(
        worker.metrics.infrastructure_retries.get(),
        0,
        "no batch met the outage: /readyz found it by itself"
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_hung_database_is_not_ready_and_each_scrape_answers_promptly() {
    let (_broker, _db, proxy, worker) = ready_worker_behind_a_proxy().await;

    // PostgreSQL takes the bytes and never answers.
    proxy.freeze();
    eventually(DEADLINE, "/readyz 503 with the database hung", || async {
        let started = Instant::now();
        let (status, body) = readyz(&worker).await;
        // The check's own bound, and room for a loaded machine. An
        // unbounded check would hang the scrape for good.
        assert!(
            started.elapsed() < worker::health::DATABASE_CHECK_TIMEOUT + Duration::from_secs(2),
            "a scrape took {:?}: the check is not bounded",
            started.elapsed()
        );
        status == 503 && body["database"] == false
    })
    .await;
    // Back, but the frozen connections stay frozen (as half-open TCP
    // connections would): the check must not keep waiting on one.
    proxy.restore();
    eventually(DEADLINE, "/readyz 200 with the database back", || async {
        readyz(&worker).await.0 == 200
    })
    .await;
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_whose_lanes_all_wait_on_a_row_lock_is_still_ready() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let worker_settings = settings(Some(&broker), &db, &[("WORKER_CONSUMERS", "1")]);
    migrate(&worker_settings).await;
    let worker = RunningWorker::start(worker_settings).await;
    let client = db.client().await;
    let event = |i: usize| {
        failed(
            &format!("evt_rl{i}"),
            &format!("vs_rl{i}"),
            "user_rl",
            1_700_000_000,
            "document_expired",
        )
    };
    let requires_input = "identity.verification_session.requires_input";
    publish(&broker, requires_input, &event(0)).await;
    eventually(DEADLINE, "the first event committed", || async {
        event_count(&client).await == 1
    })
    .await;

    // The lane's next batch waits for the test's lock, holding the lane's
    // only pooled connection.
    let holder = hold_subject_lock(&db, "user_rl").await;
    publish(&broker, requires_input, &event(1)).await;
    eventually(DEADLINE, "the lane waiting on the held row", || async {
        waiting_on_a_lock(&client, &db).await > 0
    })
    .await;
    // Past the cached answer and the last transaction's grace: every
    // scrape over two seconds must find PostgreSQL answering.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(2) {
        let (status, body) = readyz(&worker).await;
        assert_eq!(
            (status, &body["database"]),
            (200, &Value::Bool(true)),
            "a busy worker with a healthy database: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    holder.batch_execute("ROLLBACK").await.unwrap();
    eventually(DEADLINE, "the held event committed", || async {
        event_count(&client).await == 2
    })
    .await;
    worker.stop().await;
}

/// The check the consumer runs before consuming (and `/readyz` runs on its
/// own pool) drops a connection whose query timed out: once PostgreSQL
/// answers new connections again, the next check connects afresh. Before,
/// the consumer's check (`ping` inside a timeout) gave the hung connection
/// back to the lanes' pool, and every later check, and batch, drew it again.
#[tokio::test]
async fn a_check_that_timed_out_never_hands_its_hung_connection_back() {
    let db = TestDatabase::new().await;
    let proxy = TcpProxy::start(db.server_addr()).await;
    let url = db.url_via(proxy.addr());
    let settings = settings(None, &db, &[]);
    migrate(&settings).await;
    let pool = worker::store::connect_pool(&url.clone().into(), 1)
        .await
        .unwrap();
    // The checks that must answer get time for a loaded machine (a new
    // connection through the proxy, then `SELECT 1`); the hung one would
    // hang past any bound, so the proof does not depend on it.
    let (answers, hangs) = (Duration::from_secs(5), Duration::from_millis(300));
    assert!(worker::store::answers_within(&pool, answers).await);
    // The pool's one open connection hangs; new ones would too.
    proxy.freeze();
    assert!(!worker::store::answers_within(&pool, hangs).await);
    // New connections go through again; the hung one still hangs.
    proxy.restore();
    assert!(
        worker::store::answers_within(&pool, answers).await,
        "a fresh connection, not the hung one"
    );
    proxy.cut();
}
