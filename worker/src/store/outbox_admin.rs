//! The outbox as an operator sees it (`idvctl outbox list`, the actions of
//! `idvctl subject show`), and the one change an operator makes to it:
//! re-driving failed rows once their cause is fixed (`idvctl outbox retry`).
//!
//! The views never carry a row's payload: it may hold a reason text about
//! a person. Times are UTC text (`2026-01-01T00:00:00Z`); a pending row
//! waiting for an event is due at `infinity`.

use serde::Serialize;
use tokio_postgres::{Client, Error, Row};

use crate::domain::outbox::ActionKind;

/// A row's `status` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowStatus {
    /// Not performed yet (due, waiting for an event, or being performed).
    Pending,
    Sent,
    /// Untrue when its turn came.
    Superseded,
    /// Not performable for a reason that is nobody's fault.
    Skipped,
    /// Given up on: after its attempts, or a permanent refusal.
    Failed,
}

impl RowStatus {
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Sent,
        Self::Superseded,
        Self::Skipped,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Superseded => "superseded",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == raw)
    }
}

impl std::fmt::Display for RowStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `due_at` holds for a pending row that waits for an event.
pub const DUE_ON_NEXT_EVENT: &str = "infinity";

/// One outbox row without its payload: `idvctl outbox list --json`, and
/// each of the `actions` of `idvctl subject show --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxRowView {
    pub id: i64,
    /// An [`ActionKind`], or a kind retired by a migration.
    pub kind: String,
    pub idempotency_key: String,
    /// `pending | sent | superseded | skipped | failed`.
    pub status: String,
    /// Performances begun, whatever their result.
    pub attempts: i32,
    /// The subject when the row was written.
    pub subject_key: Option<String>,
    /// `null` for a subject's limit rows other than cancels.
    pub session_id: Option<String>,
    pub created_at: String,
    /// When a pending row is next due; [`DUE_ON_NEXT_EVENT`] while it
    /// waits for an event.
    pub due_at: String,
    /// When the row left pending.
    pub done_at: Option<String>,
    /// Why the last attempt did not succeed, or why the row was
    /// superseded, skipped or failed: a short, data-free text.
    pub last_error: Option<String>,
}

/// A timestamptz column as UTC text, `infinity` as such (`to_char` would
/// give an empty string).
macro_rules! utc {
    ($column:literal) => {
        concat!(
            "CASE WHEN ",
            $column,
            " = 'infinity' THEN 'infinity' ELSE to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') END"
        )
    };
}

/// The columns of [`OutboxRowView`], in [`row_view`]'s order. Never the payload.
const COLUMNS: &str = concat!(
    "id, kind, idempotency_key, status, attempts, subject_key, session_id, ",
    utc!("created_at"),
    ", ",
    utc!("due_at"),
    ", ",
    utc!("done_at"),
    ", last_error"
);

fn row_view(row: &Row) -> Result<OutboxRowView, Error> {
    Ok(OutboxRowView {
        id: row.try_get(0)?,
        kind: row.try_get(1)?,
        idempotency_key: row.try_get(2)?,
        status: row.try_get(3)?,
        attempts: row.try_get(4)?,
        subject_key: row.try_get(5)?,
        session_id: row.try_get(6)?,
        created_at: row.try_get(7)?,
        due_at: row.try_get(8)?,
        done_at: row.try_get(9)?,
        last_error: row.try_get(10)?,
    })
}

/// What `idvctl outbox list` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListFilter {
    pub status: Option<RowStatus>,
    pub kind: Option<ActionKind>,
    /// At most this many rows.
    pub limit: u32,
}

/// The rows `filter` selects, newest (highest id) first.
pub async fn list(client: &Client, filter: ListFilter) -> Result<Vec<OutboxRowView>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM outbox \
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kind = $2) \
         ORDER BY id DESC LIMIT $3"
    );
    let status = filter.status.map(RowStatus::as_str);
    let kind = filter.kind.map(ActionKind::as_str);
    client
        .query(&sql, &[&status, &kind, &i64::from(filter.limit)])
        .await?
        .iter()
        .map(row_view)
        .collect()
}

/// The rows of the subject `key`: its own (limit rows) and those of each
/// of its sessions, oldest first.
pub async fn of_subject(client: &Client, key: &str) -> Result<Vec<OutboxRowView>, Error> {
    // `= ANY(ARRAY(…))` rather than `IN (…)`: the sessions are read once,
    // and both sides of the OR can use their index.
    let sql = format!(
        "SELECT {COLUMNS} FROM outbox \
         WHERE subject_key = $1 \
            OR session_id = ANY(ARRAY(SELECT id FROM sessions WHERE subject_key = $1)) \
         ORDER BY id"
    );
    client
        .query(&sql, &[&key])
        .await?
        .iter()
        .map(row_view)
        .collect()
}

/// Makes a failed row pending and due now, as if never attempted.
const REDRIVE: &str = "UPDATE outbox SET status = 'pending', due_at = now(), attempts = 0, \
     last_error = NULL, done_at = NULL, claimed_until = NULL, claim_token = NULL \
     WHERE status = 'failed'";

/// What became of `idvctl outbox retry <id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOne {
    /// The row was failed, and is pending now.
    Redriven,
    NotFound,
    /// The row is not failed (its status is this): nothing changed.
    NotFailed(String),
}

/// Re-drives the row `id` if it is failed.
pub async fn retry_one(client: &Client, id: i64) -> Result<RetryOne, Error> {
    let sql = format!("{REDRIVE} AND id = $1");
    if client.execute(&sql, &[&id]).await? == 1 {
        return Ok(RetryOne::Redriven);
    }
    // Nothing changed; say why.
    Ok(
        match client
            .query_opt("SELECT status FROM outbox WHERE id = $1", &[&id])
            .await?
        {
            None => RetryOne::NotFound,
            Some(row) => RetryOne::NotFailed(row.try_get(0)?),
        },
    )
}

/// Re-drives every failed row; returns how many.
pub async fn retry_all_failed(client: &Client) -> Result<u64, Error> {
    client.execute(REDRIVE, &[]).await
}
