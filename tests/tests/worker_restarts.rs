//! Restarts during a PostgreSQL outage dead-letter nothing. On RabbitMQ
//! before 4.0 every return of a delivery to a quorum queue (a killed
//! worker, a closed channel, the consumer timeout) counts toward
//! `x-delivery-limit` (20 on `idv.events`): a worker that took its window
//! while the database could not apply it, killed and restarted a few dozen
//! times by its supervisor, would send healthy events to the DLQ. The
//! worker takes deliveries only once PostgreSQL answers, so a worker
//! started during the outage holds nothing its death could return.
//!
//! The outage: PostgreSQL, through a proxy only this test uses, completes
//! each connection's start-up and then answers nothing (as when a pooler
//! such as PgBouncer still authenticates clients while the server behind
//! it is gone, or PostgreSQL hangs after accepting connections). A worker
//! starts there (its start-up check is a connection), so with no check
//! before consuming it took its window and held it, and each SIGKILL gave
//! the window back with one more delivery counted. A database that refuses
//! connections outright does not show this: the worker then exits 1 at
//! start (`DATABASE_URL` unreachable) and never consumes.
//!
//! The child is this test binary re-run with `IDV_WORKER_CHILD` set,
//! running [`worker::entry::main`], all that `idv-worker`'s `main` does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::proxy::TcpProxy;
use idv_tests::wait::eventually;
use idv_tests::worker_world::*;

const DEADLINE: Duration = Duration::from_secs(60);
/// More restarts than `x-delivery-limit` allows returns.
const RESTARTS: usize = 25;
/// What the worker logs when it decides not to consume yet.
const NOT_CONSUMING: &str = "not consuming until it answers";

/// Runs a worker as `idv-worker` does when started as the child; a no-op otherwise.
#[test]
fn child_worker_process() {
    run_as_child_worker_if_asked();
}

/// A child worker process, its stderr collected as it runs.
struct Child {
    process: Mutex<tokio::process::Child>,
    stderr: Arc<Mutex<String>>,
}

impl Child {
    fn spawn(env: &[(&str, &str)]) -> Self {
        let mut process = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_worker_process", "--nocapture"])
            .env(CHILD, "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the child worker");
        let mut pipe = process.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let collected = Arc::clone(&stderr);
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let mut buffer = [0_u8; 4096];
            while let Ok(n) = pipe.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Self {
            process: Mutex::new(process),
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGKILL, as a supervisor's hard restart or the OOM killer does.
    fn exited(&self) -> Option<std::process::ExitStatus> {
        self.process.lock().unwrap().try_wait().ok().flatten()
    }

    async fn kill(self) {
        let stderr = self.stderr();
        let mut process = self.process.into_inner().unwrap();
        process.start_kill().expect("SIGKILL the child");
        let status = tokio::time::timeout(DEADLINE, process.wait())
            .await
            .expect("the child dies")
            .expect("the child's status");
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(
            status.signal(),
            Some(9),
            "killed, not exited by itself: {stderr}"
        );
    }
}

#[tokio::test]
async fn restarts_during_a_database_outage_dead_letter_nothing() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    migrate(&settings(Some(&broker), &db, &[])).await;
    let total: usize = 100;
    for i in 0..total {
        let body = failed(
            &format!("evt_rs{i}"),
            &format!("vs_rs{i}"),
            &format!("user_rs{i}"),
            1_700_000_000,
            "document_expired",
        );
        publish(&broker, &type_of(&body), &body).await;
    }

    let proxy = TcpProxy::start(db.server_addr()).await;
    proxy.hang_after_startup();
    let through_proxy = db.url_via(proxy.addr());
    let queue = broker.topology.events_queue();
    // Two lanes of batches of 10, a window of 40: a worker that consumed
    // took 40 of the 100 deliveries and held them.
    let env = [
        ("DATABASE_URL", through_proxy.as_str()),
        ("AMQP_URL", broker.url.as_str()),
        ("AMQP_PREFIX", broker.prefix.as_str()),
        ("WORKER_ADMIN_LISTEN", "127.0.0.1:0"),
        ("WORKER_CONSUMERS", "2"),
        ("WORKER_BATCH_SIZE", "10"),
        FAST_RETRIES,
        // lapin's own warnings quote returned messages: kept off, as main does.
        ("RUST_LOG", "info,lapin=error"),
    ];
    for restart in 0..RESTARTS {
        let child = Child::spawn(&env);
        // Killed once it has either decided not to consume, or consumed:
        // a consumer on the queue with deliveries out.
        eventually(
            DEADLINE,
            &format!("child {restart} to consume or decide not to"),
            || async {
                if let Some(status) = child.exited() {
                    panic!(
                        "child {restart} exited by itself: {status:?} {}",
                        child.stderr()
                    );
                }
                if child.stderr().contains(NOT_CONSUMING) {
                    return true;
                }
                let state = broker.queue_state(&queue).await;
                state.consumers > 0 && (state.ready as usize) < total
            },
        )
        .await;
        child.kill().await;
        // The broker has seen it go (and returned what it held) before the next.
        eventually(DEADLINE, "the killed child's consumer gone", || async {
            broker.queue_state(&queue).await.consumers == 0
        })
        .await;
    }
    broker
        .assert_empty(
            &broker.topology.dead_letter_queue(),
            "restarts during the outage dead-lettered healthy events",
        )
        .await;

    // The database answers again: a worker applies every event.
    proxy.cut();
    proxy.restore();
    let worker = RunningWorker::start(settings(
        Some(&broker),
        &db,
        &[
            ("DATABASE_URL", through_proxy.as_str()),
            ("WORKER_CONSUMERS", "2"),
            ("WORKER_BATCH_SIZE", "10"),
            FAST_RETRIES,
        ],
    ))
    .await;
    let client = db.client().await;
    eventually(DEADLINE, "every event committed", || async {
        event_count(&client).await == i64::try_from(total).unwrap()
    })
    .await;
    let attempts: i64 = client
        .query_one("SELECT sum(failed_attempts)::bigint FROM subjects", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, i64::try_from(total).unwrap(), "each counted once");
    let metrics = worker.metrics.clone();
    worker.stop().await;
    broker.assert_all_acked(&queue, DEADLINE).await;
    assert_no_message_failed(&broker, &[metrics.encode()]).await;
    assert_no_dead_letters(&db).await;
}
