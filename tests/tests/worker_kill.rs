//! A worker that dies between committing a batch and acking it loses
//! nothing and applies nothing twice: the broker gives its unacked
//! deliveries to the next worker, which recognises the committed ones as
//! duplicates.
//!
//! The child is this test binary re-run with `IDV_WORKER_CHILD` set,
//! running [`worker::entry::main`], which is all `idv-worker`'s `main`
//! does (settings, logging, multi-threaded runtime, signal handling), so
//! the test needs no separately built binary and works from a clean clone.
//! The test crate builds the worker with its `fail-points` feature, and
//! the child is told to abort right after a commit, before its acks.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use std::process::Stdio;
use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::wait::eventually;
use idv_tests::worker_world::*;

/// Runs a worker as `idv-worker` does when started as the child; a no-op otherwise.
#[test]
fn child_worker_process() {
    run_as_child_worker_if_asked();
}

#[tokio::test]
async fn a_worker_killed_between_commit_and_ack_loses_nothing_and_applies_nothing_twice() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let subjects = 200;
    let distinct = scenario("kl", subjects);
    let worker_settings = settings(Some(&broker), &db, &[]);
    migrate(&worker_settings).await;
    for body in &distinct {
        publish(&broker, &type_of(body), body).await;
    }

    // The child, with one lane so its batches follow each other, commits
    // five batches and dies right after the fifth commit, before acking
    // it: the window this test is about.
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_worker_process", "--nocapture"])
        .env(CHILD, "1")
        .env(worker::fail_point::ABORT_AFTER_COMMIT, "5")
        .env("DATABASE_URL", &db.url)
        .env("AMQP_URL", &broker.url)
        .env("AMQP_PREFIX", &broker.prefix)
        .env("WORKER_ADMIN_LISTEN", "127.0.0.1:0")
        .env("WORKER_CONSUMERS", "1")
        .env("WORKER_BATCH_SIZE", "25")
        .env(FAST_RETRIES.0, FAST_RETRIES.1)
        // lapin's own warnings quote returned messages: kept off, as main does.
        .env("RUST_LOG", "warn,lapin=error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the child worker");
    // Read while it runs, so a chatty child never blocks on a full pipe.
    let mut pipe = child.stderr.take().expect("piped stderr");
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let mut stderr = String::new();
        let _ = pipe.read_to_string(&mut stderr).await;
        stderr
    });
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the child dies at its fail point")
        .expect("the child exits");
    let stderr = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the child's stderr closes with it")
        .expect("reader task");
    {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(
            status.signal(),
            Some(9),
            "the child was killed (SIGKILL) at its fail point: {status:?} {stderr}"
        );
    }
    let unacked: f64 = stderr
        .split("fail point: killing the process after commit 5, before the acks of its ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the child died at the fail point, not elsewhere: {stderr}"));
    let client = db.client().await;
    let at_kill = event_count(&client).await;
    let total = i64::try_from(distinct.len()).unwrap();
    assert!(
        at_kill > 0 && at_kill < total,
        "killed mid-stream ({at_kill} of {total} committed)"
    );

    let survivor = RunningWorker::start(settings(
        Some(&broker),
        &db,
        &[("WORKER_CONSUMERS", "2"), FAST_RETRIES],
    ))
    .await;
    eventually(Duration::from_secs(60), "every event committed", || async {
        event_count(&client).await == total
    })
    .await;
    let t = &broker.topology;
    eventually(
        Duration::from_secs(30),
        "the survivor to take every remaining delivery",
        || async { broker.message_count(&t.events_queue()).await == 0 },
    )
    .await;
    let metrics = survivor.metrics.clone();
    survivor.stop().await;
    broker
        .assert_all_acked(&t.events_queue(), Duration::from_secs(30))
        .await;
    assert_no_message_failed(&broker, &[metrics.encode()]).await;
    assert_no_dead_letters(&db).await;

    // The stream has no duplicates of its own: every duplicate the
    // survivor saw was a delivery the child committed and never acked.
    let text = metrics.encode();
    let duplicates = metric_sum(&text, "idv_worker_duplicates_total");
    let taken = metric_sum(&text, "idv_worker_events_total");
    assert!(
        unacked >= 1.0 && duplicates >= unacked,
        "the {unacked} deliveries committed but not acked came back and were seen as \
         duplicates ({duplicates} duplicates)"
    );
    assert_eq!(
        taken - duplicates,
        (total - at_kill) as f64,
        "the survivor applied exactly what the child had not committed"
    );

    let reference_db = TestDatabase::new().await;
    let reference_settings = settings(None, &reference_db, &[]);
    let reference = store(&reference_settings).await;
    apply_each(&reference, &reference_settings, &distinct).await;
    assert_eq!(
        record(&client, "%kl%").await,
        record(&reference_db.client().await, "%kl%").await,
        "the same record, every outbox row included, as one uninterrupted pass"
    );
}
