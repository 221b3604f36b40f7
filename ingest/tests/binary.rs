//! The `idv-ingest` binary as an operator runs it: configuration errors name
//! the variable, an unreachable broker stops it at start, and SIGTERM stops
//! it cleanly with exit code 0.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::process::{Output, Stdio};
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use shared::topology::{self, Topology};
use tokio::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_idv-ingest");

fn ingest() -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("INGEST_LISTEN", "127.0.0.1:0")
        .env("INGEST_ADMIN_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn finish(command: &mut Command) -> Output {
    tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("idv-ingest exits")
        .expect("idv-ingest runs")
}

#[tokio::test]
async fn a_missing_secret_is_named_and_exits_2() {
    let output = finish(&mut ingest()).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("STRIPE_WEBHOOK_SECRET"), "{stderr}");
    assert!(
        stderr.contains("whsec_"),
        "says what was expected: {stderr}"
    );
}

#[tokio::test]
async fn an_invalid_setting_is_named_with_what_was_expected() {
    let output = finish(
        ingest()
            .env("STRIPE_WEBHOOK_SECRET", "whsec_x")
            .env("INGEST_PUBLISH_TIMEOUT_MS", "soon"),
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid INGEST_PUBLISH_TIMEOUT_MS: expected a whole number"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unreachable_broker_stops_it_at_start() {
    let output = finish(
        ingest()
            .env("STRIPE_WEBHOOK_SECRET", "whsec_x")
            .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to RabbitMQ at AMQP_URL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigterm_stops_it_cleanly() {
    let amqp_url = std::env::var("IDV_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    // Named like the tests crate's, so deploy/clean-test-debris.sh finds it.
    let tag: String = std::env::var("IDV_TEST_RUN")
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let tag = if tag.is_empty() {
        "local".to_owned()
    } else {
        tag.to_ascii_lowercase()
    };
    let prefix = format!("test-{tag}-bin{}.", std::process::id());
    let mut child = ingest()
        .env("STRIPE_WEBHOOK_SECRET", "whsec_x")
        .env("AMQP_URL", &amqp_url)
        .env("AMQP_PREFIX", &prefix)
        .spawn()
        .unwrap();
    // Serving means the broker was reached and the topology declared.
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("idv-ingest serving") {
            let read = stderr.read(&mut buffer).await.unwrap();
            assert!(
                read > 0,
                "idv-ingest exited early: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buffer[..read]);
        }
    })
    .await
    .expect("idv-ingest starts serving");
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("idv-ingest stops after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let connection = Connection::connect(&amqp_url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    topology::delete(&channel, &Topology::new(&prefix).unwrap())
        .await
        .unwrap();
}
