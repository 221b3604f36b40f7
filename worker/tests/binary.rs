//! The `idv-worker` binary as an operator runs it: a bad setting exits 2
//! naming the variable, an unreachable PostgreSQL or broker or an admin
//! address in use exits 1 naming what failed, and SIGTERM or SIGINT stops a
//! running worker with exit code 0; `--dispatcher-only` dispatches without
//! consuming.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use support::*;
use tokio::process::{Child, Command};

/// `idv-worker` with the test broker under `prefix`, `database_url`, and
/// `extra` variables.
fn worker(database_url: &str, prefix: &TestPrefix, extra: &[(&str, &str)]) -> Command {
    let amqp_url = amqp_url();
    let mut vars = vec![
        ("DATABASE_URL", database_url),
        ("AMQP_URL", &amqp_url),
        ("AMQP_PREFIX", &prefix.prefix),
        ("WORKER_ADMIN_LISTEN", "127.0.0.1:0"),
    ];
    vars.extend_from_slice(extra);
    command(WORKER, &vars)
}

/// The server's maintenance database: reachable, and nothing is written
/// to it by a worker that stops at start.
fn reachable_database() -> String {
    format!("{}/postgres", postgres_url())
}

/// Nothing listens there: a worker that got past its settings would stop
/// with exit code 1, before touching the broker.
const UNREACHABLE_DATABASE: &str = "postgres://postgres@127.0.0.1:1/idv";

fn assert_names(output: &Output, code: i32, what: &str) {
    let stderr = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(what), "names {what}: {stderr}");
    assert!(
        !stderr.contains(PASSWORD),
        "never echoes a password: {stderr}"
    );
}

#[tokio::test]
async fn a_bad_setting_exits_2_naming_it() {
    let prefix = TestPrefix::new();
    let bad_database = format!("postgres://postgres:{PASSWORD}@127.0.0.1:port/idv");
    let bad_amqp = format!("amqp://guest:{PASSWORD}@127.0.0.1:port/%2f");
    for (variable, value) in [
        ("DATABASE_URL", bad_database.as_str()),
        ("AMQP_URL", bad_amqp.as_str()),
        ("RUST_LOG", "info,lapin=loud"),
        ("LOG_FORMAT", "xml"),
        ("WORKER_CONSUMERS", "0"),
        ("WORKER_ADMIN_LISTEN", "localhost"),
        ("IDV_MAX_FAILED_ATTEMPTS", "many"),
    ] {
        let output = finish(&mut worker(
            UNREACHABLE_DATABASE,
            &prefix,
            &[(variable, value)],
        ))
        .await;
        assert_names(&output, 2, &format!("invalid {variable}: expected "));
    }
}

#[tokio::test]
async fn an_unreachable_database_at_start_exits_1_naming_database_url() {
    let database = format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/idv");
    let output = finish(&mut worker(&database, &TestPrefix::new(), &[])).await;
    assert_names(&output, 1, "DATABASE_URL");
}

#[tokio::test]
async fn an_unreachable_broker_at_start_exits_1_naming_amqp_url() {
    let broker = format!("amqp://guest:{PASSWORD}@127.0.0.1:1/%2f");
    let prefix = TestPrefix::new();
    let output = finish(&mut worker(
        &reachable_database(),
        &prefix,
        &[("AMQP_URL", &broker)],
    ))
    .await;
    assert_names(&output, 1, "AMQP_URL");
}

#[tokio::test]
async fn an_admin_address_in_use_exits_1_naming_worker_admin_listen() {
    let prefix = TestPrefix::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = finish(&mut worker(
        &reachable_database(),
        &prefix,
        &[("WORKER_ADMIN_LISTEN", &address)],
    ))
    .await;
    assert_names(&output, 1, "WORKER_ADMIN_LISTEN");
}

