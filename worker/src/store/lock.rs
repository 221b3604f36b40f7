//! The reads of a batch, under its locks, in two round trips: first the
//! batch's sessions (created if missing, then locked in id order) and which
//! of its events the inbox already holds; then its subjects (likewise, in
//! key order), their other sessions and the counted failures of all those
//! sessions. Sessions before subjects, each in sorted order, in every
//! transaction: concurrent workers cannot deadlock.
//!
//! The reads after a lock rely on READ COMMITTED (set on every transaction
//! by the store): a statement that follows a wait for a row lock sees what
//! the lock's holder committed.
//!
//! The statements of one round trip are prepared first, then issued
//! together: tokio-postgres sends them in the order they are first polled
//! and PostgreSQL runs them in that order, so each sees its predecessors'
//! effects (the inbox read runs after the session locks are held, so no
//! concurrent transaction can insert one of these events unseen: every
//! event is inserted under its session's lock).

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row};

use shared::LastErrorCode;

use crate::domain::state::{Counted, SessionState, SubjectState};
use crate::policy::Policy;
use crate::transition::{OrderKey, SessionSummary, Stage};

const INSERT_SESSIONS: &str =
    "INSERT INTO sessions (id) SELECT unnest($1::text[]) ON CONFLICT (id) DO NOTHING";
const LOCK_SESSIONS: &str = "SELECT id, subject_key, status, last_error_code IS NOT NULL, \
     last_event_created, last_event_rank, last_event_id, redacted_at IS NOT NULL, subject_key_rank \
     FROM sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE";
const SEEN_EVENTS: &str = "SELECT id FROM events WHERE id = ANY($1)";
const INSERT_SUBJECTS: &str =
    "INSERT INTO subjects (key) SELECT unnest($1::text[]) ON CONFLICT (key) DO NOTHING";
const LOCK_SUBJECTS: &str = "SELECT key, status, decided_by_session, failed_attempts, blocked, \
     last_error_code, last_error_created, last_error_event_id, mismatch_session \
     FROM subjects WHERE key = ANY($1) ORDER BY key FOR UPDATE";
const OTHER_SESSIONS: &str = "SELECT subject_key, id, status, last_error_code IS NOT NULL, \
     last_event_created, last_event_rank, last_event_id \
     FROM sessions WHERE subject_key = ANY($1) AND NOT (id = ANY($2))";
/// One array of session ids, so that the lookup is an index scan of
/// `events_session_id`: written as `session_id = ANY($2) OR session_id IN
/// (subquery)` PostgreSQL cannot use the index for the `OR` and reads the
/// whole inbox on every batch (`reads_of_a_batch_use_indexes` checks).
const COUNTED: &str = "SELECT session_id, id, created, error_code, blocking_attempt \
     FROM events WHERE counted_attempt AND session_id = ANY($2::text[] \
     || ARRAY(SELECT id FROM sessions WHERE subject_key = ANY($1)))";

/// The reads of a batch that look rows up (the inserts aside), by name,
/// with the types of their parameters: each must find its rows through an
/// index, however large the tables grow (see [`super::LOOKUPS`]).
pub const READS: [(&str, &str, &[&str]); 5] = [
    ("lock sessions", LOCK_SESSIONS, &["text[]"]),
    ("seen events", SEEN_EVENTS, &["text[]"]),
    ("lock subjects", LOCK_SUBJECTS, &["text[]"]),
    ("other sessions", OTHER_SESSIONS, &["text[]", "text[]"]),
    ("counted failures", COUNTED, &["text[]", "text[]"]),
];

/// Creates and locks the sessions (`sorted_ids`); returns them and the ids
/// among `event_ids` already in the inbox.
pub async fn sessions(
    tx: &Transaction<'_>,
    sorted_ids: &[&str],
    event_ids: &[&str],
) -> Result<(HashMap<String, SessionState>, HashSet<String>), Error> {
    let (insert, lock, seen) = tokio::try_join!(
        tx.prepare_cached(INSERT_SESSIONS),
        tx.prepare_cached(LOCK_SESSIONS),
        tx.prepare_cached(SEEN_EVENTS),
    )?;
    let ids: [&(dyn ToSql + Sync); 1] = [&sorted_ids];
    let events: [&(dyn ToSql + Sync); 1] = [&event_ids];
    let (_, locked, seen) = tokio::try_join!(
        biased; // sent, run and failed in this order
        tx.execute(&insert, &ids),
        tx.query(&lock, &ids),
        tx.query(&seen, &events),
    )?;
    let sessions = locked
        .iter()
        .map(|row| {
            let subject_key: Option<String> = row.try_get(1)?;
            let rank: Option<i16> = row.try_get(8)?;
            let session = SessionState {
                subject_rank: match (&subject_key, rank) {
                    (None, _) => i16::MAX,
                    (Some(_), Some(rank)) => rank,
                    (Some(_), None) => i16::MIN,
                },
                subject_key,
                stage: stage(row, 2)?,
                has_error: row.try_get(3)?,
                last: order_key(row, 4)?,
                redacted: row.try_get(7)?,
            };
            Ok((row.try_get(0)?, session))
        })
        .collect::<Result<_, Error>>()?;
    let seen = seen
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, Error>>()?;
    Ok((sessions, seen))
}

