//! A service binary running as a child process, as an operator runs it:
//! only the environment the test gives it, its output kept as it comes
//! (to learn the ports it bound with port 0, and to show what it said when
//! it dies), stopped with SIGTERM, and killed when the test drops it, even
//! on a panic. (The fault run's `fault::process::Proc` is the one to use
//! for a process restarted again and again on fixed ports.)

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a process may take to stop after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// A running child process and everything it has printed so far.
#[derive(Debug)]
pub struct ServiceProcess {
    /// A name for messages (`idv-ingest`, `prometheus`).
    name: String,
    /// `kill_on_drop`: a test that panics leaves no process behind.
    child: Child,
    /// Its stdout and stderr lines, in the order they arrived.
    output: Arc<Mutex<Vec<String>>>,
}

impl ServiceProcess {
    /// Starts `binary args…` with nothing of the test's environment but
    /// `env`.
    pub fn spawn(name: &str, binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(binary)
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("start {name} ({}): {error}", binary.display()));
        let output = Arc::new(Mutex::new(Vec::new()));
        // Read while it runs, so that a chatty process never blocks on a
        // full pipe.
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(collect_lines(stdout, Arc::clone(&output)));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(collect_lines(stderr, Arc::clone(&output)));
        }
        Self {
            name: name.to_owned(),
            child,
            output,
        }
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    /// How it ended, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Panics with what it printed if it has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited ({status}); it printed:\n{}",
                self.name,
                self.output()
            );
        }
    }

    /// Waits up to `deadline` for a JSON log line whose `message` is
    /// `message` (the services log with `LOG_FORMAT=json`), and returns its
    /// field `field` as text. Panics with what it printed if it exits or
    /// the deadline passes first.
    pub async fn log_field(&mut self, message: &str, field: &str, deadline: Duration) -> String {
        let started = std::time::Instant::now();
        loop {
            let found = self
                .output
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .find_map(|line| {
                    let value: serde_json::Value = serde_json::from_str(line).ok()?;
                    if value["message"] != message {
                        return None;
                    }
                    match &value[field] {
                        serde_json::Value::String(text) => Some(text.clone()),
                        serde_json::Value::Null => None,
                        other => Some(other.to_string()),
                    }
                });
            if let Some(found) = found {
                return found;
            }
            self.assert_running();
            assert!(
                started.elapsed() < deadline,
                "{} did not log {message:?} with {field} within {deadline:?}; it printed:\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(crate::wait::POLL_EVERY).await;
        }
    }

    /// SIGKILL, and waits until it is gone (up to 5 s, blocking: for
    /// `Drop`, where nothing can be awaited).
    pub fn kill_now(&mut self) {
        let _ = self.child.start_kill();
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits for it to exit; returns how it ended.
    pub async fn stop(mut self) -> ExitStatus {
        if let Some(pid) = self.child.id() {
            // No libc here: the `kill` command, as the other process tests do.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(STOP_DEADLINE, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(error)) => panic!("waiting for {}: {error}", self.name),
            Err(_) => panic!(
                "{} did not stop within {STOP_DEADLINE:?} of SIGTERM; it printed:\n{}",
                self.name,
                self.output()
            ),
        }
    }
}

async fn collect_lines(from: impl tokio::io::AsyncRead + Unpin, into: Arc<Mutex<Vec<String>>>) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        into.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
}
