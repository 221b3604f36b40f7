//! The SQL of the transition: one small function per statement, each taking
//! the open transaction and using a cached prepared statement.

use deadpool_postgres::Transaction;
use tokio_postgres::Error;

use crate::incoming::Incoming;
use crate::transition::{OrderKey, SessionSummary, Stage};

/// A session row as the batch holds it while the row is locked.
#[derive(Debug, Clone, Default)]
pub struct SessionRow {
    pub subject_key: Option<String>,
    pub last: Option<OrderKey>,
    pub redacted: bool,
}

/// Creates the missing session rows, then locks all of them, in id order.
pub async fn lock_sessions(
    tx: &Transaction<'_>,
    sorted_ids: &[&str],
) -> Result<Vec<(String, SessionRow)>, Error> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO sessions (id) SELECT unnest($1::text[]) ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    tx.execute(&insert, &[&sorted_ids]).await?;
    let select = tx
        .prepare_cached(
            "SELECT id, subject_key, last_event_created, last_event_rank, last_event_id, \
             redacted_at IS NOT NULL FROM sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .await?;
    let rows = tx.query(&select, &[&sorted_ids]).await?;
    rows.iter()
        .map(|row| {
            let last = match (row.try_get(2)?, row.try_get(3)?, row.try_get(4)?) {
                (Some(created), Some(rank), Some(event_id)) => Some(OrderKey {
                    created,
                    rank,
                    event_id,
                }),
                _ => None,
            };
            let session = SessionRow {
                subject_key: row.try_get(1)?,
                last,
                redacted: row.try_get(5)?,
            };
            Ok((row.try_get(0)?, session))
        })
        .collect()
}

/// Creates the missing subject rows, then locks all of them, in key order.
pub async fn lock_subjects(tx: &Transaction<'_>, sorted_keys: &[&str]) -> Result<(), Error> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO subjects (key) SELECT unnest($1::text[]) ON CONFLICT (key) DO NOTHING",
        )
        .await?;
    tx.execute(&insert, &[&sorted_keys]).await?;
    let select = tx
        .prepare_cached("SELECT key FROM subjects WHERE key = ANY($1) ORDER BY key FOR UPDATE")
        .await?;
    tx.query(&select, &[&sorted_keys]).await?;
    Ok(())
}

/// The inbox: `false` when the event id was already there (a duplicate).
pub async fn insert_event(
    tx: &Transaction<'_>,
    event: &Incoming,
    outcome: &str,
    counted: bool,
    keep_payload: bool,
) -> Result<bool, Error> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO events (id, type, session_id, created, livemode, outcome, \
             counted_attempt, error_code, received_at, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9::bigint / 1000.0), $10) \
             ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    let code = event.failure.as_ref().map(|f| f.code.as_str());
    let payload = keep_payload.then_some(&event.payload);
    let inserted = tx
        .execute(
            &statement,
            &[
                &event.event_id,
                &event.event_type,
                &event.session_id,
                &event.created,
                &event.livemode,
                &outcome,
                &counted,
                &code,
                &event.received_at_ms,
                &payload,
            ],
        )
        .await?;
    Ok(inserted == 1)
}

/// Moves the session to the state of a newer event.
pub async fn advance_session(
    tx: &Transaction<'_>,
    event: &Incoming,
    stage: Stage,
    subject_key: Option<&str>,
    key: &OrderKey,
) -> Result<(), Error> {
    let statement = tx
        .prepare_cached(
            "UPDATE sessions SET subject_key = COALESCE(subject_key, $2), status = $3, \
             last_error_code = $4, \
             last_error_reason = CASE WHEN redacted_at IS NULL THEN $5 END, \
             last_event_id = $6, last_event_created = $7, last_event_rank = $8, \
             verified_at = CASE WHEN $3 = 'verified' THEN COALESCE(verified_at, now()) ELSE verified_at END, \
             canceled_at = CASE WHEN $3 = 'canceled' THEN COALESCE(canceled_at, now()) ELSE canceled_at END, \
             updated_at = now() WHERE id = $1",
        )
        .await?;
    let code = event.failure.as_ref().map(|f| f.code.as_str());
    let reason = event.failure.as_ref().and_then(|f| f.reason.as_deref());
    tx.execute(
        &statement,
        &[
            &event.session_id,
            &subject_key,
            &stage.as_str(),
            &code,
            &reason,
            &key.event_id,
            &key.created,
            &key.rank,
        ],
    )
    .await?;
    Ok(())
}

/// Maps a session to its subject, the first time an event names one.
pub async fn set_session_subject(
    tx: &Transaction<'_>,
    session_id: &str,
    subject_key: &str,
) -> Result<(), Error> {
    let statement = tx
        .prepare_cached(
            "UPDATE sessions SET subject_key = $2, updated_at = now() \
             WHERE id = $1 AND subject_key IS NULL",
        )
        .await?;
    tx.execute(&statement, &[&session_id, &subject_key]).await?;
    Ok(())
}

/// Erases what was stored about the session's person.
pub async fn redact_session(tx: &Transaction<'_>, session_id: &str) -> Result<(), Error> {
    let statements = [
        "UPDATE sessions SET redacted_at = COALESCE(redacted_at, now()), \
         last_error_reason = NULL, updated_at = now() WHERE id = $1",
        "UPDATE events SET payload = NULL WHERE session_id = $1 AND payload IS NOT NULL",
        "UPDATE outbox SET payload = payload - 'reason' WHERE session_id = $1 AND payload ? 'reason'",
    ];
    for sql in statements {
        let statement = tx.prepare_cached(sql).await?;
        tx.execute(&statement, &[&session_id]).await?;
    }
    Ok(())
}