/// The subject rows and the other sessions of each subject, by key, and
/// the counted failures of those and of the batch's sessions, by session.
pub type Subjects = (
    HashMap<String, SubjectState>,
    HashMap<String, Vec<SessionSummary>>,
    HashMap<String, Vec<Counted>>,
);

/// Creates and locks the subjects (`sorted_keys`); returns them, their
/// sessions outside `batch_sessions`, and the counted failures. A counted
/// failure stored without its class (`blocking_attempt` NULL: counted
/// before migration V3, whose predecessor's backfill could not know
/// `IDV_CODE_POLICY`) is classified by `policy`, the one in force.
pub async fn subjects(
    tx: &Transaction<'_>,
    sorted_keys: &[&str],
    batch_sessions: &[&str],
    policy: &Policy,
) -> Result<Subjects, Error> {
    let (insert, lock, others, counted) = tokio::try_join!(
        tx.prepare_cached(INSERT_SUBJECTS),
        tx.prepare_cached(LOCK_SUBJECTS),
        tx.prepare_cached(OTHER_SESSIONS),
        tx.prepare_cached(COUNTED),
    )?;
    let keys: [&(dyn ToSql + Sync); 1] = [&sorted_keys];
    let keys_and_sessions: [&(dyn ToSql + Sync); 2] = [&sorted_keys, &batch_sessions];
    let (_, locked, others, counted) = tokio::try_join!(
        biased; // sent, run and failed in this order
        tx.execute(&insert, &keys),
        tx.query(&lock, &keys),
        tx.query(&others, &keys_and_sessions),
        tx.query(&counted, &keys_and_sessions),
    )?;
    let subjects = locked
        .iter()
        .map(|row| {
            let subject = SubjectState {
                status: row.try_get(1)?,
                decided_by: row.try_get(2)?,
                failed_attempts: row.try_get(3)?,
                blocked: row.try_get(4)?,
                last_error_code: row.try_get(5)?,
                last_error_created: row.try_get(6)?,
                last_error_event_id: row.try_get(7)?,
                mismatch_session: row.try_get(8)?,
            };
            Ok((row.try_get(0)?, subject))
        })
        .collect::<Result<_, Error>>()?;
    let mut by_subject: HashMap<String, Vec<SessionSummary>> = HashMap::new();
    for row in &others {
        let summary = SessionSummary {
            id: row.try_get(1)?,
            stage: stage(row, 2)?,
            has_error: row.try_get(3)?,
            last: order_key(row, 4)?,
        };
        by_subject.entry(row.try_get(0)?).or_default().push(summary);
    }
    let mut by_session: HashMap<String, Vec<Counted>> = HashMap::new();
    for row in &counted {
        let code = row.try_get::<_, Option<String>>(3)?.unwrap_or_default();
        let blocking = match row.try_get::<_, Option<bool>>(4)? {
            Some(blocking) => blocking,
            None => policy.classify(&LastErrorCode::parse(&code)).class.blocks(),
        };
        let failure = Counted {
            event_id: row.try_get(1)?,
            created: row.try_get(2)?,
            code,
            blocking,
        };
        by_session.entry(row.try_get(0)?).or_default().push(failure);
    }
    Ok((subjects, by_subject, by_session))
}

/// The CHECK constraint admits only stages.
fn stage(row: &Row, column: usize) -> Result<Stage, Error> {
    let status: String = row.try_get(column)?;
    Ok(Stage::parse(&status).unwrap_or(Stage::Created))
}

/// `last_event_created, last_event_rank, last_event_id` from `first` on.
fn order_key(row: &Row, first: usize) -> Result<Option<OrderKey>, Error> {
    Ok(
        match (
            row.try_get(first)?,
            row.try_get(first + 1)?,
            row.try_get(first + 2)?,
        ) {
            (Some(created), Some(rank), Some(event_id)) => Some(OrderKey {
                created,
                rank,
                event_id,
            }),
            _ => None,
        },
    )
}
