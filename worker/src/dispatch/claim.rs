//! The dispatcher's statements: claim due rows, read what is true of them
//! now, and mark each with what became of it.
//!
//! A claim is a lease: `FOR UPDATE SKIP LOCKED` keeps two dispatchers off
//! the same rows while they claim, and `claimed_until` off them while one
//! performs (every action is cut off well within the lease). A dispatcher
//! that died holding a claim loses it when the lease runs out, and the row
//! is performed again, with the same idempotency key. Marks carry the
//! claim's token, so a dispatcher whose lease ran out cannot mark a row
//! another has claimed since.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::Client;
use tokio_postgres::Error;

const CLAIM: &str = "WITH due AS ( \
       SELECT id FROM outbox \
        WHERE status = 'pending' AND due_at <= now() \
          AND (claimed_until IS NULL OR claimed_until < now()) \
        ORDER BY due_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) \
     UPDATE outbox o SET claimed_until = now() + make_interval(secs => $2::float8), \
            claim_token = $3, attempts = o.attempts + 1, rearmed = false \
       FROM due WHERE o.id = due.id \
     RETURNING o.id, o.kind, o.idempotency_key, o.subject_key, o.session_id, o.payload, \
               o.attempts, o.created_at";

/// What is true now of each claimed row's session and subject: the
/// session's subject as it stands (a limit row's own subject otherwise).
const FACTS: &str = "SELECT o.id, COALESCE(s.subject_key, o.subject_key), \
       s.status, s.last_event_id, s.redacted_at IS NOT NULL, \
       j.status, j.failed_attempts, j.last_error_code, j.decided_by_session, \
       j.mismatch_session IS NOT NULL, \
       to_char(to_timestamp(LEAST(GREATEST(COALESCE((o.payload->>'occurred_at')::int8, \
         j.last_error_created, extract(epoch FROM o.created_at)::int8), 0), 253402300799)) \
         AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
       COALESCE(j.blocked, false), \
       EXISTS (SELECT 1 FROM outbox c WHERE c.session_id = o.session_id \
         AND c.kind = 'compare_verified_outputs' AND c.status = 'pending') \
     FROM outbox o \
     LEFT JOIN sessions s ON s.id = o.session_id \
     LEFT JOIN subjects j ON j.key = COALESCE(s.subject_key, o.subject_key) \
     WHERE o.id = ANY($1)";

const SENT: &str = "UPDATE outbox SET status = 'sent', done_at = now(), dispatched_at = now(), \
     last_error = NULL, claimed_until = NULL, claim_token = NULL \
     WHERE id = $1 AND claim_token = $2";
const FINISHED: &str = "UPDATE outbox SET status = $3, done_at = now(), last_error = $4, \
     claimed_until = NULL, claim_token = NULL WHERE id = $1 AND claim_token = $2";
const RETRY: &str = "UPDATE outbox SET due_at = now() + make_interval(secs => $3::float8), \
     last_error = $4, claimed_until = NULL, claim_token = NULL \
     WHERE id = $1 AND claim_token = $2";
/// A wait is not an attempt: the row is due again when an event moves its
/// session back (the worker re-arms it), or after [`WAIT_RECHECK`] in any
/// case, which also covers an event applied while this row was judged.
///
/// A row the worker re-armed while it was claimed (an event moved its
/// session after the facts were read) is due at once instead: the UPDATE
/// waits for the worker's row lock and then reads the row as committed.
const WAIT: &str = "UPDATE outbox SET due_at = CASE WHEN rearmed THEN now() \
     ELSE now() + make_interval(secs => $4::float8) END, rearmed = false, \
     attempts = attempts - 1, last_error = $3, claimed_until = NULL, claim_token = NULL \
     WHERE id = $1 AND claim_token = $2";

/// How long a waiting row waits at most before it is judged again.
pub const WAIT_RECHECK: Duration = Duration::from_secs(300);

/// A row this dispatcher holds a claim on.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub kind: String,
    pub idempotency_key: String,
    pub subject_key: Option<String>,
    pub session_id: Option<String>,
    pub payload: serde_json::Value,
    /// Including this one.
    pub attempts: i32,
    pub created_at: std::time::SystemTime,
}

