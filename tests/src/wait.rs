//! Waiting for a condition with a deadline, instead of sleeping and hoping.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// Checks `condition` until it holds; panics naming `what` after `deadline`.
/// Each check is bounded by what is left of the deadline, so a check that
/// hangs (a frozen peer) fails the wait instead of hanging the test.
pub async fn eventually<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_some(deadline, what, || {
        let check = condition();
        async move { check.await.then_some(()) }
    })
    .await;
}

/// Waits until the service whose admin listener is on `admin_port` answers
/// `GET /readyz` with 200, as ingest and the worker do once they can work.
pub async fn until_ready(admin_port: u16, service: &str, deadline: Duration) {
    let client = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{admin_port}/readyz");
    eventually(deadline, &format!("{service} to be ready"), || async {
        client
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

/// Like [`eventually`], for a check that yields a value once it holds.
pub async fn eventually_some<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        let result = tokio::time::timeout(left, check()).await;
        // A check cut short by the end of the deadline did not hang.
        let hung = result.is_err() && left >= Duration::from_secs(1);
        if let Ok(Some(value)) = result {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}{}",
            if hung { " (the last check hung)" } else { "" }
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}
