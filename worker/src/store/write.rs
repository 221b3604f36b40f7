//! The writes of a batch: one statement per table (rows passed as arrays
//! and `unnest`ed; subjects left with no session deleted after the
//! sessions moved off them), then the erasures of sessions a `redacted` event named
//! (their dead letters' payloads too, under the lock that keeps the
//! dead-letter drain from storing one behind the erasure: see
//! [`super::dead_letters`]),
//! all prepared first and then sent together in one round trip, in this
//! order (PostgreSQL runs them in the order sent, so the erasures also
//! cover rows this batch wrote, as they would one event at a time).

use deadpool_postgres::Transaction;
use tokio_postgres::Error;
use tokio_postgres::types::ToSql;

use super::dead_letters;
use crate::domain::plan::Plan;
use crate::incoming::Incoming;

const INSERT_EVENTS: &str = "INSERT INTO events (id, type, session_id, created, livemode, \
     outcome, counted_attempt, error_code, received_at, payload, blocking_attempt) \
     SELECT id, type, session_id, created, livemode, outcome, counted, code, \
     to_timestamp(ms / 1000.0), payload, blocking \
     FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::bool[], $6::text[], \
     $7::bool[], $8::text[], $9::int8[], $10::jsonb[], $11::bool[]) \
     AS e(id, type, session_id, created, livemode, outcome, counted, code, ms, payload, blocking) \
     ON CONFLICT (id) DO NOTHING";
const UPDATE_SESSIONS: &str = "UPDATE sessions s SET \
     subject_key = COALESCE(u.subject_key, s.subject_key), \
     subject_key_rank = CASE WHEN u.subject_key IS NULL THEN s.subject_key_rank ELSE u.rank_of_key END, \
     status = CASE WHEN u.advanced THEN u.status ELSE s.status END, \
     last_error_code = CASE WHEN u.advanced THEN u.code ELSE s.last_error_code END, \
     last_error_reason = CASE WHEN NOT u.advanced THEN s.last_error_reason \
       WHEN s.redacted_at IS NULL THEN u.reason END, \
     last_event_id = CASE WHEN u.advanced THEN u.event_id ELSE s.last_event_id END, \
     last_event_created = CASE WHEN u.advanced THEN u.created ELSE s.last_event_created END, \
     last_event_rank = CASE WHEN u.advanced THEN u.rank ELSE s.last_event_rank END, \
     verified_at = CASE WHEN u.verified THEN COALESCE(s.verified_at, now()) ELSE s.verified_at END, \
     canceled_at = CASE WHEN u.canceled THEN COALESCE(s.canceled_at, now()) ELSE s.canceled_at END, \
     updated_at = now() \
     FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[], $6::text[], \
     $7::text[], $8::int8[], $9::int2[], $10::bool[], $11::bool[], $12::int2[]) \
     AS u(id, subject_key, advanced, status, code, reason, event_id, created, rank, verified, \
     canceled, rank_of_key) \
     WHERE s.id = u.id";
const UPDATE_SUBJECTS: &str = "UPDATE subjects s SET status = u.status, \
     decided_by_session = u.decided_by, failed_attempts = u.failed, blocked = u.blocked, \
     last_error_code = u.code, last_error_created = u.created, last_error_event_id = u.event_id, \
     updated_at = now() \
     FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::bool[], $6::text[], \
     $7::int8[], $8::text[]) AS u(key, status, decided_by, failed, blocked, code, created, event_id) \
     WHERE s.key = u.key";
const DELETE_SUBJECTS: &str = "DELETE FROM subjects WHERE key = ANY($1)";
/// A reconciled subject's pending limit rows its state no longer calls for
/// (not one a dispatcher is performing now: it is marked as it ends).
const DELETE_LIMIT_ROWS: &str = "DELETE FROM outbox WHERE from_limit AND status = 'pending' \
     AND subject_key = ANY($1) AND NOT (idempotency_key = ANY($2)) \
     AND (claimed_until IS NULL OR claimed_until < now())";
/// A pending limit row already there (a session's cancel, when the session
/// moved to another person also at the limit) is moved to the subject
/// that calls for it now, so that reconciling its old subject alone never
/// deletes it.
const INSERT_OUTBOX: &str = "INSERT INTO outbox \
     (kind, idempotency_key, subject_key, session_id, payload, from_limit) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::bool[]) \
     ON CONFLICT (idempotency_key) DO UPDATE SET subject_key = EXCLUDED.subject_key \
     WHERE outbox.from_limit AND outbox.status = 'pending' \
     AND outbox.subject_key IS DISTINCT FROM EXCLUDED.subject_key";
/// A cancel waiting for its session to come back to `requires_input`: due
/// at once; and one a dispatcher holds now is marked `rearmed`, so that a
/// wait it is about to record (judged on the state before this event)
/// becomes "due now" instead.
const REARM_CANCELS: &str = "UPDATE outbox SET due_at = LEAST(due_at, now()), rearmed = true \
     WHERE session_id = ANY($1) AND kind = 'cancel_stripe_session' \
     AND status = 'pending' AND (due_at > now() OR claimed_until > now())";
