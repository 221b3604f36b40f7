//! A process a benchmark measures (idv-ingest, the actix handler, a worker):
//! started from its binary, its CPU time sampled around a phase and its
//! peak memory read after it, then asked to stop with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};

use super::proc_stat::{CpuTime, peak_rss_bytes};
use super::results::ProcessCost;

#[derive(Debug)]
pub struct Child {
    pub name: String,
    inner: tokio::process::Child,
    pid: u32,
}

impl Child {
    /// Starts `binary` with `args` and `env` added to this environment;
    /// its stderr is this one's (a failure shows), its stdout discarded.
    pub fn spawn(
        name: &str,
        binary: &Path,
        args: &[&str],
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let inner = tokio::process::Command::new(binary)
            .args(args)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = inner.id().context("the child exited at once")?;
        Ok(Self {
            name: name.to_owned(),
            inner,
            pid,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Starts counting this process's CPU time (call right before a phase).
    pub fn meter(&self) -> anyhow::Result<Meter> {
        Ok(Meter {
            pid: self.pid,
            name: self.name.clone(),
            started: CpuTime::of(self.pid)?,
        })
    }

    /// SIGTERM, then its exit within 30 s, which must be a success.
    pub async fn terminate(mut self) -> anyhow::Result<()> {
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await?;
        if !sent.success() {
            bail!("could not signal {}", self.name);
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.inner.wait())
            .await
            .with_context(|| format!("{} did not stop within 30 s of SIGTERM", self.name))??;
        if !status.success() {
            bail!("{} exited with {status}", self.name);
        }
        Ok(())
    }
}

/// A process's CPU time since [`Child::meter`].
#[derive(Debug)]
pub struct Meter {
    pid: u32,
    name: String,
    started: CpuTime,
}

impl Meter {
    /// CPU per operation since the start (for `operations` answered), and
    /// the peak resident set so far.
    pub fn finish(self, operations: u64) -> anyhow::Result<ProcessCost> {
        let now = CpuTime::of(self.pid)?;
        Ok(ProcessCost {
            process: self.name,
            cpu_us_per_op: self.started.micros_per_op(now, operations),
            peak_rss_mb: peak_rss_bytes(self.pid)? as f64 / 1e6,
        })
    }
}

/// A binary built beside the running one (target/release/…), or `given`.
pub fn sibling_binary(given: Option<&PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    match given {
        Some(path) => Ok(path.clone()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("no directory beside the bench binary")?
            .join(name)),
    }
}

/// A free port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
