//! Runs `idv-ingest` in-process against a test's own broker namespace.

use std::time::Duration;

use ingest::{Application, Settings};
use shared::config::Env;
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
