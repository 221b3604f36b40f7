//! What the `idv-ingest` binary logs about one request: the line of a
//! refused request names the request (its `X-Request-Id`), so an operator
//! can find it, though the handler opens no span per request (a span's
//! fields were formatted on every request, logged or not).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStderr, Command};

mod support;
use support::{delete_topology, stop_with_sigterm, test_amqp_url, test_prefix};

const BINARY: &str = env!("CARGO_BIN_EXE_idv-ingest");
const REQUEST_ID: &str = "req-log-check-7f3a";

/// The next JSON log line whose message is `message`.
async fn line_with(lines: &mut Lines<BufReader<ChildStderr>>, message: &str) -> serde_json::Value {
    lines_until(lines, message).await.1
}

/// The JSON log lines before the next one whose message is `message`, and
/// that line.
async fn lines_until(
    lines: &mut Lines<BufReader<ChildStderr>>,
    message: &str,
) -> (Vec<serde_json::Value>, serde_json::Value) {
    let mut before = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("idv-ingest exited early");
            let Ok(parsed) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if parsed["message"] == message {
                return (std::mem::take(&mut before), parsed);
            }
            before.push(parsed);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no log line {message:?}"))
}

/// `idv-ingest` on loopback under `prefix`, logging JSON to a pipe, with
/// `extra` settings.
fn ingest_command(amqp_url: &str, prefix: &str, extra: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("INGEST_LISTEN", "127.0.0.1:0")
        .env("INGEST_ADMIN_LISTEN", "127.0.0.1:0")
        .env("STRIPE_WEBHOOK_SECRET", "whsec_x")
        .env("AMQP_URL", amqp_url)
        .env("AMQP_PREFIX", prefix)
        .env("LOG_FORMAT", "json")
        .env("INGEST_SHUTDOWN_DELAY_MS", "0")
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// `listen()` quietly uses the kernel's cap when it is smaller than the
/// backlog asked for; ingest says so, naming both.
#[tokio::test]
async fn a_listen_backlog_above_the_kernels_cap_is_a_warning_naming_both() {
    let cap = ingest::listener::kernel_cap().expect("Linux shows net.core.somaxconn");
    if cap >= 65_535 {
        eprintln!(
            "net.core.somaxconn ({cap}) leaves no backlog above it to ask for: nothing to check"
        );
        return;
    }
    let amqp_url = test_amqp_url();
    let prefix = test_prefix("blg");
    let mut child = ingest_command(&amqp_url, &prefix, &[("INGEST_LISTEN_BACKLOG", "65535")])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let warning = line_with(
        &mut lines,
        "INGEST_LISTEN_BACKLOG is above net.core.somaxconn; the kernel uses net.core.somaxconn instead",
    )
    .await;
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert_eq!(warning["asked"], 65_535, "{warning}");
    assert_eq!(warning["kernel_cap"], cap, "{warning}");
    line_with(&mut lines, "idv-ingest serving").await;
    stop_with_sigterm(child).await;
    delete_topology(&amqp_url, &prefix).await;
}

#[tokio::test]
async fn a_refused_request_is_logged_with_its_request_id() {
    let amqp_url = test_amqp_url();
    let prefix = test_prefix("log");
    let mut child = ingest_command(&amqp_url, &prefix, &[]).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (before, serving) = lines_until(&mut lines, "idv-ingest serving").await;
    // The default backlog is under the kernel's cap: no warning.
    let warnings: Vec<_> = before.iter().filter(|l| l["level"] == "WARN").collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    let port = serving["port"].as_u64().expect("the port is logged");

    // A signature that cannot match: refused with 400 before the body.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", u16::try_from(port).unwrap()))
        .await
        .unwrap();
    let request = format!(
        "POST /webhook HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: {REQUEST_ID}\r\n\
         Stripe-Signature: t=1,v1=00\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    let refused = line_with(&mut lines, "request refused").await;
    assert_eq!(refused["request_id"], REQUEST_ID, "{refused}");
    assert_eq!(refused["outcome"], "bad_signature", "{refused}");

    stop_with_sigterm(child).await;
    delete_topology(&amqp_url, &prefix).await;
}
