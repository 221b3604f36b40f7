//! Fail points, for the tests that must land a crash exactly between two
//! steps (a batch committed, its deliveries not yet acked). Compiled in only
//! with the `fail-points` feature, which the test crate turns on for its
//! tests (a dev-dependency, so no `cargo build`, release or not, has it);
//! without it every fail point is an empty function. Even when compiled
//! in, nothing happens unless the process environment asks for it.

/// `IDV_FAIL_ABORT_AFTER_COMMIT=N`: the process kills itself with SIGKILL,
/// as a crash would (no destructor, no exit handler, no polite close),
/// right after the N-th committed batch of the process and before any of
/// its deliveries is acked. Batches are counted across the process's lanes:
/// run with `WORKER_CONSUMERS=1` to know which batch that is.
pub const ABORT_AFTER_COMMIT: &str = "IDV_FAIL_ABORT_AFTER_COMMIT";

/// Called after a batch of `events` committed and before their acks.
#[inline]
pub fn after_commit(events: usize) {
    #[cfg(feature = "fail-points")]
    enabled::after_commit(events);
    #[cfg(not(feature = "fail-points"))]
    let _ = events;
}

/// `IDV_FAIL_ABORT_AFTER_REPLAY_CONFIRM=N`: `idvctl dlq replay` kills
/// itself with SIGKILL right after the broker confirmed its N-th copy and
/// before the dead letter is marked replayed.
pub const ABORT_AFTER_REPLAY_CONFIRM: &str = "IDV_FAIL_ABORT_AFTER_REPLAY_CONFIRM";

/// Called by `idvctl dlq replay` after a confirm and before the mark.
#[inline]
pub fn after_replay_confirm() {
    #[cfg(feature = "fail-points")]
    enabled::after_replay_confirm();
}

/// `IDV_FAIL_ABORT_AFTER_PERFORM=N`: the dispatcher kills itself with
/// SIGKILL right after its N-th action performed (the other side took it)
/// and before the row is marked `sent`: the window in which a crash makes
/// the next claim perform the row again, with the same idempotency key.
/// Counted across the process's concurrent rows: run with
/// `DISPATCH_BATCH_SIZE=1` to know that exactly one row was in that window.
pub const ABORT_AFTER_PERFORM: &str = "IDV_FAIL_ABORT_AFTER_PERFORM";

/// Called by the dispatcher after a row's action was done and before its mark.
#[inline]
pub fn after_perform(row: i64) {
    #[cfg(feature = "fail-points")]
    enabled::after_perform(row);
    #[cfg(not(feature = "fail-points"))]
    let _ = row;
}

#[cfg(feature = "fail-points")]
mod enabled {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static COMMITS: AtomicU64 = AtomicU64::new(0);
    static ABORT_AT: OnceLock<Option<u64>> = OnceLock::new();

    pub fn after_commit(events: usize) {
        let abort_at = ABORT_AT.get_or_init(|| {
            std::env::var(super::ABORT_AFTER_COMMIT)
                .ok()
                .and_then(|n| n.trim().parse().ok())
        });
        let Some(abort_at) = *abort_at else { return };
        if COMMITS.fetch_add(1, Ordering::SeqCst) + 1 != abort_at {
            return;
        }
        eprintln!(
            "fail point: killing the process after commit {abort_at}, before the acks of its {events} events"
        );
        // This thread (the lane holding the acks) waits here for the signal.
        kill_self();
    }

    static CONFIRMS: AtomicU64 = AtomicU64::new(0);
    static ABORT_AT_CONFIRM: OnceLock<Option<u64>> = OnceLock::new();

    pub fn after_replay_confirm() {
        let abort_at = ABORT_AT_CONFIRM.get_or_init(|| {
            std::env::var(super::ABORT_AFTER_REPLAY_CONFIRM)
                .ok()
                .and_then(|n| n.trim().parse().ok())
        });
        let Some(abort_at) = *abort_at else { return };
        if CONFIRMS.fetch_add(1, Ordering::SeqCst) + 1 != abort_at {
            return;
        }
        eprintln!("fail point: killing the process after confirm {abort_at}, before its mark");
        kill_self();
    }

    static PERFORMS: AtomicU64 = AtomicU64::new(0);
    static ABORT_AT_PERFORM: OnceLock<Option<u64>> = OnceLock::new();

    pub fn after_perform(row: i64) {
        let abort_at = ABORT_AT_PERFORM.get_or_init(|| {
            std::env::var(super::ABORT_AFTER_PERFORM)
                .ok()
                .and_then(|n| n.trim().parse().ok())
        });
        let Some(abort_at) = *abort_at else { return };
        if PERFORMS.fetch_add(1, Ordering::SeqCst) + 1 != abort_at {
            return;
        }
        // The row id (a number, no payload) names the row to be repeated.
        eprintln!(
            "fail point: killing the process after perform {abort_at}, row {row}, before its mark"
        );
        kill_self();
    }

    /// SIGKILL to this process, as a crash: no destructor, no exit handler.
    fn kill_self() -> ! {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        std::process::abort();
    }
}
