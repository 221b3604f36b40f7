//! Read models of the record, for `idvctl` and for the platform's own code
//! to copy: a subject with its sessions and its actions, and one session.

use serde::Serialize;
use tokio_postgres::{Client, Error};

use super::outbox_admin::{self, OutboxRowView};

/// `idvctl session show --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    pub id: String,
    /// The subject key; `null` until an event naming the person arrived.
    pub subject: Option<String>,
    /// `created | processing | requires_input | verified | canceled`.
    pub status: String,
    pub last_error_code: Option<String>,
    /// `null` once redacted.
    pub last_error_reason: Option<String>,
    pub last_event_id: Option<String>,
    /// Unix seconds (Stripe's `created` of the last applied event).
    pub last_event_created: Option<i64>,
    pub redacted: bool,
}

/// `idvctl subject show --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectView {
    pub key: String,
    /// `pending | processing | requires_input | verified | manual_review | canceled`.
    pub status: String,
    pub failed_attempts: i32,
    pub max_attempts: i32,
    pub last_error_code: Option<String>,
    pub decided_by_session: Option<String>,
    pub sessions: Vec<SessionView>,
    /// Its outbox rows and those of its sessions, oldest first: what was
    /// or is to be done about it, and what became of each.
    pub actions: Vec<OutboxRowView>,
}

const SESSION_COLUMNS: &str = "id, subject_key, status, last_error_code, last_error_reason, \
     last_event_id, last_event_created, redacted_at IS NOT NULL";

fn session_view(row: &tokio_postgres::Row) -> Result<SessionView, Error> {
    Ok(SessionView {
        id: row.try_get(0)?,
        subject: row.try_get(1)?,
        status: row.try_get(2)?,
        last_error_code: row.try_get(3)?,
        last_error_reason: row.try_get(4)?,
        last_event_id: row.try_get(5)?,
        last_event_created: row.try_get(6)?,
        redacted: row.try_get(7)?,
    })
}

pub async fn session(client: &Client, id: &str) -> Result<Option<SessionView>, Error> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1");
    client
        .query_opt(&sql, &[&id])
        .await?
        .as_ref()
        .map(session_view)
        .transpose()
}

/// The subject `key`, with `max_attempts` as configured for the reader.
pub async fn subject(
    client: &Client,
    key: &str,
    max_attempts: i32,
) -> Result<Option<SubjectView>, Error> {
    let Some(row) = client
        .query_opt(
            "SELECT key, status, failed_attempts, last_error_code, decided_by_session \
             FROM subjects WHERE key = $1",
            &[&key],
        )
        .await?
    else {
        return Ok(None);
    };
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE subject_key = $1 \
         ORDER BY last_event_created NULLS FIRST, id"
    );
    let sessions = client
        .query(&sql, &[&key])
        .await?
        .iter()
        .map(session_view)
        .collect::<Result<_, _>>()?;
    let actions = outbox_admin::of_subject(client, key).await?;
    Ok(Some(SubjectView {
        key: row.try_get(0)?,
        status: row.try_get(1)?,
        failed_attempts: row.try_get(2)?,
        max_attempts,
        last_error_code: row.try_get(3)?,
        decided_by_session: row.try_get(4)?,
        sessions,
        actions,
    }))
}
