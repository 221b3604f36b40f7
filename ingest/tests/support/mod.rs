//! Helpers for the tests of the `idv-ingest` binary (`binary.rs`,
//! `request_log.rs`): the tests' broker, an `AMQP_PREFIX` of the test's
//! own, and its removal. (The tests crate depends on ingest, so these
//! cannot come from it.)
#![allow(dead_code)] // each test binary uses its own share of them

use lapin::{Connection, ConnectionProperties};
use shared::topology::{self, Topology};

/// The tests' RabbitMQ (`IDV_TEST_AMQP_URL`).
pub fn test_amqp_url() -> String {
    std::env::var("IDV_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// An `AMQP_PREFIX` named like the tests crate's, `test-TAG-…`, so that
/// `deploy/clean-test-debris.sh TAG` finds it (the one run-tag rule:
/// lowercase letters and digits, the first 16).
pub fn test_prefix(what: &str) -> String {
    let tag: String = std::env::var("IDV_TEST_RUN")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(16)
        .collect();
    let tag = if tag.is_empty() {
        "local".to_owned()
    } else {
        tag
    };
    format!("test-{tag}-{what}{}.", std::process::id())
}

/// Deletes the topology ingest declared under `prefix` at `amqp_url`.
pub async fn delete_topology(amqp_url: &str, prefix: &str) {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .expect("the tests' broker answers");
    let channel = connection
        .create_channel()
        .await
        .expect("a channel on the tests' broker");
    let topology = Topology::new(prefix).expect("a test prefix is a valid AMQP_PREFIX");
    topology::delete(&channel, &topology)
        .await
        .expect("the test's topology is deleted");
}

/// Sends SIGTERM to `child` and waits (at most 30 s) for its exit.
pub async fn stop_with_sigterm(mut child: tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().expect("the child is still running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("idv-ingest stops after SIGTERM")
        .expect("its exit status")
}
