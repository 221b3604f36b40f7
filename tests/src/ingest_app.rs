//! Runs `idv-ingest` in-process against a test's own broker namespace.

use std::time::Duration;

use ingest::{Application, Settings};
use shared::config::Env;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::broker::TestBroker;
use crate::fixtures::{TEST_SECRET, sign_now};

/// A running ingest service.
#[derive(Debug)]
pub struct TestIngest {
    /// `http://127.0.0.1:{port}`
    pub address: String,
    /// `http://127.0.0.1:{admin port}`
    pub admin_address: String,
    pub client: reqwest::Client,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A processing event for ingest's publisher, as a request would make it:
/// `body` with the ids given.
pub fn outgoing_event(
    body: &[u8],
    event_id: &'static str,
    request_id: &'static str,
) -> ingest::publisher::OutgoingEvent<'static> {
    ingest::publisher::OutgoingEvent {
        body: body.to_vec().into(),
        event_id,
        event_type: "identity.verification_session.processing",
        created: 1_767_225_900,
        request_id,
        received_at_ms: 1_767_225_900_000,
    }
}

/// The settings a test ingest runs with, before `overrides`.
pub fn test_env(broker: &TestBroker, overrides: &[(&str, &str)]) -> Env {
    let mut pairs: Vec<(String, String)> = [
        ("INGEST_LISTEN", "127.0.0.1:0"),
        ("INGEST_ADMIN_LISTEN", "127.0.0.1:0"),
        ("STRIPE_WEBHOOK_SECRET", TEST_SECRET),
        ("AMQP_URL", broker.url.as_str()),
        ("AMQP_PREFIX", broker.prefix.as_str()),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    pairs.extend(
        overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Env::from_pairs(pairs)
}

impl TestIngest {
    /// Builds and starts ingest for `broker`, with settings `overrides`.
    pub async fn spawn(broker: &TestBroker, overrides: &[(&str, &str)]) -> Self {
        let settings = Settings::from_env(&test_env(broker, overrides)).expect("valid settings");
        let application = Application::build(settings).await.expect("ingest builds");
        let address = format!("http://127.0.0.1:{}", application.port());
        let admin_address = format!("http://127.0.0.1:{}", application.admin_port());
        let stop = CancellationToken::new();
        let task = tokio::spawn(application.run_until_stopped(stop.clone().cancelled_owned()));
        Self {
            address,
            admin_address,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
            stop,
            task: Some(task),
        }
    }

    /// POSTs `body` with the given `Stripe-Signature` (none when `None`).
    pub async fn post(&self, body: Vec<u8>, signature: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/webhook", self.address))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        request.send().await.expect("ingest answers")
    }

    /// POSTs `body` signed now with the test secret.
    pub async fn post_signed(&self, body: Vec<u8>) -> reqwest::Response {
        let signature = sign_now(TEST_SECRET, &body);
        self.post(body, Some(&signature)).await
    }

    /// A raw connection to the webhook listener, for requests no HTTP client
    /// would send: a body that stops and never finishes.
    pub async fn raw_connection(&self) -> RawConnection {
        let addr = self.address.trim_start_matches("http://");
        RawConnection {
            stream: TcpStream::connect(addr).await.expect("ingest listens"),
        }
    }

    /// GETs an admin path; returns status and body.
    pub async fn admin(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.admin_address))
            .send()
            .await
            .expect("admin answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("admin body"))
    }

    /// The value of one metric line (`name{labels}`), or 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.admin("/metrics").await;
        text.lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok())?
            })
            .unwrap_or(0.0)
    }

    /// Asks ingest to stop and returns how its run ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.join().await
    }

    /// The token that stops this ingest, for tests that stop it mid-request.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits for the run to end after the stop token was cancelled.
    pub async fn join(mut self) -> anyhow::Result<()> {
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestIngest {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A TCP connection to the webhook listener driven byte by byte. It stays
/// open, whatever was sent, until it is dropped.
#[derive(Debug)]
pub struct RawConnection {
    stream: TcpStream,
}

impl RawConnection {
    /// Sends the head of `POST /webhook` with `headers`.
    pub async fn send_head(&mut self, headers: &[(&str, &str)]) {
        let mut head = String::from("POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        self.send(head.as_bytes()).await;
    }

    /// Sends `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("ingest reads");
        self.stream.flush().await.expect("ingest reads");
    }

    /// Sends `data` as one chunk of a `Transfer-Encoding: chunked` body.
    pub async fn send_chunk(&mut self, data: &[u8]) {
        let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
        chunk.extend_from_slice(data);
        chunk.extend_from_slice(b"\r\n");
        self.send(&chunk).await;
    }

    /// Reads one response: its status and body. `Err` says why none came
    /// within `deadline` (silence, or the connection closed first).
    pub async fn response(&mut self, deadline: Duration) -> Result<(u16, String), String> {
        let until = tokio::time::Instant::now() + deadline;
        let mut received = Vec::new();
        loop {
            if let Some(response) = parse_response(&received) {
                return Ok(response);
            }
            let mut buffer = [0_u8; 4096];
            let read = tokio::time::timeout_at(until, self.stream.read(&mut buffer))
                .await
                .map_err(|_| {
                    format!(
                        "no complete response within {deadline:?}; received {:?}",
                        String::from_utf8_lossy(&received)
                    )
                })?
                .map_err(|error| format!("reading the response: {error}"))?;
            if read == 0 {
                return Err(format!(
                    "connection closed before a complete response; received {:?}",
                    String::from_utf8_lossy(&received)
                ));
            }
            received.extend_from_slice(&buffer[..read]);
        }
    }
}

impl RawConnection {
    /// Whether ingest closes the connection within `deadline` (a read
    /// returns 0, or fails on a reset), discarding whatever else it sends.
    /// With `trickle`, sends it as one chunk of a chunked body every
    /// 100 ms meanwhile, ignoring write errors.
    pub async fn closed_within(&mut self, deadline: Duration, trickle: Option<&[u8]>) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        let mut buffer = [0_u8; 4096];
        loop {
            tokio::select! {
                read = self.stream.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                },
                () = tokio::time::sleep_until(until) => return false,
                () = tokio::time::sleep(Duration::from_millis(100)), if trickle.is_some() => {
                    if let Some(data) = trickle {
                        let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
                        chunk.extend_from_slice(data);
                        chunk.extend_from_slice(b"\r\n");
                        let _ = self.stream.write_all(&chunk).await;
                    }
                }
            }
        }
    }
}

/// Status and body of a complete HTTP/1.1 response with a `Content-Length`.
fn parse_response(received: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(received);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let length: usize = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())?;
    (body.len() >= length).then(|| (status, body[..length].to_owned()))
}
