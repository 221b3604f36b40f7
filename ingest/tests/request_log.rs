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
use support::{delete_topology, test_amqp_url, test_prefix};

const BINARY: &str = env!("CARGO_BIN_EXE_idv-ingest");
const REQUEST_ID: &str = "req-log-check-7f3a";

/// The next JSON log line whose message is `message`.
async fn line_with(lines: &mut Lines<BufReader<ChildStderr>>, message: &str) -> serde_json::Value {
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
                return parsed;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no log line {message:?}"))
}

#[tokio::test]
async fn a_refused_request_is_logged_with_its_request_id() {
    let amqp_url = test_amqp_url();
    let prefix = test_prefix("log");
    let mut child = Command::new(BINARY)
        .env_clear()
        .env("INGEST_LISTEN", "127.0.0.1:0")
        .env("INGEST_ADMIN_LISTEN", "127.0.0.1:0")
        .env("STRIPE_WEBHOOK_SECRET", "whsec_x")
        .env("AMQP_URL", &amqp_url)
        .env("AMQP_PREFIX", &prefix)
        .env("LOG_FORMAT", "json")
        .env("INGEST_SHUTDOWN_DELAY_MS", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let serving = line_with(&mut lines, "idv-ingest serving").await;
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

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("idv-ingest stops after SIGTERM")
        .unwrap();
    delete_topology(&amqp_url, &prefix).await;
}
