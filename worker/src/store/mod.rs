//! The record in PostgreSQL: a pool, and [`Store::apply`], which applies a
//! batch of events in one transaction and falls back to one transaction per
//! event when the database refuses one of them, so that one bad event does
//! not fail its batch.

mod apply;
pub mod dead_letters;
pub mod dead_letters_admin;
mod error;
pub mod inbox_admin;
mod lock;
pub mod outbox_admin;
mod pool;
pub mod prune;
pub mod read;
mod write;

pub use crate::domain::{Applied, EventOutcome, Rules};
pub use error::{StoreError, Unavailable, error_chain};

/// Every statement of a batch that looks rows up, by name, with the types
/// of its parameters: each must be able to find its rows through an index
/// (`reads_of_a_batch_use_indexes`), or a batch would read whole tables
/// that only grow.
pub const LOOKUPS: [(&str, &str, &[&str]); 12] = {
    let mut all = [("", "", &[] as &[&str]); 12];
    let mut i = 0;
    while i < lock::READS.len() {
        all[i] = lock::READS[i];
        i += 1;
    }
    while i < all.len() {
        all[i] = write::LOOKUPS[i - lock::READS.len()];
        i += 1;
    }
    all
};
pub use pool::{connect_pool, lazy_pool, pg_config};

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::IsolationLevel;

use crate::incoming::{Incoming, MessageFailure};

/// Attempts of a batch whose reads raced a concurrent transaction (see
/// [`apply::apply_batch`]); the next attempt sees its rows. After these,
/// the batch is [`Unavailable::KeptChanging`]: retried with backoff.
const RACE_RETRIES: usize = 3;

/// The pool and the rules: everything a consumer needs to apply events.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    rules: Rules,
}

impl Store {
    pub fn new(pool: Pool, rules: Rules) -> Self {
        Self { pool, rules }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Applies `batch`, one outcome per event in order. `Err` means the
    /// database is unavailable and nothing was committed: retry it all.
    pub async fn apply(
        &self,
        batch: &[&Incoming],
    ) -> Result<Vec<Result<EventOutcome, MessageFailure>>, Unavailable> {
        match self.apply_in_one_transaction(batch).await {
            Ok(outcomes) => Ok(outcomes.into_iter().map(Ok).collect()),
            Err(StoreError::Unavailable(error)) => Err(error),
            Err(StoreError::Refused(reason)) if batch.len() == 1 => {
                Ok(vec![Err(MessageFailure::Refused(reason))])
            }
            Err(StoreError::Refused(_)) => {
                let mut outcomes = Vec::with_capacity(batch.len());
                for event in batch {
                    outcomes.push(match self.apply_in_one_transaction(&[event]).await {
                        Ok(mut one) => one.pop().ok_or_else(|| {
                            MessageFailure::Refused("no outcome for the event".to_owned())
                        }),
                        Err(StoreError::Refused(reason)) => Err(MessageFailure::Refused(reason)),
                        Err(StoreError::Unavailable(error)) => return Err(error),
                    });
                }
                Ok(outcomes)
            }
        }
    }

    async fn apply_in_one_transaction(
        &self,
        batch: &[&Incoming],
    ) -> Result<Vec<EventOutcome>, StoreError> {
        let mut client = self.pool.get().await?;
        for _ in 0..RACE_RETRIES {
            // READ COMMITTED whatever the database's default: each statement
            // sees what committed before it started, so the reads that follow
            // a wait for a row lock (a subject's other sessions, its counted
            // failures) see the transaction that held the lock. Under
            // REPEATABLE READ they would see the snapshot from before the
            // wait, and locking a row another transaction changed meanwhile
            // fails with a serialization error (40001).
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::ReadCommitted)
                .start()
                .await?;
            if let Some(outcomes) = apply::apply_batch(&tx, &self.rules, batch).await? {
                tx.commit().await?;
                return Ok(outcomes);
            }
            // Dropping `tx` rolls it back.
        }
        // Not the events' fault: retried whole with the outage backoff.
        Err(StoreError::Unavailable(Unavailable::KeptChanging))
    }

    /// Whether a connection of the lanes' pool can be had and answers
    /// `SELECT 1` within `timeout` (see [`answers_within`]).
    pub async fn answers_within(&self, timeout: Duration) -> bool {
        answers_within(&self.pool, timeout).await
    }
}

/// `SELECT 1` on a connection of `pool`, within `timeout` in all (waiting
/// for or opening the connection included). A connection whose query timed
/// out may be hung (a frozen peer, a half-open TCP connection): it is taken
/// out of the pool rather than given back, so the next check, or the next
/// batch, connects afresh instead of queueing behind the hung query for
/// good while PostgreSQL answers new connections. Used by `/readyz` and by
/// the consumer before it consumes.
pub async fn answers_within(pool: &Pool, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let Ok(Ok(client)) = tokio::time::timeout_at(deadline, pool.get()).await else {
        return false;
    };
    match tokio::time::timeout_at(deadline, client.simple_query("SELECT 1")).await {
        Ok(answer) => answer.is_ok(),
        Err(_) => {
            drop(deadpool_postgres::Object::take(client));
            false
        }
    }
}
