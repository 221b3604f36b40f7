//! The pipeline on a real three-node RabbitMQ cluster loses a node, and
//! then the work queue's leader, under load, and every event answered 2xx
//! is applied exactly once; nothing waits forever.
//!
//! The cluster is this machine's own RabbitMQ server started three times by
//! `deploy/rabbitmq-cluster.sh` (AMQP ports 5681-5683), taken down when the
//! test ends however it ends. The real `idv-ingest` binary is pointed at
//! node 1 first and two real `idv-worker` binaries at nodes 2 and 3 first,
//! each with the whole list in `AMQP_URL` to fail over to. A Stripe-like
//! sender POSTs signed events at a steady pace and retries every non-2xx
//! and every connection error until a 2xx. Under that load a node that is
//! not the leader of `idv.events` is shut down; the pipeline must be whole
//! again while it is still down: ingest answering 2xx, events applied,
//! both workers consuming, and each process whose node it was logging that
//! it connected to a live node's address. It is started again, and once
//! the queue's replica there is online again, the leader's node is killed
//! (SIGKILL of its Erlang VM, an abrupt death) with the same demand, and
//! started again. Then the audit: the inbox holds each event answered 2xx
//! exactly once and nothing else, the record equals one built by applying
//! the same events in one uninterrupted pass, every queue is empty and
//! nothing was dead-lettered.
//!
//! One test in this target, so nothing else runs beside the cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

#[path = "rabbitmq_cluster/sender.rs"]
mod sender;

use std::time::{Duration, Instant};

use idv_tests::cluster::TestCluster;
use idv_tests::ctl_binary::binary_under_test;
use idv_tests::database::TestDatabase;
use idv_tests::fixtures::TEST_SECRET;
use idv_tests::service_process::ServiceProcess;
use idv_tests::wait::{eventually, eventually_some};
use idv_tests::worker_world::{
    FAST_RETRIES, apply_each, event_count, metric_sum, migrate, record, scenario, settings, store,
};
use rand::seq::SliceRandom;
use sender::{Ledger, Sender};
use serde_json::Value;