/// What is true of a row's session and subject now. (`occurred_at` is
/// clamped to years 1970 to 9999: an event's `created` is not checked,
/// and one out of range must not fail the facts of a whole batch.)
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub subject: Option<String>,
    /// The session's stage (`None` for a limit row, or a session unknown).
    pub session_status: Option<String>,
    pub session_last_event: Option<String>,
    pub session_redacted: bool,
    pub subject_status: Option<String>,
    pub failed_attempts: i32,
    pub last_error_code: Option<String>,
    pub decided_by: Option<String>,
    pub mismatch: bool,
    /// RFC 3339, UTC: the event's time, or the subject's last failure for
    /// a limit row.
    pub occurred_at: String,
    /// The subject is at its limit now (counted failures, a blocking code
    /// or a mismatch).
    pub at_limit: bool,
    /// The session's verified outputs are still to be compared.
    pub comparison_pending: bool,
}

/// Claims up to `limit` due rows for `lease`, under `token`.
pub async fn claim(
    client: &Client,
    limit: i64,
    lease: Duration,
    token: &str,
) -> Result<Vec<Claimed>, Error> {
    let statement = client.prepare_cached(CLAIM).await?;
    let rows = client
        .query(&statement, &[&limit, &lease.as_secs_f64(), &token])
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Claimed {
                id: row.try_get(0)?,
                kind: row.try_get(1)?,
                idempotency_key: row.try_get(2)?,
                subject_key: row.try_get(3)?,
                session_id: row.try_get(4)?,
                payload: row.try_get(5)?,
                attempts: row.try_get(6)?,
                created_at: row.try_get(7)?,
            })
        })
        .collect()
}

/// The facts of each of `ids`, by id (`max_failed_attempts`: the limit).
pub async fn facts(
    client: &Client,
    ids: &[i64],
    max_failed_attempts: i32,
) -> Result<HashMap<i64, Facts>, Error> {
    let statement = client.prepare_cached(FACTS).await?;
    let rows = client.query(&statement, &[&ids]).await?;
    rows.iter()
        .map(|row| {
            let failed_attempts = row.try_get::<_, Option<i32>>(6)?.unwrap_or(0);
            let blocked: bool = row.try_get(11)?;
            let mismatch = row.try_get::<_, Option<bool>>(9)?.unwrap_or(false);
            let facts = Facts {
                subject: row.try_get(1)?,
                session_status: row.try_get(2)?,
                session_last_event: row.try_get(3)?,
                session_redacted: row.try_get::<_, Option<bool>>(4)?.unwrap_or(false),
                subject_status: row.try_get(5)?,
                failed_attempts,
                last_error_code: row.try_get(7)?,
                decided_by: row.try_get(8)?,
                mismatch,
                occurred_at: row.try_get::<_, Option<String>>(10)?.unwrap_or_default(),
                at_limit: failed_attempts >= max_failed_attempts || blocked || mismatch,
                comparison_pending: row.try_get(12)?,
            };
            Ok((row.try_get(0)?, facts))
        })
        .collect()
}

/// What becomes of a claimed row.
#[derive(Debug, Clone, PartialEq)]
pub enum Mark {
    Sent,
    /// `superseded`, `skipped` or `failed`, with why.
    Finished(&'static str, String),
    Retry {
        after: Duration,
        error: String,
    },
    /// Due again after the duration; no attempt spent.
    Wait(String, Duration),
}

/// Marks row `id`; `false` if the claim `token` no longer holds it (its
/// lease ran out and another dispatcher claimed it).
pub async fn mark(client: &Client, id: i64, token: &str, mark: &Mark) -> Result<bool, Error> {
    let updated = match mark {
        Mark::Sent => {
            let statement = client.prepare_cached(SENT).await?;
            client.execute(&statement, &[&id, &token]).await?
        }
        Mark::Finished(status, why) => {
            let statement = client.prepare_cached(FINISHED).await?;
            client
                .execute(&statement, &[&id, &token, status, why])
                .await?
        }
        Mark::Retry { after, error } => {
            let statement = client.prepare_cached(RETRY).await?;
            client
                .execute(&statement, &[&id, &token, &after.as_secs_f64(), error])
                .await?
        }
        Mark::Wait(why, recheck) => {
            let statement = client.prepare_cached(WAIT).await?;
            let recheck = recheck.as_secs_f64();
            client
                .execute(&statement, &[&id, &token, why, &recheck])
                .await?
        }
    };
    Ok(updated == 1)
}
