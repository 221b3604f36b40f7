//! The `idv-worker` binary as an operator runs it: a bad setting exits 2
//! naming the variable, an unreachable PostgreSQL or broker or an admin
//! address in use exits 1 naming what failed, and SIGTERM or SIGINT stops a
//! running worker with exit code 0.
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

/// Starts a worker on a migrated database of its own and waits until its
/// `/readyz` says 200 (consuming, the database answering).
async fn start_ready(db: &TestDb, prefix: &TestPrefix) -> Child {
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let mut child = worker(&db.url, prefix, &[("WORKER_ADMIN_LISTEN", &admin)])
        .spawn()
        .unwrap();
    let readyz = format!("http://{admin}/readyz");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().await.unwrap();
            panic!("idv-worker exited with {status}: {}", stderr(&output));
        }
        let ready = reqwest::get(&readyz)
            .await
            .is_ok_and(|response| response.status() == reqwest::StatusCode::OK);
        if ready {
            return child;
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
    let child = start_ready(&db, &prefix).await;
    let pid = child.id().unwrap().to_string();
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success(), "kill -{signal} {pid}");
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("idv-worker stops after the signal")
        .unwrap();
    let stderr = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "SIG{signal}: {stderr}");
    assert!(stderr.contains("stopped"), "logged its stop: {stderr}");
}

#[tokio::test]
async fn sigterm_stops_a_running_worker_with_exit_0() {
    stops_on("TERM").await;
}

#[tokio::test]
async fn sigint_stops_a_running_worker_with_exit_0() {
    stops_on("INT").await;
}
