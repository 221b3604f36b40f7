//! What `idvctl prune` removes, and what it keeps because the worker or
//! the dispatcher still reads it back.
//!
//! What the rules read back, and so what stays whatever its age:
//!
//! - **Counted failed submissions** (`events.counted_attempt`): a subject's
//!   counters (`failed_attempts`, `blocked`, `last_error_*`) are recomputed
//!   from its sessions' counted events on each of its changes
//!   (`store::lock`'s "counted failures"). Deleting one would lower the
//!   count on the person's next event and let them past the limit. These
//!   rows stay; their payload (personal data, needed by no rule: the count
//!   reads the row's own columns) is erased.
//! - **Payloads an e-mail still needs**: the e-mail sink reads the address
//!   from the newest stored payload of the row's session, or of any session
//!   of the subject for a subject-level row (`dispatch::email::address`).
//!   An inbox row whose session (or whose session's subject, for a
//!   subject-level row) has an e-mail row still pending or failed (an
//!   operator may retry it) stays whole.
//! - **A subject's limit rows** (`outbox.from_limit`): their keys are derived
//!   again on every later change to the subject, and the row that is there
//!   is what stops "manual review" from being told, e-mailed and canceled
//!   twice. They stay.
//! - **Young inbox rows**: the inbox row is what makes a redelivery a
//!   duplicate, Stripe retries an event for up to 3 days and `resync`
//!   reaches 30 days back; the caller refuses an age under 31 days.
//!
//! What goes, past the age: other inbox rows (by `received_at`), outbox
//! rows sent, superseded or skipped (by `done_at`: each is final, only a
//! failed row is ever re-driven, and a pending one is still to do), and
//! dead letters replayed (by `replayed_at`; one still waiting is never
//! pruned: `idvctl dlq purge` does that).
//!
//! Each part goes in batches: a statement picks the next `limit` matching
//! rows by primary key after the last one handled, and deletes (or erases)
//! them in its own short transaction, so a prune takes few locks at a time,
//! can be interrupted at any point, and never reads the whole table twice.

use serde::Serialize;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error};

/// The e-mail rows that may still be performed (pending, or failed and
/// retryable by an operator) and whose address the dispatcher looks up in
/// the payloads of `t`'s session, or for a subject-level row of its
/// subject's sessions. The kinds are the e-mail [`ActionKind`]s
/// (checked by a test).
///
/// [`ActionKind`]: crate::domain::outbox::ActionKind
const NEEDED_BY_AN_EMAIL: &str = "(EXISTS (SELECT 1 FROM outbox o \
       WHERE o.session_id = t.session_id AND o.status IN ('pending', 'failed') \
       AND o.kind IN ('notify_user_verified', 'notify_user_retry', 'notify_user_alternative')) \
     OR EXISTS (SELECT 1 FROM sessions s JOIN outbox o ON o.subject_key = s.subject_key \
       WHERE s.id = t.session_id AND o.session_id IS NULL AND o.status IN ('pending', 'failed') \
       AND o.kind IN ('notify_user_verified', 'notify_user_retry', 'notify_user_alternative')))";

/// `$1`: the cutoff, Unix milliseconds.
const CUTOFF: &str = "to_timestamp($1::float8 / 1000)";

/// One kind of row a prune removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Inbox rows no rule reads back: deleted.
    InboxRows,
    /// The payloads of the counted failures (kept rows): erased.
    InboxPayloads,
    /// Outbox rows sent, superseded or skipped, not a subject's limit rows: deleted.
    OutboxRows,
    /// Dead letters replayed: deleted.
    DeadLetters,
}

impl Part {
    /// In the order a prune runs them.
    pub const ALL: [Self; 4] = [
        Self::InboxRows,
        Self::InboxPayloads,
        Self::OutboxRows,
        Self::DeadLetters,
    ];

    /// The table, whether its key is text, and the rows of it (as `t`)
    /// this part removes, given the cutoff `$1`.
    fn target(self) -> (&'static str, bool, String) {
        match self {
            Self::InboxRows => (
                "events",
                true,
                format!(
                    "t.received_at < {CUTOFF} AND NOT t.counted_attempt \
                     AND NOT {NEEDED_BY_AN_EMAIL}"
                ),
            ),
            Self::InboxPayloads => (
                "events",
                true,
                format!(
                    "t.received_at < {CUTOFF} AND t.counted_attempt AND t.payload IS NOT NULL \
                     AND NOT {NEEDED_BY_AN_EMAIL}"
                ),
            ),
            Self::OutboxRows => (
                "outbox",
                false,
                format!(
                    "t.done_at < {CUTOFF} AND t.status IN ('sent', 'superseded', 'skipped') \
                     AND NOT t.from_limit"
                ),
            ),
            Self::DeadLetters => ("dead_letters", false, format!("t.replayed_at < {CUTOFF}")),
        }
    }

