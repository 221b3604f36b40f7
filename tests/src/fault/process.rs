//! One of the pipeline's real binaries run as a child process, again and
//! again: each incarnation's stderr is kept (to tell a fail point's death
//! from any other and to list the rows a dispatcher could not mark), and
//! it can be killed as a crash (SIGKILL) or asked to stop (SIGTERM).

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::{Child, Command};

/// How long a process asked to stop may take.
const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// A binary, its arguments and environment, and its current incarnation.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// The task reading the current incarnation's stderr.
    reader: Option<tokio::task::JoinHandle<()>>,
    /// Every incarnation's stderr, one after the other.
    log: Arc<Mutex<String>>,
    /// Where the current incarnation's stderr starts in `log`.
    started_at: usize,
    pub incarnations: u32,
}

impl Proc {
    pub fn new(name: &str, program: PathBuf, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self {
            name: name.to_owned(),
            program,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
            reader: None,
            log: Arc::new(Mutex::new(String::new())),
            started_at: 0,
            incarnations: 0,
        }
    }

    /// Starts a new incarnation with `extra` environment on top.
    pub fn spawn(&mut self, extra: &[(&str, String)]) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.incarnations += 1;
        let mut log = lock(&self.log);
        log.push_str(&format!(
            "--- {} incarnation {} {extra:?}\n",
            self.name, self.incarnations
        ));
        self.started_at = log.len();
        drop(log);
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", self.name));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let log = Arc::clone(&self.log);
        // Read while it runs, so a chatty child never blocks on a full pipe.
        self.reader = Some(tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let mut buffer = [0_u8; 8192];
            while let Ok(n) = pipe.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                lock(&log).push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        }));
        self.child = Some(child);
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The current incarnation's exit status, once it has exited by
    /// itself (and its stderr is read to the end).
    pub async fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        self.finish_reading().await;
        Some(status)
    }

    async fn finish_reading(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
    }

    /// SIGKILL, as a crash: no destructor, no polite close.
    pub async fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.start_kill();
        let status = tokio::time::timeout(STOP_DEADLINE, child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        self.finish_reading().await;
        status
    }

    /// SIGKILL without waiting (for `Drop`, where nothing can be awaited).
    pub fn start_kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }

    /// SIGTERM, as an orchestrator's stop, and the exit that follows.
    pub async fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let status = match tokio::time::timeout(STOP_DEADLINE, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
                None
            }
        };
        self.finish_reading().await;
        status
    }

    /// Every incarnation's stderr so far.
    pub fn log(&self) -> String {
        lock(&self.log).clone()
    }

    /// The current (or last) incarnation's stderr.
    pub fn current_log(&self) -> String {
        lock(&self.log)
            .get(self.started_at..)
            .unwrap_or_default()
            .to_owned()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