/// `line` without ANSI colour sequences (`ESC [ … m`).
fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// A started worker, its stderr read as it runs (so a full pipe never
/// blocks it).
struct Started {
    child: Child,
    /// Everything it wrote to stderr so far.
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Started {
    fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().unwrap();
        let pipe = child.stderr.take().expect("piped stderr");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = std::sync::Arc::clone(&stderr);
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt as _;
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut text = sink.lock().unwrap();
                text.push_str(&without_colours(&line));
                text.push('\n');
            }
        });
        Self {
            child,
            stderr,
            reader,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The admin address the worker bound (`WORKER_ADMIN_LISTEN` port 0),
    /// from its "worker built" line.
    async fn admin_address(&mut self) -> String {
        let start = Instant::now();
        loop {
            let text = self.stderr();
            if let Some(address) = text
                .lines()
                .filter(|line| line.contains("worker built"))
                .find_map(|line| line.split("admin=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
            {
                return address.to_owned();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("idv-worker exited with {status}: {text}");
            }
            assert!(
                start.elapsed() < DEADLINE,
                "idv-worker built within {DEADLINE:?}: {text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal` (`TERM`, `INT`) and waits for the exit, within
    /// [`DEADLINE`]; returns its exit code and stderr.
    async fn signal_and_wait(mut self, signal: &str) -> (Option<i32>, String) {
        let pid = self.child.id().unwrap().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("idv-worker stops after the signal")
            .unwrap();
        let _ = tokio::time::timeout(DEADLINE, self.reader).await;
        let text = self.stderr.lock().unwrap().clone();
        (status.code(), text)
    }
}

/// Starts a worker on a migrated database of its own and waits until its
/// `/readyz` says 200 (consuming, the database answering).
async fn start_ready(db: &TestDb, prefix: &TestPrefix) -> Started {
    let mut started = Started::spawn(worker(&db.url, prefix, &[]));
    let readyz = format!("http://{}/readyz", started.admin_address().await);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = started.child.try_wait().unwrap() {
            panic!("idv-worker exited with {status}: {}", started.stderr());
        }
        let ready = client
            .get(&readyz)
            .send()
            .await
            .is_ok_and(|response| response.status() == reqwest::StatusCode::OK);
        if ready {
            return started;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "idv-worker ready within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `signal` (`TERM`, `INT`) to a ready worker; it must exit 0 by itself.
async fn stops_on(signal: &str) {
    let db = TestDb::migrated().await;
    let prefix = TestPrefix::new();
    let started = start_ready(&db, &prefix).await;
    let (code, stderr) = started.signal_and_wait(signal).await;
    assert_eq!(code, Some(0), "SIG{signal}: {stderr}");
    assert!(
        stderr.contains("worker::startup: stopped"),
        "logged its stop: {stderr}"
    );
}

#[tokio::test]
async fn sigterm_during_start_up_stops_it_with_exit_0() {
    // A "PostgreSQL" that accepts connections and never answers: start-up
    // waits on it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let database = format!("postgres://postgres@{}/idv", silent.local_addr().unwrap());
    let started = Started::spawn(worker(&database, &TestPrefix::new(), &[]));
    let held = tokio::time::timeout(DEADLINE, silent.accept())
        .await
        .expect("the worker connects during its start-up")
        .unwrap();
    let (code, stderr) = started.signal_and_wait("TERM").await;
    drop(held);
    assert_eq!(code, Some(0), "SIGTERM while starting: {stderr}");
    assert!(stderr.contains("stopped during start-up"), "{stderr}");
}

#[tokio::test]
async fn a_closed_stderr_keeps_the_exit_code() {
    let mut command = worker(UNREACHABLE_DATABASE, &TestPrefix::new(), &[]);
    command.stderr(std::process::Stdio::null());
    // A pipe whose reader is gone: writing to it fails with EPIPE.
    let mut child = command
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("idv-worker exits")
        .unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "unreachable database, stderr closed"
    );
}

#[tokio::test]
async fn sigterm_stops_a_running_worker_with_exit_0() {
    stops_on("TERM").await;
}

#[tokio::test]
async fn sigint_stops_a_running_worker_with_exit_0() {
    stops_on("INT").await;
}

#[tokio::test]
async fn a_setting_that_is_not_utf8_is_refused_not_replaced_by_its_default() {
    use std::os::unix::ffi::OsStringExt as _;
    // Were the value dropped, the default (4) would be taken and the
    // worker would go on to fail on the unreachable database (exit 1).
    let consumers = std::ffi::OsString::from_vec(b"4\xff".to_vec());
    let mut command = worker(UNREACHABLE_DATABASE, &TestPrefix::new(), &[]);
    command.env("WORKER_CONSUMERS", consumers);
    let output = finish(&mut command).await;
    assert_names(&output, 2, "invalid WORKER_CONSUMERS");
}

#[tokio::test]
async fn a_broker_that_never_answers_at_start_exits_1_within_the_open_bound() {
    // Accepts AMQP connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let amqp = format!("amqp://guest:guest@{}/%2f", silent.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let output = finish(&mut worker(
        &reachable_database(),
        &TestPrefix::new(),
        &[("AMQP_URL", &amqp)],
    ))
    .await;
    holder.abort();
    assert_names(&output, 1, "AMQP_URL");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "gave up within the open bound, not the test's deadline: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn dispatcher_only_is_ready_without_consuming_and_performs_the_outbox() {
    let db = TestDb::migrated().await;
    let prefix = TestPrefix::new();
    let mut started = Started::spawn({
        let mut command = worker(&db.url, &prefix, &[]);
        command.arg("--dispatcher-only");
        command
    });
    let readyz = format!("http://{}/readyz", started.admin_address().await);
    let client = db.client().await;
    client
        .execute(
            "INSERT INTO outbox (kind, idempotency_key, subject_key, session_id, payload) \
             VALUES ('outcome_message', 'vs_1:verified:outcome_message', 'user_1', 'vs_1', \
             '{\"outcome\": \"verified\", \"occurred_at\": 1700000000}')",
            &[],
        )
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let start = Instant::now();
    loop {
        let ready = http
            .get(&readyz)
            .send()
            .await
            .is_ok_and(|response| response.status() == reqwest::StatusCode::OK);
        let status: String = client
            .query_one("SELECT status FROM outbox", &[])
            .await
            .unwrap()
            .get(0);
        if ready && status == "sent" {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "ready ({ready}) and the row sent ({status}) within {DEADLINE:?}: {}",
            started.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, stderr) = started.signal_and_wait("TERM").await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("dispatcher stopped"), "{stderr}");
    assert!(
        !stderr.contains("consuming"),
        "a dispatcher-only process never consumes: {stderr}"
    );
}

#[tokio::test]
async fn an_unknown_argument_exits_2_naming_it() {
    let prefix = TestPrefix::new();
    let mut command = worker(&reachable_database(), &prefix, &[]);
    command.arg("--dispatch-only");
    let output = finish(&mut command).await;
    assert_names(&output, 2, "--dispatch-only");
}