const REDACT: [&str; 3] = [
    "UPDATE sessions SET redacted_at = COALESCE(redacted_at, now()), \
     last_error_reason = NULL, updated_at = now() WHERE id = ANY($1)",
    "UPDATE events SET payload = NULL WHERE session_id = ANY($1) AND payload IS NOT NULL",
    "UPDATE outbox SET payload = payload - 'reason' \
     WHERE session_id = ANY($1) AND payload ? 'reason'",
];

/// The writes of a batch that look rows up by a key other than the
/// primary key's, with the types of their parameters (see
/// [`super::LOOKUPS`]).
pub const LOOKUPS: [(&str, &str, &[&str]); 7] = [
    ("delete subjects", DELETE_SUBJECTS, &["text[]"]),
    (
        "delete limit rows",
        DELETE_LIMIT_ROWS,
        &["text[]", "text[]"],
    ),
    ("re-arm cancels", REARM_CANCELS, &["text[]"]),
    ("redact sessions", REDACT[0], &["text[]"]),
    ("redact events", REDACT[1], &["text[]"]),
    ("redact outbox", REDACT[2], &["text[]"]),
    (
        "redact dead letters",
        dead_letters::ERASE_PAYLOADS,
        &["text[]"],
    ),
];

/// Writes `plan` (for `batch`); returns how many inbox rows were inserted.
pub async fn all(tx: &Transaction<'_>, batch: &[&Incoming], plan: &Plan) -> Result<u64, Error> {
    let (events, sessions, subjects, delete, delete_limit, outbox, rearm) = tokio::try_join!(
        tx.prepare_cached(INSERT_EVENTS),
        tx.prepare_cached(UPDATE_SESSIONS),
        tx.prepare_cached(UPDATE_SUBJECTS),
        tx.prepare_cached(DELETE_SUBJECTS),
        tx.prepare_cached(DELETE_LIMIT_ROWS),
        tx.prepare_cached(INSERT_OUTBOX),
        tx.prepare_cached(REARM_CANCELS),
    )?;
    let (redact0, redact1, redact2, lock_erasure, erase_dead_letters) = tokio::try_join!(
        tx.prepare_cached(REDACT[0]),
        tx.prepare_cached(REDACT[1]),
        tx.prepare_cached(REDACT[2]),
        tx.prepare_cached(dead_letters::LOCK_SESSIONS),
        tx.prepare_cached(dead_letters::ERASE_PAYLOADS),
    )?;

    let rows: Vec<(&Incoming, &crate::domain::state::EventRow)> = plan
        .events
        .iter()
        .filter_map(|row| batch.get(row.index).map(|event| (*event, row)))
        .collect();
    let e_ids: Vec<&str> = rows.iter().map(|(e, _)| e.event_id.as_str()).collect();
    let e_types: Vec<&str> = rows.iter().map(|(e, _)| e.event_type.as_str()).collect();
    let e_sessions: Vec<&str> = rows.iter().map(|(e, _)| e.session_id.as_str()).collect();
    let e_created: Vec<i64> = rows.iter().map(|(e, _)| e.created).collect();
    let e_livemode: Vec<bool> = rows.iter().map(|(e, _)| e.livemode).collect();
    let e_outcomes: Vec<&str> = rows.iter().map(|(_, r)| r.outcome).collect();
    let e_counted: Vec<bool> = rows.iter().map(|(_, r)| r.counted).collect();
    let e_codes: Vec<Option<&str>> = rows
        .iter()
        .map(|(e, _)| e.failure.as_ref().map(|f| f.code.as_str()))
        .collect();
    let e_received: Vec<i64> = rows.iter().map(|(e, _)| e.received_at_ms).collect();
    let e_payloads: Vec<Option<&serde_json::Value>> = rows
        .iter()
        .map(|(e, r)| r.keep_payload.then_some(&e.payload))
        .collect();
    let e_blocking: Vec<bool> = rows.iter().map(|(_, r)| r.blocking).collect();
    let event_params: [&(dyn ToSql + Sync); 11] = [
        &e_ids,
        &e_types,
        &e_sessions,
        &e_created,
        &e_livemode,
        &e_outcomes,
        &e_counted,
        &e_codes,
        &e_received,
        &e_payloads,
        &e_blocking,
    ];

    let s = &plan.sessions;
    let s_ids: Vec<&str> = s.keys().map(String::as_str).collect();
    let s_subjects: Vec<Option<&str>> = s.values().map(|w| w.subject_key.as_deref()).collect();
    let s_advanced: Vec<bool> = s.values().map(|w| w.advance.is_some()).collect();
    let advance = || s.values().map(|w| w.advance.as_ref());
    let s_status: Vec<Option<&str>> = advance().map(|a| a.map(|a| a.stage.as_str())).collect();
    let s_codes: Vec<Option<&str>> = advance()
        .map(|a| a.and_then(|a| a.code.as_deref()))
        .collect();
    let s_reasons: Vec<Option<&str>> = advance()
        .map(|a| a.and_then(|a| a.reason.as_deref()))
        .collect();
    let s_event_ids: Vec<Option<&str>> = advance()
        .map(|a| a.map(|a| a.key.event_id.as_str()))
        .collect();
    let s_created: Vec<Option<i64>> = advance().map(|a| a.map(|a| a.key.created)).collect();
    let s_ranks: Vec<Option<i16>> = advance().map(|a| a.map(|a| a.key.rank)).collect();
    let s_verified: Vec<bool> = s.values().map(|w| w.verified).collect();
    let s_canceled: Vec<bool> = s.values().map(|w| w.canceled).collect();
    let s_key_ranks: Vec<i16> = s.values().map(|w| w.subject_rank).collect();
    let session_params: [&(dyn ToSql + Sync); 12] = [
        &s_ids,
        &s_subjects,
        &s_advanced,
        &s_status,
        &s_codes,
        &s_reasons,
        &s_event_ids,
        &s_created,
        &s_ranks,
        &s_verified,
        &s_canceled,
        &s_key_ranks,
    ];

    let j = &plan.subjects;
    let j_keys: Vec<&str> = j.keys().map(String::as_str).collect();
    let j_status: Vec<&str> = j.values().map(|v| v.status.as_str()).collect();
    let j_decided: Vec<Option<&str>> = j.values().map(|v| v.decided_by.as_deref()).collect();
    let j_failed: Vec<i32> = j.values().map(|v| v.failed_attempts).collect();
    let j_blocked: Vec<bool> = j.values().map(|v| v.blocked).collect();
    let j_codes: Vec<Option<&str>> = j.values().map(|v| v.last_error_code.as_deref()).collect();
    let j_created: Vec<Option<i64>> = j.values().map(|v| v.last_error_created).collect();
    let j_event_ids: Vec<Option<&str>> = j
        .values()
        .map(|v| v.last_error_event_id.as_deref())
        .collect();
    let subject_params: [&(dyn ToSql + Sync); 8] = [
        &j_keys,
        &j_status,
        &j_decided,
        &j_failed,
        &j_blocked,
        &j_codes,
        &j_created,
        &j_event_ids,
    ];

    let o = &plan.outbox;
    let o_kinds: Vec<&str> = o.iter().map(|r| r.kind.as_str()).collect();
    let o_keys: Vec<&str> = o.iter().map(|r| r.idempotency_key.as_str()).collect();
    let o_subjects: Vec<Option<&str>> = o.iter().map(|r| r.subject_key.as_deref()).collect();
    let o_sessions: Vec<Option<&str>> = o.iter().map(|r| r.session_id.as_deref()).collect();
    let o_payloads: Vec<&serde_json::Value> = o.iter().map(|r| &r.payload).collect();
    let o_limit: Vec<bool> = o.iter().map(|r| r.from_limit).collect();
    let outbox_params: [&(dyn ToSql + Sync); 6] = [
        &o_kinds,
        &o_keys,
        &o_subjects,
        &o_sessions,
        &o_payloads,
        &o_limit,
    ];
    let limit_keys: Vec<&str> = o
        .iter()
        .filter(|r| r.from_limit)
        .map(|r| r.idempotency_key.as_str())
        .collect();
    let reconcile: [&(dyn ToSql + Sync); 2] = [&plan.reconciled, &limit_keys];
    let rearmed: [&(dyn ToSql + Sync); 1] = [&plan.rearmed];
    let redacted: [&(dyn ToSql + Sync); 1] = [&plan.redacted];
    let deleted: [&(dyn ToSql + Sync); 1] = [&plan.deleted_subjects];

    // Each is skipped when it has no rows; the order of the list is the
    // order PostgreSQL runs them in.
    let no_redaction = plan.redacted.is_empty();
    let (inserted, ..) = tokio::try_join!(
        biased; // sent, run and failed in this order
        skip_or(tx, &events, &event_params, rows.is_empty()),
        skip_or(tx, &sessions, &session_params, s.is_empty()),
        skip_or(tx, &subjects, &subject_params, j.is_empty()),
        skip_or(tx, &delete, &deleted, plan.deleted_subjects.is_empty()),
        skip_or(tx, &delete_limit, &reconcile, plan.reconciled.is_empty()),
        skip_or(tx, &outbox, &outbox_params, o.is_empty()),
        skip_or(tx, &rearm, &rearmed, plan.rearmed.is_empty()),
        skip_or(tx, &lock_erasure, &redacted, no_redaction),
        skip_or(tx, &redact0, &redacted, no_redaction),
        skip_or(tx, &redact1, &redacted, no_redaction),
        skip_or(tx, &redact2, &redacted, no_redaction),
        skip_or(tx, &erase_dead_letters, &redacted, no_redaction),
    )?;
    Ok(inserted)
}

/// Runs `statement`, unless `skip`.
async fn skip_or(
    tx: &Transaction<'_>,
    statement: &tokio_postgres::Statement,
    params: &[&(dyn ToSql + Sync)],
    skip: bool,
) -> Result<u64, Error> {
    if skip {
        return Ok(0);
    }
    tx.execute(statement, params).await
}
