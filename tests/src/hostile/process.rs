//! The `idv-ingest` binary as a child process, for runs against the
//! release build (the tests run ingest in-process instead).

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::broker::TestBroker;
use crate::fixtures::TEST_SECRET;
use crate::wait::until_ready;

/// A running `idv-ingest`; killed if dropped before [`IngestProcess::stop`].
#[derive(Debug)]
pub struct IngestProcess {
    pub port: u16,
    running: tokio::process::Child,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl IngestProcess {
    /// Starts `binary` on free loopback ports, publishing into `broker`'s
    /// topology, with `settings` on top of the test secret, and waits for
    /// `/readyz`.
    pub async fn start(
        binary: &Path,
        broker: &TestBroker,
        settings: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let (port, admin_port) = (free_port()?, free_port()?);
        let mut child = tokio::process::Command::new(binary);
        child
            .env("INGEST_LISTEN", format!("127.0.0.1:{port}"))
            .env("INGEST_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
            .env("STRIPE_WEBHOOK_SECRET", TEST_SECRET)
            .env("AMQP_URL", &broker.url)
            .env("AMQP_PREFIX", &broker.prefix)
            .env("RUST_LOG", "warn")
            .envs(settings.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::null())
            .kill_on_drop(true);
        let running = child
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        until_ready(admin_port, "idv-ingest", Duration::from_secs(20)).await;
        Ok(Self { port, running })
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.running.id().context("idv-ingest already exited")?;
        let terminated = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        if !terminated.success() {
            bail!("could not signal idv-ingest");
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.running.wait()).await??;
        if !status.success() {
            bail!("idv-ingest exited with {status}");
        }
        Ok(())
    }
}
