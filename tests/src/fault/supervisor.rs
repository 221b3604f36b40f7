//! A process kept running as an orchestrator keeps it (restarted whenever
//! it dies), while the fault schedule kills it: at a fail point armed
//! with a random count for each incarnation, with SIGKILL at a random
//! moment, or stopped for a while with SIGTERM. A death nobody caused (a
//! panic, an exit with an error) is recorded for the audit.

use std::ops::RangeInclusive;
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::ledger::Ledger;
use super::process::Proc;

/// What a fail point's death says on stderr (`worker::fail_point`).
const FAIL_POINT_DEATH: &str = "fail point: killing the process";

/// What `idv-worker` logs when it exits 1 because PostgreSQL or the broker
/// cannot be reached at start: expected while one is down, and an
/// orchestrator restarts it, as here.
const START_UP_FAILED: &str = r#""message":"start-up failed""#;

/// How long after a death the next incarnation starts (a supervisor's
/// restart delay: no busy loop while a dependency is down).
const RESTART_DELAY: Duration = Duration::from_millis(300);

/// A fail point armed in each incarnation: its variable, the range its
/// count is drawn from, and the ledger's name for its deaths.
#[derive(Debug, Clone)]
pub struct FailPoint {
    pub variable: &'static str,
    pub count: RangeInclusive<u64>,
    pub label: &'static str,
}

/// A supervised process.
#[derive(Debug)]
pub struct Supervised {
    proc: tokio::sync::Mutex<Proc>,
    /// It should be running (false while paused or shut down).
    wanted: AtomicBool,
    /// Faults are injected: each incarnation gets the fail point armed.
    armed: AtomicBool,
    fail_point: Option<FailPoint>,
    ledger: Arc<Ledger>,
    /// Deaths nobody caused, described.
    unexpected: Mutex<Vec<String>>,
    /// No new incarnation before this (after a death).
    next_start: Mutex<std::time::Instant>,
    stop: CancellationToken,
}

impl Supervised {
    /// Starts `proc` (its fail point armed) and keeps it running.
    pub async fn start(
        proc: Proc,
        fail_point: Option<FailPoint>,
        ledger: Arc<Ledger>,
    ) -> Arc<Self> {
        let supervised = Arc::new(Self {
            proc: tokio::sync::Mutex::new(proc),
            wanted: AtomicBool::new(true),
            armed: AtomicBool::new(true),
            fail_point,
            ledger,
            unexpected: Mutex::new(Vec::new()),
            next_start: Mutex::new(std::time::Instant::now()),
            stop: CancellationToken::new(),
        });
        supervised.keep_running().await;
        tokio::spawn(Arc::clone(&supervised).watch());
        supervised
    }

    async fn watch(self: Arc<Self>) {
        while !self.stop.is_cancelled() {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = self.stop.cancelled() => return,
            }
            self.keep_running().await;
        }
    }

    /// Sees a death and starts the next incarnation, if it is wanted.
    async fn keep_running(&self) {
        if !self.wanted.load(Ordering::SeqCst) {
            return;
        }
        let mut proc = self.proc.lock().await;
        if let Some(status) = proc.exited().await {
            self.died(&proc, status);
        }
        let due = *lock(&self.next_start) <= std::time::Instant::now();
        if !proc.is_running() && due && self.wanted.load(Ordering::SeqCst) {
            let extra = match (&self.fail_point, self.armed.load(Ordering::SeqCst)) {
                (Some(point), true) => {
                    let count = rand::rng().random_range(point.count.clone());
                    vec![(point.variable, count.to_string())]
                }
                _ => Vec::new(),
            };
            proc.spawn(&extra);
        }
    }

    /// Classifies a death the schedule did not cause.
    fn died(&self, proc: &Proc, status: ExitStatus) {
        *lock(&self.next_start) = std::time::Instant::now() + RESTART_DELAY;
        let log = proc.current_log();
        match &self.fail_point {
            Some(point) if status.signal() == Some(9) && log.contains(FAIL_POINT_DEATH) => {
                self.ledger.fault(point.label);
            }
            _ if status.code() == Some(1) && log.contains(START_UP_FAILED) => {
                self.ledger
                    .fault("restart found a dependency down (exit 1, restarted)");
            }
            _ => {
                let tail: String = log
                    .lines()
                    .rev()
                    .take(8)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                lock(&self.unexpected).push(format!(
                    "{} (incarnation {}) died by itself: {status:?}\n{tail}",
                    proc.name, proc.incarnations
                ));
            }
        }
    }

    /// SIGKILL now, as a crash at whatever point it is; the next
    /// incarnation follows. Returns whether it was running.
    pub async fn kill_now(&self, label: &str) -> bool {
        let mut proc = self.proc.lock().await;
        if let Some(status) = proc.exited().await {
            self.died(&proc, status);
            return false;
        }
        let killed = proc.kill().await.is_some();
        if killed {
            self.ledger.fault(label);
        }
        killed
    }

    /// Stops it with SIGTERM and keeps it stopped until [`Self::resume`].
    pub async fn pause(&self) {
        self.wanted.store(false, Ordering::SeqCst);
        self.terminate().await;
    }

    pub fn resume(&self) {
        self.wanted.store(true, Ordering::SeqCst);
    }

    /// No more faults: the incarnation running with an armed fail point is
    /// stopped politely and the next runs without one.
    pub async fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
        if self.fail_point.is_some() {
            self.terminate().await;
        }
        self.keep_running().await;
    }

    /// Stops it for good (SIGTERM), recording an unclean exit.
    pub async fn shut_down(&self) {
        self.wanted.store(false, Ordering::SeqCst);
        self.stop.cancel();
        self.terminate().await;
    }

    async fn terminate(&self) {
        let mut proc = self.proc.lock().await;
        if let Some(status) = proc.exited().await {
            self.died(&proc, status);
            return;
        }
        // Dead already (seen by the watch), waiting out its restart delay.
        if !proc.is_running() {
            return;
        }
        match proc.terminate().await {
            Some(status) if status.success() => {}
            // Its fail point came first (finishing the rows in hand).
            Some(status) if status.signal() == Some(9) => self.died(&proc, status),
            // Killed by the SIGTERM itself, before writing a line: it came
            // within the incarnation's first moments, before its runtime
            // installed the handler (the first thing the services do, and
            // before anything they log). No process can stop cleanly then;
            // one that ignored SIGTERM later would have logged by then.
            Some(status) if status.signal() == Some(15) && proc.current_log().trim().is_empty() => {
                self.ledger
                    .fault("SIGTERM within a process's first moments (before its handler)");
            }
            other => lock(&self.unexpected).push(format!(
                "{} (incarnation {}) did not stop cleanly on SIGTERM: {other:?}\n{}",
                proc.name,
                proc.incarnations,
                proc.current_log()
            )),
        }
    }

    /// Every incarnation's stderr.
    pub async fn log(&self) -> String {
        self.proc.lock().await.log()
    }

    /// Incarnations started so far.
    pub async fn incarnations(&self) -> u32 {
        self.proc.lock().await.incarnations
    }

    /// Deaths nobody caused.
    pub fn unexpected(&self) -> Vec<String> {
        lock(&self.unexpected).clone()
    }
}

impl Supervised {
    /// Stops supervising and SIGKILLs the process without waiting: for a
    /// run that panicked, before its broker and database are taken down.
    pub fn abandon(&self) {
        self.wanted.store(false, Ordering::SeqCst);
        self.stop.cancel();
        if let Ok(mut proc) = self.proc.try_lock() {
            proc.start_kill();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
