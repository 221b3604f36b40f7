//! The `idv-ingest` binary as an operator runs it: configuration errors name
//! the variable, an unreachable broker stops it at start, and SIGTERM stops
//! it cleanly with exit code 0.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::process::{Output, Stdio};
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use shared::topology::{self, Topology};
use tokio::process::Command;

mod support;
use support::{delete_topology, stop_with_sigterm, test_amqp_url, test_prefix};

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
    let amqp_url = test_amqp_url();
    let prefix = test_prefix("bin");
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
    let status = stop_with_sigterm(child).await;
    assert_eq!(status.code(), Some(0));

    delete_topology(&amqp_url, &prefix).await;
}

#[tokio::test]
async fn the_published_test_secret_is_refused_on_a_public_listener() {
    let output = finish(
        ingest()
            .env("STRIPE_WEBHOOK_SECRET", "whsec_live_one,whsec_test_secret")
            .env("INGEST_LISTEN", "0.0.0.0:0"),
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("STRIPE_WEBHOOK_SECRET"), "{stderr}");
    assert!(stderr.contains("INGEST_ALLOW_TEST_SECRET"), "{stderr}");
    assert!(!stderr.contains("whsec_live_one"), "{stderr}");

    // On loopback, or with the opt-in, the settings pass: the unreachable
    // broker is what stops it (exit 1).
    for (listen, allow) in [("127.0.0.1:0", None), ("0.0.0.0:0", Some("true"))] {
        let mut command = ingest();
        command
            .env("STRIPE_WEBHOOK_SECRET", "whsec_test_secret")
            .env("INGEST_LISTEN", listen)
            .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f");
        if let Some(allow) = allow {
            command.env("INGEST_ALLOW_TEST_SECRET", allow);
        }
        let output = finish(&mut command).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{listen}: {stderr}");
        assert!(stderr.contains("cannot connect to RabbitMQ"), "{stderr}");
    }
}

/// Reads `from` to its end into `into`, as it arrives.
fn collect(
    mut from: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    into: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0u8; 8192];
        while let Ok(read) = from.read(&mut buffer).await {
            if read == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buffer[..read]);
        }
    })
}

/// POSTs `body` to `path` on `port` over a raw connection; returns the status line.
async fn post(port: u16, body: &[u8], signature: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nStripe-Signature: {signature}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The port in the `idv-ingest serving` line of a JSON log being collected.
async fn serving_port(stderr: &std::sync::Arc<std::sync::Mutex<Vec<u8>>>) -> u16 {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let text = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
            let serving = text.lines().find_map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).ok()?;
                (value["message"] == "idv-ingest serving").then(|| value["port"].as_u64())?
            });
            if let Some(port) = serving {
                return u16::try_from(port).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("idv-ingest starts serving")
}

