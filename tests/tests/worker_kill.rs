//! A worker killed mid-batch (SIGKILL to a child process) loses nothing and
//! applies nothing twice: its unacked deliveries go to the next worker, and
//! what it had committed but not acked is recognised as duplicate.
//!
//! The child is this test binary re-run with `IDV_WORKER_CHILD` set, running
//! the worker exactly as `idv-worker`'s `main` does; so the test needs no
//! separately built binary and works from a clean clone.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

#[path = "worker_support/mod.rs"]
mod support;

use std::process::Stdio;
use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::wait::eventually;
use shared::config::Env;
use support::*;

const CHILD: &str = "IDV_WORKER_CHILD";

/// Runs a worker from the environment when started as the child; a no-op otherwise.
#[tokio::test]
async fn child_worker_process() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let settings = worker::settings::Settings::from_env(&Env::from_process()).unwrap();
    let app = worker::app::Application::build(settings).await.unwrap();
    app.run_until_stopped().await.unwrap();
}

#[tokio::test]
async fn a_worker_killed_mid_batch_loses_nothing_and_applies_nothing_twice() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let subjects = 400; // enough that the kill lands mid-stream, even on a fast machine
    let distinct = scenario("kl", subjects);
    let worker_settings = settings(Some(&broker), &db, &[]);
    migrate(&worker_settings).await;
    for body in &distinct {
        publish(&broker, &type_of(body), body).await;
    }

    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_worker_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("DATABASE_URL", &db.url)
        .env("AMQP_URL", &broker.url)
        .env("AMQP_PREFIX", &broker.prefix)
        .env("WORKER_ADMIN_LISTEN", "127.0.0.1:0")
        .env("WORKER_CONSUMERS", "2")
        .env("WORKER_BATCH_SIZE", "25")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the child worker");
    let client = db.client().await;
    let total = i64::try_from(distinct.len()).unwrap();
    eventually(
        Duration::from_secs(60),
        "the child to commit part of the stream",
        || async { event_count(&client).await >= total / 4 },
    )
    .await;
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("the child exits");
    let at_kill = event_count(&client).await;
    assert!(
        at_kill < total,
        "killed before the end ({at_kill} of {total})"
    );

    let survivor =
        RunningWorker::start(settings(Some(&broker), &db, &[("WORKER_CONSUMERS", "2")])).await;
    eventually(Duration::from_secs(60), "every event committed", || async {
        event_count(&client).await == total
    })
    .await;
    let t = &broker.topology;
    broker
        .wait_for_count(&t.events_queue(), 0, Duration::from_secs(30))
        .await;
    survivor.stop().await;
    assert_eq!(broker.message_count(&t.dead_letter_queue()).await, 0);

    let reference_db = TestDatabase::new().await;
    let reference_settings = settings(None, &reference_db, &[]);
    let reference = store(&reference_settings).await;
    apply_each(&reference, &reference_settings, &distinct).await;
    assert_eq!(
        snapshot(&client, "%kl%").await,
        snapshot(&reference_db.client().await, "%kl%").await,
        "the same record as one uninterrupted pass"
    );
    // Side effects that follow the final state appear exactly once each.
    let reference_client = reference_db.client().await;
    for kind in [
        "notify_user_verified",
        "platform_follow_up",
        "alert_reviewers",
        "cancel_stripe_session",
    ] {
        let sql = "SELECT count(*) FROM outbox WHERE kind = $1";
        let n: i64 = client.query_one(sql, &[&kind]).await.unwrap().get(0);
        let expected: i64 = reference_client
            .query_one(sql, &[&kind])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, expected, "{kind} written once per change");
    }
}