/// The subject's counters, after counting a failed submission if there is one.
#[derive(Debug, Clone)]
pub struct SubjectCounters {
    pub status: String,
    pub failed_attempts: i32,
    pub blocked: bool,
}

/// Counts one failed submission (capped at `max`) and keeps the most recent
/// failure's code.
pub async fn count_failure(
    tx: &Transaction<'_>,
    subject_key: &str,
    max: i32,
    blocks: bool,
    code: &str,
    key: &OrderKey,
) -> Result<SubjectCounters, Error> {
    let statement = tx
        .prepare_cached(
            "WITH before AS (SELECT key, status FROM subjects WHERE key = $1) \
             UPDATE subjects s SET failed_attempts = LEAST(s.failed_attempts + 1, $2), \
             blocked = s.blocked OR $3, \
             last_error_code = CASE WHEN s.last_error_created IS NULL \
               OR (s.last_error_created, s.last_error_event_id) < ($5, $6) THEN $4 ELSE s.last_error_code END, \
             last_error_event_id = CASE WHEN s.last_error_created IS NULL \
               OR (s.last_error_created, s.last_error_event_id) < ($5, $6) THEN $6 ELSE s.last_error_event_id END, \
             last_error_created = GREATEST(s.last_error_created, $5), \
             updated_at = now() \
             FROM before WHERE s.key = before.key \
             RETURNING before.status, s.failed_attempts, s.blocked",
        )
        .await?;
    let row = tx
        .query_one(
            &statement,
            &[
                &subject_key,
                &max,
                &blocks,
                &code,
                &key.created,
                &key.event_id,
            ],
        )
        .await?;
    Ok(SubjectCounters {
        status: row.try_get(0)?,
        failed_attempts: row.try_get(1)?,
        blocked: row.try_get(2)?,
    })
}

pub async fn subject_counters(
    tx: &Transaction<'_>,
    subject_key: &str,
) -> Result<SubjectCounters, Error> {
    let statement = tx
        .prepare_cached("SELECT status, failed_attempts, blocked FROM subjects WHERE key = $1")
        .await?;
    let row = tx.query_one(&statement, &[&subject_key]).await?;
    Ok(SubjectCounters {
        status: row.try_get(0)?,
        failed_attempts: row.try_get(1)?,
        blocked: row.try_get(2)?,
    })
}

/// Every session of a subject, for deriving its status.
pub async fn subject_sessions(
    tx: &Transaction<'_>,
    subject_key: &str,
) -> Result<Vec<SessionSummary>, Error> {
    let statement = tx
        .prepare_cached(
            "SELECT id, status, last_error_code IS NOT NULL, last_event_created, \
             last_event_rank, last_event_id FROM sessions WHERE subject_key = $1",
        )
        .await?;
    let rows = tx.query(&statement, &[&subject_key]).await?;
    rows.iter()
        .map(|row| {
            let status: String = row.try_get(1)?;
            let last = match (row.try_get(3)?, row.try_get(4)?, row.try_get(5)?) {
                (Some(created), Some(rank), Some(event_id)) => Some(OrderKey {
                    created,
                    rank,
                    event_id,
                }),
                _ => None,
            };
            Ok(SessionSummary {
                id: row.try_get(0)?,
                // The CHECK constraint admits only stages.
                stage: Stage::parse(&status).unwrap_or(Stage::Created),
                has_error: row.try_get(2)?,
                last,
            })
        })
        .collect()
}

pub async fn set_subject_status(
    tx: &Transaction<'_>,
    subject_key: &str,
    status: &str,
    decided_by: Option<&str>,
) -> Result<(), Error> {
    let statement = tx
        .prepare_cached(
            "UPDATE subjects SET status = $2, decided_by_session = $3, updated_at = now() \
             WHERE key = $1 AND (status, decided_by_session) IS DISTINCT FROM ($2, $3)",
        )
        .await?;
    tx.execute(&statement, &[&subject_key, &status, &decided_by])
        .await?;
    Ok(())
}

/// One side effect to perform, written with the transition.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub kind: &'static str,
    pub idempotency_key: String,
    pub subject_key: Option<String>,
    pub session_id: String,
    pub payload: serde_json::Value,
}

/// Writes side effects; a key already written is skipped.
pub async fn insert_outbox(tx: &Transaction<'_>, rows: &[OutboxRow]) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let statement = tx
        .prepare_cached(
            "INSERT INTO outbox (kind, idempotency_key, subject_key, session_id, payload) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[]) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .await?;
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind).collect();
    let keys: Vec<&str> = rows.iter().map(|r| r.idempotency_key.as_str()).collect();
    let subjects: Vec<Option<&str>> = rows.iter().map(|r| r.subject_key.as_deref()).collect();
    let sessions: Vec<&str> = rows.iter().map(|r| r.session_id.as_str()).collect();
    let payloads: Vec<&serde_json::Value> = rows.iter().map(|r| &r.payload).collect();
    tx.execute(
        &statement,
        &[&kinds, &keys, &subjects, &sessions, &payloads],
    )
    .await?;
    Ok(())
}
