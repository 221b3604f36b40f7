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

/// `line` without its ANSI colour codes (`ESC [ … m`), which the text
/// format writes even into a file.
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lines of a log by level.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogLines {
    pub total: usize,
    pub error: usize,
    pub warn: usize,
    pub info: usize,
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
    /// `/readyz`. It logs with its default filter (`RUST_LOG` removed), as
    /// deployed, into the file `log`: what an attack makes it write is
    /// part of what it costs.
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

    /// How many lines a log file holds, and how many at each level
    /// (`ERROR`, `WARN`, `INFO`, as the text format writes them).
    pub fn log_lines(log: &Path) -> anyhow::Result<LogLines> {
        let text = std::fs::read_to_string(log)
            .with_context(|| format!("cannot read {}", log.display()))?;
        let mut lines = LogLines::default();
        for line in text.lines() {
            let line = without_colours(line);
            lines.total += 1;
            if line.contains(" ERROR ") {
                lines.error += 1;
            } else if line.contains(" WARN ") {
                lines.warn += 1;
            } else if line.contains(" INFO ") {
                lines.info += 1;
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
    fn log_lines_are_counted_by_level_with_or_without_colours() {
        let dir = std::env::temp_dir().join(format!("idv-log-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("ingest.log");
        std::fs::write(
            &log,
            "2026-11-29T04:47:29Z \u{1b}[31mERROR\u{1b}[0m actix: x\n\
             2026-11-29T04:47:29Z  WARN ingest: y\n\
             2026-11-29T04:47:29Z  INFO ingest::routes: request refused\n\
             2026-11-29T04:47:29Z \u{1b}[32m INFO\u{1b}[0m ingest: z\n",
        )
        .unwrap();
        let lines = IngestProcess::log_lines(&log).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            lines,
            LogLines {
                total: 4,
                error: 1,
                warn: 1,
                info: 2
            }
        );
    }
}
