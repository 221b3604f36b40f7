//! What `/readyz` reports: consumers attached to the queue, the last batch
//! reaching PostgreSQL, and PostgreSQL answering now. The consumers update
//! [`Health`] as they connect, lose the broker, or retry a batch because
//! PostgreSQL is unavailable; [`Readiness`] adds a cheap check of the
//! database, so an idle worker whose database went away is not ready either.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use deadpool_postgres::Pool;

/// How long an answer of the database counts as current: scrapes within it
/// reuse it, so they cannot hammer PostgreSQL.
pub const DATABASE_CHECK_TTL: Duration = Duration::from_secs(1);

/// Bound on one check (`SELECT 1` on the check's own connection, connecting
/// included): a database slower than this is reported not ready, within a
/// probe's usual one-second timeout.
pub const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Health {
    /// Consumers currently attached to `idv.events`.
    consuming: AtomicUsize,
    /// This process consumes (`WORKER_ROLE` is not `dispatcher`): ready
    /// only while a consumer is attached.
    consumes: AtomicBool,
    /// The last transaction (or start-up check) reached PostgreSQL.
    database_up: AtomicBool,
    /// When a transaction last reached PostgreSQL: recent enough, it spares
    /// `/readyz` a check of its own while the worker is busy.
    database_answered: Mutex<Option<Instant>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            consuming: AtomicUsize::new(0),
            consumes: AtomicBool::new(true),
            database_up: AtomicBool::new(true),
            database_answered: Mutex::new(None),
        }
    }
}

impl Health {
    /// Consuming (unless this process only dispatches), and the last batch
    /// did not find the database unavailable.
    pub fn ready(&self) -> bool {
        let consuming =
            self.consuming.load(Ordering::SeqCst) > 0 || !self.consumes.load(Ordering::SeqCst);
        consuming && self.database_up.load(Ordering::SeqCst)
    }

    /// A dispatcher-only process: ready whenever the database answers.
    pub fn dispatcher_only(&self) {
        self.consumes.store(false, Ordering::SeqCst);
    }

    pub fn consumers(&self) -> usize {
        self.consuming.load(Ordering::SeqCst)
    }

    pub fn set_database_up(&self, up: bool) {
        self.database_up.store(up, Ordering::SeqCst);
        if let Ok(mut answered) = self.database_answered.lock() {
            *answered = up.then(Instant::now);
        }
    }

    /// A transaction reached PostgreSQL within `within`.
    fn database_answered_within(&self, within: Duration) -> bool {
        self.database_answered
            .lock()
            .ok()
            .and_then(|answered| *answered)
            .is_some_and(|at| at.elapsed() < within)
    }

    /// Counts a consumer as attached until the guard drops.
    pub fn attached(&self) -> AttachedGuard<'_> {
        self.consuming.fetch_add(1, Ordering::SeqCst);
        AttachedGuard(self)
    }
}

/// Detaches its consumer from [`Health`] when dropped.
#[derive(Debug)]
pub struct AttachedGuard<'a>(&'a Health);

impl Drop for AttachedGuard<'_> {
    fn drop(&mut self) {
        self.0.consuming.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `/readyz`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReadyReport {
    pub ready: bool,
    pub consumers: usize,
    /// The database answered (a recent transaction or a check).
    pub database: bool,
}

/// [`Health`] plus a check that the database answers now, cached for
/// [`DATABASE_CHECK_TTL`]. Concurrent scrapes wait for one check instead
/// of each running their own. The check has a pool (of one connection) of
/// its own: the lanes' pool can be taken whole by batches waiting on row
/// locks, which says nothing about whether PostgreSQL answers.
#[derive(Debug)]
pub struct Readiness {
    health: Arc<Health>,
    /// The check's own connection, apart from the lanes' pool.
    pool: Pool,
    /// The last check: when it ran and whether the database answered.
    last_check: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl Readiness {
    pub fn new(health: Arc<Health>, pool: Pool) -> Self {
        Self {
            health,
            pool,
            last_check: tokio::sync::Mutex::new(None),
        }
    }

    pub async fn report(&self) -> ReadyReport {
        let database = self.health.database_answered_within(DATABASE_CHECK_TTL)
            || self.database_answers().await;
        ReadyReport {
            ready: self.health.ready() && database,
            consumers: self.health.consumers(),
            database,
        }
    }

    /// `SELECT 1`, at most once per [`DATABASE_CHECK_TTL`].
    async fn database_answers(&self) -> bool {
        let mut last_check = self.last_check.lock().await;
        if let Some((at, answered)) = *last_check
            && at.elapsed() < DATABASE_CHECK_TTL
        {
            return answered;
        }
        let answered = crate::store::answers_within(&self.pool, DATABASE_CHECK_TIMEOUT).await;
        *last_check = Some((Instant::now(), answered));
        answered
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

    use super::*;

    #[test]
    fn a_dispatcher_only_process_is_ready_without_a_consumer() {
        let health = Health::default();
        assert!(!health.ready(), "a consumer must be attached");
        health.dispatcher_only();
        assert!(health.ready());
        health.set_database_up(false);
        assert!(!health.ready());
    }

    /// A "database" that accepts connections and hangs up at once, counting
    /// them: each check of the database is one connection.
    async fn hanging_up_database() -> (Pool, Arc<AtomicU32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        let config = format!("postgres://postgres@127.0.0.1:{port}/idv")
            .parse()
            .unwrap();
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(1)
            .runtime(Runtime::Tokio1)
            .build()
            .unwrap();
        (pool, accepted)
    }

    #[tokio::test]
    async fn scrapes_share_one_check_per_second() {
        let (pool, checks) = hanging_up_database().await;
        let health = Arc::new(Health::default());
        let _attached = health.attached();
        let readiness = Readiness::new(Arc::clone(&health), pool);
        let reports = futures_util::future::join_all((0..20).map(|_| readiness.report())).await;
        assert!(
            reports
                .iter()
                .all(|r| !r.ready && !r.database && r.consumers == 1)
        );
        assert_eq!(checks.load(Ordering::SeqCst), 1, "one check for 20 scrapes");
        assert!(!readiness.report().await.ready);
        assert_eq!(checks.load(Ordering::SeqCst), 1, "still cached");
        tokio::time::sleep(DATABASE_CHECK_TTL).await;
        assert!(!readiness.report().await.ready);
        assert_eq!(checks.load(Ordering::SeqCst), 2, "checked again once stale");
    }

    #[tokio::test]
    async fn a_recent_transaction_counts_as_the_database_answering() {
        let (pool, checks) = hanging_up_database().await;
        let health = Arc::new(Health::default());
        let _attached = health.attached();
        let readiness = Readiness::new(Arc::clone(&health), pool);
        health.set_database_up(true);
        assert!(readiness.report().await.ready);
        assert_eq!(checks.load(Ordering::SeqCst), 0, "no check needed");
        health.set_database_up(false);
        let report = readiness.report().await;
        assert!(!report.ready && !report.database, "the last batch failed");
        assert_eq!(checks.load(Ordering::SeqCst), 1, "and the check too");
    }
}