/// A client sending heads that are not HTTP cannot fill the log: actix
/// answers them 400 itself and, by default, its per-request parse error is
/// not logged. With the filter ingest used before (`info,lapin=error`) the
/// same garbage is logged, so the garbage does reach the logger.
#[tokio::test]
async fn unparseable_request_heads_do_not_flood_the_default_log() {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    for (rust_log, logged) in [(None, false), (Some("info,lapin=error"), true)] {
        let prefix = test_prefix("garbage");
        let mut command = ingest();
        command
            .env("STRIPE_WEBHOOK_SECRET", "whsec_x")
            .env("AMQP_URL", test_amqp_url())
            .env("AMQP_PREFIX", &prefix)
            .env("LOG_FORMAT", "json");
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let mut child = command.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let reader = collect(child.stderr.take().unwrap(), stderr.clone());
        let port = serving_port(&stderr).await;
        for _ in 0..20 {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            stream
                .write_all(b"\x16\x03\x01 NOT HTTP\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
                .await
                .expect("actix answers or closes")
                .ok();
            let status = String::from_utf8_lossy(&answer);
            assert!(
                answer.is_empty() || status.starts_with("HTTP/1.1 400"),
                "{status}"
            );
        }
        let pid = child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("idv-ingest stops after SIGTERM")
            .unwrap();
        assert_eq!(status.code(), Some(0));
        reader.await.unwrap();
        let log = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
        let parse_errors = log
            .lines()
            .filter(|line| line.contains("actix_http::h1::dispatcher"))
            .count();
        if logged {
            assert!(parse_errors > 0, "RUST_LOG={rust_log:?}: {log}");
        } else {
            assert_eq!(parse_errors, 0, "default filter: {log}");
        }

        delete_topology(&test_amqp_url(), &prefix).await;
    }
}

#[tokio::test]
async fn no_payload_reaches_the_log_even_at_trace() {
    use std::sync::{Arc, Mutex};

    use lapin::options::QueueDeleteOptions;

    let amqp_url = test_amqp_url();
    let prefix = test_prefix("log");
    let topology = Topology::new(&prefix).unwrap();
    let mut child = ingest()
        .env("STRIPE_WEBHOOK_SECRET", "whsec_x")
        .env("AMQP_URL", &amqp_url)
        .env("AMQP_PREFIX", &prefix)
        .env("RUST_LOG", "trace")
        .env("LOG_FORMAT", "json")
        .spawn()
        .unwrap();
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        collect(child.stdout.take().unwrap(), stdout.clone()),
        collect(child.stderr.take().unwrap(), stderr.clone()),
    ];
    let port = serving_port(&stderr).await;

    let event = |id: &str, event_type: &str, marker: &str| {
        serde_json::to_vec(&serde_json::json!({
            "id": id, "object": "event", "type": event_type, "created": 1_767_230_000,
            "livemode": false,
            "data": {"object": {"id": "vs_log", "status": "processing", "client_reference_id": marker}},
        }))
        .unwrap()
    };
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let secret = shared::WebhookSecret::parse("whsec_x").unwrap();
    // A normal publish.
    let published = event(
        "evt_log1",
        "identity.verification_session.processing",
        "MARKER_PUBLISHED_7f3a",
    );
    let status = post(
        port,
        &published,
        &shared::sign_test_header(&secret, &published, now),
    )
    .await;
    assert!(status.contains("200"), "{status}");
    // A returned one: with the unrouted queue gone, an event no binding
    // matches comes back from the broker (the chain check refuses it once
    // it notices, so this is sent at once).
    let connection = Connection::connect(&amqp_url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(
            topology.unrouted_queue().as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    let returned = event("evt_log2", "customer.created", "MARKER_RETURNED_9c1d");
    let status = post(
        port,
        &returned,
        &shared::sign_test_header(&secret, &returned, now),
    )
    .await;
    assert!(status.contains("503"), "{status}");

    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("idv-ingest stops after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    for reader in readers {
        reader.await.unwrap();
    }
    topology::delete(&channel, &topology).await.unwrap();

    let logged = [stdout, stderr]
        .iter()
        .map(|buffer| String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned())
        .collect::<String>();
    assert!(
        logged.contains("evt_log1") && logged.lines().count() > 20,
        "RUST_LOG=trace logs: {} lines",
        logged.lines().count()
    );
    for marker in ["MARKER_PUBLISHED_7f3a", "MARKER_RETURNED_9c1d"] {
        // As text, and as `Debug` prints a `Vec<u8>`: `[77, 65, …]`.
        let bytes = format!("{:?}", marker.as_bytes());
        let bytes = bytes.trim_start_matches('[').trim_end_matches(']');
        let line = logged
            .lines()
            .find(|line| line.contains(marker) || line.contains(bytes));
        assert!(line.is_none(), "{marker} logged: {line:?}");
    }
}

#[tokio::test]
async fn sigterm_during_start_up_stops_it_with_exit_0() {
    // A "broker" that accepts connections and never says a word: start-up
    // waits on it (up to its open bound).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let amqp_url = format!("amqp://guest:guest@{}/%2f", silent.local_addr().unwrap());
    let child = ingest()
        .env("STRIPE_WEBHOOK_SECRET", "whsec_x")
        .env("AMQP_URL", &amqp_url)
        .spawn()
        .unwrap();
    let held = tokio::time::timeout(Duration::from_secs(30), silent.accept())
        .await
        .expect("idv-ingest connects during its start-up")
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output())
        .await
        .expect("idv-ingest stops at once, not after its open bound")
        .unwrap();
    drop(held);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopped during start-up"), "{stderr}");
}
