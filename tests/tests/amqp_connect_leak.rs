//! A connect attempt that times out leaves nothing behind. Against a node
//! that accepts TCP and then says nothing, each attempt of
//! `AmqpAddresses::connect` is given up after its bound; lapin's io-loop
//! thread and the socket of that attempt must go with it, or every
//! reconnect loop (ingest, worker, dispatcher, idvctl) grows by a thread and
//! a file descriptor per attempt for as long as the silent node stays up.
//!
//! Its own test binary: it counts the process's threads and descriptors,
//! which tests running beside it in one binary would disturb.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use idv_tests::wait::POLL_EVERY;
use lapin::ConnectionProperties;
use shared::amqp_addresses::{AmqpAddresses, AttemptError};
use tokio::io::AsyncReadExt;

/// Attempts per scheme: a leak of one thread and one descriptor each is
/// well past the tolerance below.
const ATTEMPTS: usize = 10;

/// Threads above the baseline still accepted at the end: a thread or two
/// may start once and stay (the runtime's blocking pool; the fallback
/// runtime of async-compat, which lapin's tokio stream enters to be dropped
/// off a runtime, on the io-loop thread as it ends).
const THREAD_TOLERANCE: usize = 3;

/// Descriptors above the baseline still accepted at the end: that fallback
/// runtime's own (two epoll instances, an eventfd, a socket) come once.
const FD_TOLERANCE: usize = 5;

/// How long the attempts' leftovers get to go away.
const DEADLINE: Duration = Duration::from_secs(10);

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// lapin's io-loop threads alive (its threads are named so): in this
/// binary, only the attempts' own.
fn io_loops() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "lapin-io-loop")
        .count()
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A node that accepts TCP, reads whatever the client sends and never
/// answers; it counts the connections it took and those the client closed
/// (it drops its end then, so its own descriptors do not pile up either).
struct SilentNode {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl SilentNode {
    /// Whether every socket the node accepted has closed (an attempt given
    /// up before its TCP connect, on a stalled machine, opens none), and
    /// what it saw.
    fn all_closed(&self) -> (bool, String) {
        let (accepted, closed) = (
            self.accepted.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
        );
        (
            accepted > 0 && closed == accepted,
            format!("the node saw {closed} of {accepted} accepted sockets closed"),
        )
    }
}

async fn silent_node() -> SilentNode {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (accepted_count, closed_count) = (Arc::clone(&accepted), Arc::clone(&closed));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            accepted_count.fetch_add(1, Ordering::Relaxed);
            let closed_count = Arc::clone(&closed_count);
            tokio::spawn(async move {
                let mut buffer = [0_u8; 4096];
                // Until end of stream or reset: the client let go.
                while let Ok(read) = stream.read(&mut buffer).await
                    && read > 0
                {}
                closed_count.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    SilentNode {
        addr,
        accepted,
        closed,
    }
}

/// The process's threads and descriptors now.
#[derive(Clone, Copy)]
struct Count {
    threads: usize,
    fds: usize,
}

fn count() -> Count {
    Count {
        threads: threads(),
        fds: fds(),
    }
}

/// Waits until no lapin io loop is left and the threads and descriptors
/// are back within tolerance of `before`, and `done` (what else must have
/// happened, and how far it is) holds; fails with the numbers after
/// `DEADLINE`, and prints them on success (for `--nocapture`).
async fn settles(what: &str, before: Count, after: Count, done: impl Fn() -> (bool, String)) {
    let start = Instant::now();
    loop {
        let now = count();
        let io_loops = io_loops();
        let (done, progress) = done();
        let state = format!(
            "{what}: threads {} before, {} right after, {} now ({io_loops} lapin io loops); \
             fds {} before, {} right after, {} now; {progress}; {:?} after the last attempt",
            before.threads,
            after.threads,
            now.threads,
            before.fds,
            after.fds,
            now.fds,
            start.elapsed()
        );
        if done
            && io_loops == 0
            && now.threads <= before.threads + THREAD_TOLERANCE
            && now.fds <= before.fds + FD_TOLERANCE
        {
            eprintln!("{state}");
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "threads, fds or sockets left behind: {state}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// `ATTEMPTS` timed-out attempts at a silent node through `scheme`; then
/// the node must see every socket closed, and the process's threads and
/// descriptors must come back to where they were.
async fn timed_out_attempts_leave_nothing_behind(scheme: &str) {
    let node = silent_node().await;
    let addresses = AmqpAddresses::parse(&format!("{scheme}://guest:guest@{}/%2f", node.addr))
        .unwrap()
        .with_attempt_timeout(Duration::from_millis(200));
    let before = count();
    for attempt in 1..=ATTEMPTS {
        let error = addresses
            .connect(ConnectionProperties::default())
            .await
            .expect_err("a silent node opens no connection");
        assert!(
            matches!(error.failures[..], [(_, AttemptError::Timeout(_))]),
            "{scheme} attempt {attempt}: {error}"
        );
    }
    let after = count();
    settles(&format!("{scheme}, timed out"), before, after, || {
        node.all_closed()
    })
    .await;
}

/// `ATTEMPTS` attempts at a silent node dropped by their caller before
/// their own bound (as a shutdown or an outer timeout does): the same.
async fn dropped_attempts_leave_nothing_behind() {
    let node = silent_node().await;
    let addresses = AmqpAddresses::parse(&format!("amqp://guest:guest@{}/%2f", node.addr))
        .unwrap()
        .with_attempt_timeout(Duration::from_secs(60));
    let before = count();
    for attempt in 1..=ATTEMPTS {
        let connect = addresses.connect(ConnectionProperties::default());
        let outcome = tokio::time::timeout(Duration::from_millis(200), connect).await;
        assert!(outcome.is_err(), "attempt {attempt} ended by itself");
    }
    let after = count();
    settles("amqp, dropped by the caller", before, after, || {
        node.all_closed()
    })
    .await;
}

/// `ATTEMPTS` connections opened at the real broker, then closed: once a
/// connection is open the attempt lets go of its socket, so lapin's close
/// alone ends it.
async fn opened_then_closed_connections_leave_nothing_behind() {
    let addresses = AmqpAddresses::parse(&idv_tests::amqp_url()).unwrap();
    let before = count();
    for _ in 0..ATTEMPTS {
        let connection = addresses
            .connect(ConnectionProperties::default())
            .await
            .expect("the broker opens a connection");
        connection.close(200, "done".into()).await.unwrap();
    }
    let after = count();
    settles("opened, then closed", before, after, || {
        (true, "closed by the client".to_owned())
    })
    .await;
}

#[tokio::test]
async fn a_timed_out_attempt_releases_its_thread_and_socket() {
    // One after the other: each counts against its own baseline.
    // amqp://: the AMQP handshake is what the node never answers.
    timed_out_attempts_leave_nothing_behind("amqp").await;
    // amqps://: the TLS handshake is.
    timed_out_attempts_leave_nothing_behind("amqps").await;
    dropped_attempts_leave_nothing_behind().await;
    opened_then_closed_connections_leave_nothing_behind().await;
}
