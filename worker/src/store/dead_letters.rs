//! The drain's writes to `dead_letters`, the erasure a redaction makes
//! there, the lock that keeps the two apart, and the reads of the
//! dead-letter gauges.
//!
//! The race the lock closes: a batch applying a `redacted` event sets the
//! session's `redacted_at` and erases its dead letters' payloads, while the
//! drain inserts a dead letter of that session with its payload unless the
//! session is redacted. Without a lock, the drain could read the session
//! before the redaction commits and insert after the erasure ran: a payload
//! kept for good. (The session's row lock is no help: a dead letter may
//! name a session that has no row yet, which the redacting batch creates.)
//! Both therefore take a transaction-scoped advisory lock per session,
//! keyed by the session id's hash under a class of our own
//! ([`ERASURE_LOCK_CLASS`]), in key order: whichever commits second sees
//! the other's rows (every transaction here is READ COMMITTED, and the
//! statement after the lock starts after it is granted). The batch takes
//! them after its row locks and the drain takes no row lock, so no cycle
//! can form.

use deadpool_postgres::Transaction;
use tokio_postgres::Error;
use tokio_postgres::types::ToSql;

use crate::dead_letter::DeadLetter;

/// The first key of the erasure's advisory locks ("idv" and 1), so that
/// they share no key with any other advisory lock of the database.
pub const ERASURE_LOCK_CLASS: i32 = 0x6964_7601;

/// Locks, in key order, the sessions named by `$1` (NULLs skipped) against
/// a concurrent erasure or drain (see the module's doc).
pub const LOCK_SESSIONS: &str = "SELECT pg_advisory_xact_lock(1768191489, k) \
     FROM (SELECT DISTINCT hashtext(id) AS k FROM unnest($1::text[]) AS id \
     WHERE id IS NOT NULL ORDER BY k) AS keys";

/// Erases the payloads of the dead letters of the sessions `$1`.
pub const ERASE_PAYLOADS: &str = "UPDATE dead_letters \
     SET payload = NULL, payload_erased_at = now() \
     WHERE session_id = ANY($1) AND payload IS NOT NULL";

/// Inserts the rows in arrival order; one whose session is redacted
/// already is stored without its payload; a fingerprint already there (the
/// same DLQ message delivered again) is skipped.
const INSERT: &str = "INSERT INTO dead_letters (fingerprint, event_id, event_type, session_id, \
     event_created, routing_key, reason, kind, attempts, first_failure_at, last_failure_at, \
     payload, payload_erased_at) \
     SELECT d.fingerprint, d.event_id, d.event_type, d.session_id, d.created, d.routing_key, \
     d.reason, d.kind, d.attempts, to_timestamp(d.first_ms / 1000.0), \
     to_timestamp(d.last_ms / 1000.0), \
     CASE WHEN s.redacted_at IS NULL THEN d.payload END, \
     CASE WHEN s.redacted_at IS NOT NULL THEN now() END \
     FROM unnest($1::bytea[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], \
     $7::text[], $8::text[], $9::int4[], $10::int8[], $11::int8[], $12::bytea[]) \
     WITH ORDINALITY AS d(fingerprint, event_id, event_type, session_id, created, routing_key, \
     reason, kind, attempts, first_ms, last_ms, payload, n) \
     LEFT JOIN sessions s ON s.id = d.session_id \
     ORDER BY d.n \
     ON CONFLICT (fingerprint) DO NOTHING";

/// Dead letters not replayed yet, and the age of the oldest in seconds
/// (0 when there is none): read through the `dead_letters_waiting`
/// partial index.
const WAITING: &str = "SELECT count(*), \
     COALESCE(EXTRACT(EPOCH FROM now() - min(dead_lettered_at))::float8, 0) \
     FROM dead_letters WHERE replayed_at IS NULL";

/// Inserts `rows` (see [`INSERT`]) under the sessions' erasure locks;
/// returns how many were new. The caller commits.
pub async fn insert(tx: &Transaction<'_>, rows: &[DeadLetter]) -> Result<u64, Error> {
    let (lock, insert) =
        tokio::try_join!(tx.prepare_cached(LOCK_SESSIONS), tx.prepare_cached(INSERT))?;
    let sessions: Vec<Option<&str>> = rows.iter().map(|r| r.session_id.as_deref()).collect();
    let fingerprints: Vec<&[u8]> = rows.iter().map(|r| &r.fingerprint[..]).collect();
    let event_ids: Vec<Option<&str>> = rows.iter().map(|r| r.event_id.as_deref()).collect();
    let types: Vec<Option<&str>> = rows.iter().map(|r| r.event_type.as_deref()).collect();
    let created: Vec<Option<i64>> = rows.iter().map(|r| r.event_created).collect();
    let keys: Vec<&str> = rows.iter().map(|r| r.routing_key.as_str()).collect();
    let reasons: Vec<&str> = rows.iter().map(|r| r.reason.as_str()).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    let attempts: Vec<i32> = rows.iter().map(|r| r.attempts).collect();
    let first: Vec<i64> = rows.iter().map(|r| r.first_failure_at_ms).collect();
    let last: Vec<i64> = rows.iter().map(|r| r.last_failure_at_ms).collect();
    let payloads: Vec<&[u8]> = rows.iter().map(|r| r.payload.as_slice()).collect();
    let locked: [&(dyn ToSql + Sync); 1] = [&sessions];
    let params: [&(dyn ToSql + Sync); 12] = [
        &fingerprints,
        &event_ids,
        &types,
        &sessions,
        &created,
        &keys,
        &reasons,
        &kinds,
        &attempts,
        &first,
        &last,
        &payloads,
    ];
    let (_, inserted) = tokio::try_join!(
        biased; // sent, run and failed in this order: the lock first
        tx.execute(&lock, &locked),
        tx.execute(&insert, &params),
    )?;
    Ok(inserted)
}

/// What the dead-letter gauges show.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Waiting {
    /// Rows with `replayed_at IS NULL`.
    pub count: i64,
    /// Age of the oldest such row's `dead_lettered_at`, 0 if none.
    pub oldest_age_seconds: f64,
}

/// Reads [`Waiting`].
pub async fn waiting(client: &tokio_postgres::Client) -> Result<Waiting, Error> {
    let row = client.query_one(WAITING, &[]).await?;
    Ok(Waiting {
        count: row.try_get(0)?,
        oldest_age_seconds: row.try_get(1)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_taken_under_our_class() {
        let class = format!("pg_advisory_xact_lock({ERASURE_LOCK_CLASS}, k)");
        assert!(LOCK_SESSIONS.contains(&class), "{LOCK_SESSIONS}");
    }
}