/// The cluster's first AMQP port (the fault run's private node is 5691).
const BASE_PORT: u16 = 5681;
/// How long the pipeline may take to be whole again after a node is lost.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(45);
const DEADLINE: Duration = Duration::from_secs(60);
/// People in the plan, each with 5 to 7 events: more than are sent before
/// the test stops the sender (the rest are never sent).
const SUBJECTS: usize = 600;
/// The pace: about 33 events a second.
const EVERY: Duration = Duration::from_millis(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_a_node_and_then_the_queue_leader_under_load_loses_and_repeats_nothing() {
    let cluster = TestCluster::up("cl", 3, BASE_PORT).await;
    let db = TestDatabase::new().await;
    migrate(&settings(None, &db, &[])).await;
    let prefix = format!(
        "test-{}-{}.",
        idv_tests::run_tag(),
        idv_tests::unique_suffix()
    );
    let topology = shared::topology::Topology::new(&prefix).unwrap();
    let queue = topology.events_queue();

    let (mut ingest, webhook) = start_ingest(&cluster, &prefix).await;
    let mut workers = [
        start_worker(&cluster, 2, &prefix, &db).await,
        start_worker(&cluster, 3, &prefix, &db).await,
    ];
    // The node each process is connected to: ingest, then the workers.
    let mut on_node = [1, 2, 3];

    // Declared while all three nodes were members: a replica on each.
    let (leader, members) = await_leader(&cluster, 1, &queue, 3).await;
    assert_eq!(members, [1, 2, 3], "{queue} has a member on each node");
    let status = cluster.quorum_status(1, &queue).await;
    assert_eq!(
        status.as_ref().and_then(Value::as_array).map(Vec::len),
        Some(3),
        "quorum_status shows three replicas: {status:?}"
    );
    eprintln!("{queue}: leader on node {leader}, members {members:?}");

    let mut events: Vec<(String, Vec<u8>)> = scenario("cl", SUBJECTS)
        .into_iter()
        .map(|body| (event_id(&body), body))
        .collect();
    // Stripe does not order its deliveries.
    events.shuffle(&mut rand::rng());
    let total = events.len();
    let sender = Sender::start(webhook, events, EVERY, 16);
    let client = db.client().await;
    eventually(DEADLINE, "events flowing before the first loss", || async {
        event_count(&client).await >= 100
    })
    .await;

    // A node that is not the leader: the one ingest is on, unless it
    // leads, so that the publisher has to fail over first.
    let follower = if leader == 1 { 2 } else { 1 };
    let processes = [&ingest, &workers[0].0, &workers[1].0];
    let lost_follower = lose_node(
        &cluster,
        Loss::Shutdown(follower),
        &queue,
        &sender.ledger,
        &client,
        processes,
        &mut on_node,
    )
    .await;
    cluster.start_node(follower).await;
    await_all_replicas_online(&cluster, follower, &queue).await;

    let (leader, _) = await_leader(&cluster, follower, &queue, 3).await;
    let lost_leader = lose_node(
        &cluster,
        Loss::Kill(leader),
        &queue,
        &sender.ledger,
        &client,
        processes,
        &mut on_node,
    )
    .await;
    let survivor = if leader == 1 { 2 } else { 1 };
    // After a kill, a survivor may name the dead leader until the election
    // is over: wait for another.
    let new_leader = eventually_some(
        DEADLINE,
        &format!("a new leader of {queue} elected, not node {leader}"),
        || async {
            let (new_leader, _) = cluster.leader_and_members(survivor, &queue).await?;
            (new_leader != leader).then_some(new_leader)
        },
    )
    .await;
    eprintln!("{queue}: node {new_leader} leads after node {leader} was killed");
    cluster.start_node(leader).await;
    await_all_replicas_online(&cluster, leader, &queue).await;
    // Some load on the whole cluster again before stopping.
    let answered = Ledger::count(&sender.ledger.answered_2xx);
    eventually(
        DEADLINE,
        "more events answered after the restart",
        || async { Ledger::count(&sender.ledger.answered_2xx) >= answered + 50 },
    )
    .await;
    let ledger = sender.finish(DEADLINE).await;

    // The audit.
    let accepted = ledger.accepted.lock().unwrap().clone();
    let expected = i64::try_from(accepted.len()).unwrap();
    eventually(DEADLINE, "every event answered 2xx applied", || async {
        event_count(&client).await >= expected
    })
    .await;
    let queues = eventually_some(DEADLINE, "every queue of the test empty", || async {
        let stats = queue_stats(&cluster, 1, &prefix).await;
        let empty = stats.iter().any(|(name, _, _)| *name == queue)
            && stats.iter().all(|(_, messages, _)| *messages == 0);
        empty.then_some(stats)
    })
    .await;
    eprintln!("queues at the end: {queues:?}");
    let rows = client
        .query("SELECT id FROM events ORDER BY id", &[])
        .await
        .unwrap();
    let inbox: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    let answered: Vec<String> = accepted.keys().cloned().collect();
    assert_eq!(
        inbox, answered,
        "the inbox holds exactly the events answered 2xx, each once"
    );
    idv_tests::worker_world::assert_no_dead_letters(&db).await;

    let mut worker_metrics = Vec::new();
    for (worker, admin) in &mut workers {
        worker.assert_running();
        worker_metrics.push(metrics(*admin).await);
    }
    ingest.assert_running();
    for text in &worker_metrics {
        for name in [
            "idv_worker_dead_letters_total",
            "idv_worker_dead_letters_drained_total",
        ] {
            assert_eq!(metric_sum(text, name), 0.0, "{name}");
        }
    }
    let duplicates: f64 = worker_metrics
        .iter()
        .map(|t| metric_sum(t, "idv_worker_duplicates_total"))
        .sum();

    // The record is the one an uninterrupted pass over the same events makes.
    let reference_db = TestDatabase::new().await;
    let reference_settings = settings(None, &reference_db, &[]);
    let reference = store(&reference_settings).await;
    let bodies: Vec<Vec<u8>> = accepted.values().cloned().collect();
    apply_each(&reference, &reference_settings, &bodies).await;
    assert_eq!(
        record(&client, "%cl%").await,
        record(&reference_db.client().await, "%cl%").await,
        "the same record as one uninterrupted pass over the events answered 2xx"
    );

    eprintln!(
        "ledger: {total} events planned, {} sent, {} answered 2xx, {} non-2xx retried, \
         {} connection errors retried; {} applied, {duplicates} duplicates absorbed; \
         recovered {:.1} s after losing follower node {follower}, {:.1} s after losing \
         leader node {leader}",
        Ledger::count(&ledger.sent),
        Ledger::count(&ledger.answered_2xx),
        Ledger::count(&ledger.non_2xx_retried),
        Ledger::count(&ledger.connection_errors_retried),
        inbox.len(),
        lost_follower.as_secs_f64(),
        lost_leader.as_secs_f64(),
    );
    let _ = ingest.stop().await;
    for (worker, _) in workers {
        let _ = worker.stop().await;
    }
}

/// The `id` of an event body.
fn event_id(body: &[u8]) -> String {
    let value: Value = serde_json::from_slice(body).unwrap();
    value["id"].as_str().unwrap().to_owned()
}

/// `idv-ingest` with `AMQP_URL` from node 1; its webhook URL.
async fn start_ingest(cluster: &TestCluster, prefix: &str) -> (ServiceProcess, String) {
    let amqp_url = cluster.amqp_url_from(1);
    let mut ingest = ServiceProcess::spawn(
        "idv-ingest",
        &binary_under_test("idv-ingest-under-test"),
        &[],
        &[
            ("INGEST_LISTEN", "127.0.0.1:0"),
            ("INGEST_ADMIN_LISTEN", "127.0.0.1:0"),
            ("STRIPE_WEBHOOK_SECRET", TEST_SECRET),
            ("AMQP_URL", &amqp_url),
            ("AMQP_PREFIX", prefix),
            ("INGEST_PUBLISH_TIMEOUT_MS", "2000"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info,lapin=error"),
        ],
    );
    let port = ingest
        .log_field("idv-ingest serving", "port", DEADLINE)
        .await;
    (ingest, format!("http://127.0.0.1:{port}/webhook"))
}

/// `idv-worker` (consumer only) with `AMQP_URL` from node `first`; its
/// admin port.
async fn start_worker(
    cluster: &TestCluster,
    first: usize,
    prefix: &str,
    db: &TestDatabase,
) -> (ServiceProcess, u16) {
    let amqp_url = cluster.amqp_url_from(first);
    let mut worker = ServiceProcess::spawn(
        "idv-worker",
        &binary_under_test("idv-worker-under-test"),
        &[],
        &[
            ("DATABASE_URL", &db.url),
            ("AMQP_URL", &amqp_url),
            ("AMQP_PREFIX", prefix),
            ("WORKER_ADMIN_LISTEN", "127.0.0.1:0"),
            ("WORKER_ROLE", "consumer"),
            FAST_RETRIES,
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info,lapin=error"),
        ],
    );
    let admin = worker.log_field("worker built", "admin", DEADLINE).await;
    // `127.0.0.1:PORT`, or the port alone.
    let port = admin.rsplit(':').next().and_then(|p| p.parse().ok());
    (worker, port.expect("an admin port"))
}

/// The leader and members of `queue` once node `k` knows a leader and
/// sees `members` members.
async fn await_leader(
    cluster: &TestCluster,
    k: usize,
    queue: &str,
    members: usize,
) -> (usize, Vec<usize>) {
    eventually_some(
        DEADLINE,
        &format!("{queue} to have a leader and {members} members on node {k}"),
        || async {
            let (leader, mut seen) = cluster.leader_and_members(k, queue).await?;
            seen.sort_unstable();
            (seen.len() == members).then_some((leader, seen))
        },
    )
    .await
}

/// How a node is lost.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// `stop-node K`: a clean shutdown.
    Shutdown(usize),
    /// `stop-node K --kill`: SIGKILL of its Erlang VM.
    Kill(usize),
}

/// The log lines `shared::amqp_addresses` writes when a connect opened:
/// at another address than the one it tried first, or at that one (a
/// process whose open timed out after connecting starts its next connect at
/// the next address, with no failure to report).
const FAILED_OVER: &str = "connected to another broker address";
const CONNECTED: &str = "connected to a broker address";

/// Loses a node under load and returns how long the pipeline took to be
/// whole again without it: a POST answered 2xx, an event applied, both
/// workers consuming `queue` (as the survivor counts them, which may lag
/// by a few seconds), and each of `processes` (ingest, the workers) whose
/// node in `on_node` was the lost one logging, after the loss, that it
/// connected to a live node's address; `on_node` is updated to where they
/// went.
async fn lose_node(
    cluster: &TestCluster,
    loss: Loss,
    queue: &str,
    ledger: &Ledger,
    client: &tokio_postgres::Client,
    processes: [&ServiceProcess; 3],
    on_node: &mut [usize; 3],
) -> Duration {
    let k = match loss {
        Loss::Shutdown(k) | Loss::Kill(k) => k,
    };
    let survivor = if k == 1 { 2 } else { 1 };
    // Only what they log from here on counts.
    let marks = processes.map(|p| p.output().lines().count());
    match loss {
        Loss::Shutdown(k) => cluster.stop_node(k).await,
        Loss::Kill(k) => cluster.kill_node(k).await,
    }
    let lost = Instant::now();
    let (answered, applied) = (
        Ledger::count(&ledger.answered_2xx),
        event_count(client).await,
    );
    let before = *on_node;
    let last_state = std::sync::Mutex::new(String::new());
    *on_node = eventually_some(
        RECOVERY_DEADLINE,
        &format!(
            "the pipeline whole again with node {k} down ({loss:?}; ingest and the workers \
             were on nodes {before:?}, each on node {k} logging that it connected to a live node)"
        ),
        || async {
            let moved: Vec<Option<usize>> = (0..3)
                .map(|i| {
                    if before[i] == k {
                        failed_over_to(processes[i], marks[i], k)
                    } else {
                        Some(before[i])
                    }
                })
                .collect();
            let state = (
                Ledger::count(&ledger.answered_2xx) > answered,
                event_count(client).await > applied,
                consumers(cluster, survivor, queue).await,
                moved,
            );
            // What is still missing, for a failure's story.
            let mut last = last_state.lock().unwrap();
            let shown = format!(
                "answered 2xx: {}, applied: {}, consumers: {:?}, on nodes: {:?}",
                state.0, state.1, state.2, state.3
            );
            if *last != shown {
                eprintln!(
                    "node {k} lost, {:.1} s: {shown}",
                    lost.elapsed().as_secs_f64()
                );
                for (i, node) in state.3.iter().enumerate() {
                    if node.is_none() {
                        let output = processes[i].output();
                        let tail: Vec<&str> = output.lines().skip(marks[i]).collect();
                        eprintln!("process {i} since the loss:\n{}", tail.join("\n"));
                    }
                }
                *last = shown;
            }
            let now_on: Option<Vec<usize>> = state.3.into_iter().collect();
            let now_on = now_on?;
            (state.0 && state.1 && state.2 == Some(2)).then(|| [now_on[0], now_on[1], now_on[2]])
        },
    )
    .await;
    let recovered = lost.elapsed();
    eprintln!(
        "node {k} lost ({loss:?}): the pipeline was whole again after {recovered:?}; \
         ingest and the workers moved from nodes {before:?} to {on_node:?}"
    );
    recovered
}

/// The node `process` last logged [`FAILED_OVER`] or [`CONNECTED`] to, after its first
/// `mark` lines, if that is a node other than `lost`.
fn failed_over_to(process: &ServiceProcess, mark: usize, lost: usize) -> Option<usize> {
    process
        .output()
        .lines()
        .skip(mark)
        .filter_map(|line| {
            let value: Value = serde_json::from_str(line).ok()?;
            if value["message"] != FAILED_OVER && value["message"] != CONNECTED {
                return None;
            }
            // `127.0.0.1:<port>`: node K listens on BASE_PORT + K - 1.
            let port: usize = value["connected_to"]
                .as_str()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            port.checked_sub(usize::from(BASE_PORT)).map(|i| i + 1)
        })
        .last()
        .filter(|&node| node != lost)
}

/// Waits until node `k` sees every replica of `queue` online again (a
/// restarted node serves before its replica has caught up): the next loss
/// and the audit start from three live replicas.
async fn await_all_replicas_online(cluster: &TestCluster, k: usize, queue: &str) {
    eventually(
        DEADLINE,
        &format!("{queue}'s replicas online on nodes 1, 2 and 3, as node {k} sees them"),
        || async { cluster.online_replicas(k, queue).await.as_deref() == Some(&[1, 2, 3][..]) },
    )
    .await;
}

/// Consumers of `queue`, as node `k` sees them.
async fn consumers(cluster: &TestCluster, k: usize, queue: &str) -> Option<u64> {
    let prefix = queue.split('.').next()?;
    queue_stats(cluster, k, prefix)
        .await
        .into_iter()
        .find(|(name, _, _)| name == queue)
        .map(|(_, _, consumers)| consumers)
}

/// (name, messages, consumers) of every queue whose name starts with
/// `prefix`, as node `k` reports them (RabbitMQ refreshes quorum queues'
/// counts every few seconds: callers wait for them).
async fn queue_stats(cluster: &TestCluster, k: usize, prefix: &str) -> Vec<(String, u64, u64)> {
    let queues = cluster
        .tool_json("ctl", k, &["list_queues", "name", "messages", "consumers"])
        .await;
    queues
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|q| {
            let name = q["name"].as_str()?;
            name.starts_with(prefix).then(|| {
                (
                    name.to_owned(),
                    q["messages"].as_u64().unwrap_or(u64::MAX),
                    q["consumers"].as_u64().unwrap_or(0),
                )
            })
        })
        .collect()
}

/// A worker's `/metrics` text.
async fn metrics(admin: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .expect("worker admin answers")
        .text()
        .await
        .expect("metrics body")
}
