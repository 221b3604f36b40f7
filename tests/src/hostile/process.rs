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

/// Lines of a log by level.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogLines {
    pub total: usize,
    pub error: usize,
    pub warn: usize,
    pub info: usize,
    /// Lines that are not a JSON entry with a level (a panic's message,
    /// a settings error).
    pub other: usize,
}

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
    /// `/readyz`. It logs with its default filter (`RUST_LOG` removed) in
    /// JSON (`LOG_FORMAT=json`), as deployed, into the file `log`: what an
    /// attack makes it write is part of what it costs.
    pub async fn start(
        binary: &Path,
        broker: &TestBroker,
        settings: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let (port, admin_port) = (free_port()?, free_port()?);
        if let Some(dir) = log.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = tokio::process::Command::new(binary);
        child
            .env("INGEST_LISTEN", format!("127.0.0.1:{port}"))
            .env("INGEST_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
            .env("STRIPE_WEBHOOK_SECRET", TEST_SECRET)
            .env("AMQP_URL", &broker.url)
            .env("AMQP_PREFIX", &broker.prefix)
            .env_remove("RUST_LOG")
            .env("LOG_FORMAT", "json")
            .envs(settings.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true);
        let running = child
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        until_ready(admin_port, "idv-ingest", Duration::from_secs(20)).await;
        Ok(Self { port, running })
    }

    /// How many lines a JSON log file holds, and how many at each level
    /// (its `level` field: `ERROR`, `WARN`, `INFO`).
    pub fn log_lines(log: &Path) -> anyhow::Result<LogLines> {
        let text = std::fs::read_to_string(log)
            .with_context(|| format!("cannot read {}", log.display()))?;
        let mut lines = LogLines::default();
        for line in text.lines() {
            lines.total += 1;
            let level = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|entry| entry.get("level")?.as_str().map(str::to_owned));
            match level.as_deref() {
                Some("ERROR") => lines.error += 1,
                Some("WARN") => lines.warn += 1,
                Some("INFO") => lines.info += 1,
                Some(_) => {}
                None => lines.other += 1,
            }
        }
        Ok(lines)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_log_lines_are_counted_by_level() {
        let dir = std::env::temp_dir().join(format!("idv-log-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("ingest.log");
        std::fs::write(
            &log,
            concat!(
                r#"{"timestamp":"t","level":"ERROR","fields":{"message":"x"}}"#,
                "\n",
                r#"{"timestamp":"t","level":"WARN","fields":{"message":"INFO"}}"#,
                "\n",
                r#"{"timestamp":"t","level":"INFO","fields":{"message":"request refused"}}"#,
                "\n",
                r#"{"timestamp":"t","level":"INFO","fields":{"message":"z"}}"#,
                "\n",
                "not json\n",
            ),
        )
        .unwrap();
        let lines = IngestProcess::log_lines(&log).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            lines,
            LogLines {
                total: 5,
                error: 1,
                warn: 1,
                info: 2,
                other: 1
            }
        );
    }
}