    fn count_sql(self) -> String {
        let (table, _, rows) = self.target();
        format!("SELECT count(*) FROM {table} t WHERE {rows}")
    }

    /// `$2`: the last key handled; `$3`: the batch size. Returns how many
    /// rows it removed and the last of their keys, in the database's own
    /// order (a text key's collation need not be byte order).
    fn batch_sql(self) -> String {
        let (table, text_key, rows) = self.target();
        let change = match self {
            Self::InboxPayloads => format!("UPDATE {table} SET payload = NULL"),
            _ => format!("DELETE FROM {table}"),
        };
        let key = if text_key { "text" } else { "int8" };
        format!(
            "WITH done AS ({change} WHERE id IN (SELECT t.id FROM {table} t \
             WHERE t.id > $2::{key} AND {rows} ORDER BY t.id LIMIT $3) RETURNING id) \
             SELECT count(*), max(id) FROM done"
        )
    }

    /// Where this part's first batch starts: before every key.
    pub fn start(self) -> After {
        match self.target() {
            (_, true, _) => After::Text(String::new()),
            (_, false, _) => After::Number(0), // bigserial keys start at 1
        }
    }
}

/// Where a part's batches have got to: the last primary key handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// An inbox row's id (Stripe's event id).
    Text(String),
    /// An outbox row's or a dead letter's id.
    Number(i64),
}

/// Rows `part` would remove at `cutoff_ms`.
pub async fn count(client: &Client, part: Part, cutoff_ms: i64) -> Result<i64, Error> {
    let cutoff = cutoff_ms as f64;
    let row = client.query_one(&part.count_sql(), &[&cutoff]).await?;
    row.try_get(0)
}

/// Removes the next at most `limit` rows of `part` after `after` (the
/// first time, [`Part::start`]), in one statement (its own transaction);
/// returns how many, and where the next batch starts (`None`: the part is
/// done).
pub async fn batch(
    client: &Client,
    part: Part,
    cutoff_ms: i64,
    after: &After,
    limit: i64,
) -> Result<(u64, Option<After>), Error> {
    let cutoff = cutoff_ms as f64;
    let key: &(dyn ToSql + Sync) = match after {
        After::Text(id) => id,
        After::Number(id) => id,
    };
    let row = client
        .query_one(&part.batch_sql(), &[&cutoff, key, &limit])
        .await?;
    let done: i64 = row.try_get(0)?;
    let next = if done < limit {
        None
    } else if matches!(after, After::Text(_)) {
        row.try_get::<_, Option<String>>(1)?.map(After::Text)
    } else {
        row.try_get::<_, Option<i64>>(1)?.map(After::Number)
    };
    Ok((u64::try_from(done).unwrap_or(0), next))
}

/// Inbox rows older than the cutoff that stay, and why (a row may be
/// counted under both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Kept {
    /// Counted failed submissions: the attempt count is recomputed from them.
    pub counted_failures: i64,
    /// Rows whose payload stays because an e-mail still to send (or to
    /// retry) may read its address from it.
    pub payloads_for_an_email: i64,
}

/// The inbox rows older than `cutoff_ms` that a prune keeps.
pub async fn kept(client: &Client, cutoff_ms: i64) -> Result<Kept, Error> {
    let cutoff = cutoff_ms as f64;
    let sql = format!(
        "SELECT count(*) FILTER (WHERE t.counted_attempt), \
         count(*) FILTER (WHERE t.payload IS NOT NULL AND {NEEDED_BY_AN_EMAIL}) \
         FROM events t WHERE t.received_at < {CUTOFF}"
    );
    let row = client.query_one(&sql, &[&cutoff]).await?;
    Ok(Kept {
        counted_failures: row.try_get(0)?,
        payloads_for_an_email: row.try_get(1)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::outbox::ActionKind;

    #[test]
    fn the_email_kinds_are_those_of_the_sink() {
        for kind in [
            ActionKind::NotifyUserVerified,
            ActionKind::NotifyUserRetry,
            ActionKind::NotifyUserAlternative,
        ] {
            assert!(NEEDED_BY_AN_EMAIL.contains(&format!("'{kind}'")), "{kind}");
        }
        assert_eq!(
            ActionKind::ALL
                .iter()
                .filter(|k| k.as_str().starts_with("notify_user_"))
                .count(),
            3
        );
    }

    #[test]
    fn pending_and_failed_rows_are_never_a_target() {
        let (_, _, outbox) = Part::OutboxRows.target();
        assert!(!outbox.contains("'pending'") && !outbox.contains("'failed'"));
        assert!(outbox.contains("NOT t.from_limit"));
        let (_, _, inbox) = Part::InboxRows.target();
        assert!(inbox.contains("NOT t.counted_attempt"));
    }
}
