//! The dispatcher's test world: a dispatcher over a test database, run
//! pass by pass until nothing is due, and the outbox as it then stands.
#![allow(clippy::unwrap_used)] // test support: a failed step should stop the test loudly

use std::sync::Arc;
use std::time::Duration;

use worker::dispatch::Dispatcher;
use worker::metrics::Metrics;
use worker::settings::Settings;

/// Settings that make a dispatcher retry at once and often (tests).
pub const FAST_DISPATCH: [(&str, &str); 4] = [
    ("DISPATCH_BACKOFF_MIN_MS", "1"),
    ("DISPATCH_BACKOFF_MAX_SECS", "1"),
    ("DISPATCH_POLL_MS", "20"),
    ("DISPATCH_HTTP_TIMEOUT_MS", "2000"),
];

/// A dispatcher for `settings` (its database migrated), with its metrics.
pub async fn dispatcher(settings: &Settings) -> (Dispatcher, Arc<Metrics>) {
    let pool = worker::store::connect_pool(&settings.database_url, 4)
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::default());
    let dispatcher = Dispatcher::new(settings, pool, Arc::clone(&metrics)).unwrap();
    (dispatcher, metrics)
}

/// Runs passes of `dispatcher` until a pass claims nothing, within
/// `deadline`; returns how many rows were claimed in all. Rows due later
/// (a backoff) are not waited for: see [`dispatch_until`].
pub async fn dispatch_until_idle(dispatcher: &Dispatcher, deadline: Duration) -> usize {
    let until = tokio::time::Instant::now() + deadline;
    let mut claimed = 0;
    loop {
        let pass = tokio::time::timeout_at(until, dispatcher.dispatch_once())
            .await
            .expect("the dispatcher settles within the deadline")
            .expect("PostgreSQL answers");
        if pass.claimed == 0 {
            return claimed;
        }
        claimed += pass.claimed;
    }
}

/// Runs passes of `dispatcher` (pausing briefly between idle ones) until
/// `done` holds of the outbox rows matching `like`, within `deadline`.
pub async fn dispatch_until(
    dispatcher: &Dispatcher,
    client: &tokio_postgres::Client,
    like: &str,
    deadline: Duration,
    done: impl Fn(&[OutboxState]) -> bool,
) -> Vec<OutboxState> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let states = outbox_states(client, like).await;
        if done(&states) {
            return states;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the outbox did not reach the expected state within {deadline:?}: {states:#?}"
        );
        let pass = dispatcher
            .dispatch_once()
            .await
            .expect("PostgreSQL answers");
        if pass.claimed == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One outbox row as the dispatcher left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxState {
    pub kind: String,
    pub idempotency_key: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// The outbox rows whose key matches `like`, by key.
pub async fn outbox_states(client: &tokio_postgres::Client, like: &str) -> Vec<OutboxState> {
    client
        .query(
            "SELECT kind, idempotency_key, status, attempts, last_error FROM outbox \
             WHERE idempotency_key LIKE $1 ORDER BY idempotency_key",
            &[&like],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| OutboxState {
            kind: row.get(0),
            idempotency_key: row.get(1),
            status: row.get(2),
            attempts: row.get(3),
            last_error: row.get(4),
        })
        .collect()
}
