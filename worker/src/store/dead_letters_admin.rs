//! Dead letters as an operator sees and handles them (`idvctl dlq list |
//! replay | purge`): a selection turned into SQL over the table's own
//! columns, the views (never the payload: it is a person's data), and the
//! steps of a replay (lock, read the bytes, mark) and of a purge.
//!
//! Times are UTC text (`2026-01-01T00:00:00Z`). A replay takes a dead
//! letter's row lock with `FOR UPDATE SKIP LOCKED` in a transaction that
//! lasts one publish: two replays running at once never publish the same
//! row, and a row is marked only in the transaction that held it while the
//! broker confirmed its copy.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error, GenericClient, Row, Transaction};

use crate::transition::OrderKey;

/// Which dead letters a command takes: every field given narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only these events (empty: any).
    pub event_ids: Vec<String>,
    /// Exactly this `event_type`.
    pub event_type: Option<String>,
    /// `reason` contains this text (case-sensitive, no wildcards).
    pub reason: Option<String>,
    /// Exactly this `kind`.
    pub kind: Option<String>,
    /// Dead-lettered at or after this moment, Unix milliseconds.
    pub since_ms: Option<i64>,
    /// Only those not replayed yet (`replay`); `list` and `purge` take both.
    pub waiting_only: bool,
}

impl Selection {
    /// The `WHERE` clause and its parameters, numbered from `$1`. Only the
    /// filters given become SQL, so each is a plain predicate the planner
    /// can serve from an index (`dead_lettered_at`, `event_id`, and the
    /// `replayed_at IS NULL` partial index).
    fn predicate(&self) -> (String, Vec<&(dyn ToSql + Sync)>) {
        let mut clauses: Vec<String> = Vec::new();
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let filters: [(&str, Option<&(dyn ToSql + Sync)>); 5] = [
            (
                "event_id = ANY(?)",
                (!self.event_ids.is_empty()).then_some(&self.event_ids as _),
            ),
            ("event_type = ?", self.event_type.as_ref().map(|t| t as _)),
            (
                "strpos(reason, ?) > 0",
                self.reason.as_ref().map(|r| r as _),
            ),
            ("kind = ?", self.kind.as_ref().map(|k| k as _)),
            (
                "dead_lettered_at >= to_timestamp(?::bigint / 1000.0)",
                self.since_ms.as_ref().map(|s| s as _),
            ),
        ];
        for (clause, param) in filters {
            if let Some(param) = param {
                params.push(param);
                clauses.push(clause.replace('?', &format!("${}", params.len())));
            }
        }
        if self.waiting_only {
            clauses.push("replayed_at IS NULL".to_owned());
        }
        let predicate = if clauses.is_empty() {
            "true".to_owned()
        } else {
            clauses.join(" AND ")
        };
        (predicate, params)
    }
}

/// One dead letter without its payload: `idvctl dlq list --json`. The
/// field names are a contract for scripts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterView {
    /// The row's id: what `x-idv-replay: dead-letter:<id>` names.
    pub id: i64,
    /// `null` when the body could not be read as an event.
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub session_id: Option<String>,
    /// The routing key the message was first published with.
    pub routing_key: String,
    /// `unparseable | unknown_type | status_mismatch | refused` (the
    /// worker's) or `delivery_limit | expired | rejected | unknown`.
    pub kind: String,
    /// Why: the worker's text or the broker's, never payload text.
    pub reason: String,
    /// Failures (the worker's count) or deliveries (the broker's).
    pub attempts: i32,
    pub first_failure_at: String,
    pub last_failure_at: String,
    /// When the worker drained it from the DLQ.
    pub dead_lettered_at: String,
    /// When `dlq replay` had the broker confirm its copy; `null` if not.
    pub replayed_at: Option<String>,
    /// When its session's redaction erased the payload; `null` if kept.
    pub payload_erased_at: Option<String>,
}

/// A timestamptz column as UTC text.
macro_rules! utc {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
        )
    };
}

/// The columns of [`DeadLetterView`], in [`view`]'s order. Never the payload.
const VIEW_COLUMNS: &str = concat!(
    "id, event_id, event_type, session_id, routing_key, kind, reason, attempts, ",
    utc!("first_failure_at"),
    ", ",
    utc!("last_failure_at"),
    ", ",
    utc!("dead_lettered_at"),
    ", ",
    utc!("replayed_at"),
    ", ",
    utc!("payload_erased_at")
);

fn view(row: &Row) -> Result<DeadLetterView, Error> {
    Ok(DeadLetterView {
        id: row.try_get(0)?,
        event_id: row.try_get(1)?,
        event_type: row.try_get(2)?,
        session_id: row.try_get(3)?,
        routing_key: row.try_get(4)?,
        kind: row.try_get(5)?,
        reason: row.try_get(6)?,
        attempts: row.try_get(7)?,
        first_failure_at: row.try_get(8)?,
        last_failure_at: row.try_get(9)?,
        dead_lettered_at: row.try_get(10)?,
        replayed_at: row.try_get(11)?,
        payload_erased_at: row.try_get(12)?,
    })
}

/// Newest first (by when they were drained, then by id), at most `limit`.
pub async fn list(
    client: &Client,
    selection: &Selection,
    limit: u32,
) -> Result<Vec<DeadLetterView>, Error> {
    let (predicate, mut params) = selection.predicate();
    let limit = i64::from(limit);
    params.push(&limit);
    let sql = format!(
        "SELECT {VIEW_COLUMNS} FROM dead_letters WHERE {predicate} \
         ORDER BY dead_lettered_at DESC, id DESC LIMIT ${}",
        params.len()
    );
    client
        .query(&sql, &params)
        .await?
        .iter()
        .map(view)
        .collect()
}

/// The rows `ids` (those still there), newest first.
pub async fn views(client: &Client, ids: &[i64]) -> Result<Vec<DeadLetterView>, Error> {
    let sql = format!(
        "SELECT {VIEW_COLUMNS} FROM dead_letters WHERE id = ANY($1) \
         ORDER BY dead_lettered_at DESC, id DESC"
    );
    client
        .query(&sql, &[&ids])
        .await?
        .iter()
        .map(view)
        .collect()
}

/// The ids `selection` takes, newest first: a purge deletes exactly these.
pub async fn ids(client: &Client, selection: &Selection) -> Result<Vec<i64>, Error> {
    let (predicate, params) = selection.predicate();
    let sql = format!(
        "SELECT id FROM dead_letters WHERE {predicate} ORDER BY dead_lettered_at DESC, id DESC"
    );
    client
        .query(&sql, &params)
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect()
}

/// The given event ids that have no dead letter at all.
pub async fn unknown_event_ids(
    client: &Client,
    event_ids: &[String],
) -> Result<Vec<String>, Error> {
    let known: HashSet<String> = client
        .query(
            "SELECT DISTINCT event_id FROM dead_letters WHERE event_id = ANY($1)",
            &[&event_ids],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    Ok(event_ids
        .iter()
        .filter(|id| !known.contains(*id))
        .cloned()
        .collect())
}

/// Ids per statement of a purge: a few round trips for a large purge, no
/// statement holding a huge array.
const DELETE_CHUNK: usize = 5_000;

/// Deletes the rows `ids` (those still there); returns how many went.
pub async fn delete(client: &Client, ids: &[i64]) -> Result<u64, Error> {
    let mut deleted = 0;
    for chunk in ids.chunks(DELETE_CHUNK) {
        deleted += client
            .execute("DELETE FROM dead_letters WHERE id = ANY($1)", &[&chunk])
            .await?;
    }
    Ok(deleted)
}

/// A dead letter a replay may take: what is known of it before its bytes
/// are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: i64,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub has_payload: bool,
}

/// The dead letters `selection` takes for a replay (not replayed yet), in
/// the order they were drained (oldest first).
pub async fn candidates(client: &Client, selection: &Selection) -> Result<Vec<Candidate>, Error> {
    let selection = Selection {
        waiting_only: true,
        ..selection.clone()
    };
    let (predicate, params) = selection.predicate();
    let sql = format!(
        "SELECT id, event_id, event_type, payload IS NOT NULL FROM dead_letters \
         WHERE {predicate} ORDER BY dead_lettered_at, id"
    );
    client
        .query(&sql, &params)
        .await?
        .iter()
        .map(|row| {
            Ok(Candidate {
                id: row.try_get(0)?,
                event_id: row.try_get(1)?,
                event_type: row.try_get(2)?,
                has_payload: row.try_get(3)?,
            })
        })
        .collect()
}

/// A dead letter locked by a replay's transaction, with its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Locked {
    pub id: i64,
    pub event_type: Option<String>,
    pub event_created: Option<i64>,
    /// `None` once erased by a redaction.
    pub payload: Option<Vec<u8>>,
}

impl std::fmt::Debug for Locked {
    /// Without the payload: a person's data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locked")
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("event_created", &self.event_created)
            .field("payload", &self.payload.as_ref().map(|p| p.len()))
            .finish()
    }
}

/// Locks those of `ids` that are still waiting and that no other
/// transaction holds (`SKIP LOCKED`: another replay has them), newest
/// first. A row replayed and committed meanwhile is not returned.
pub async fn lock_waiting(tx: &Transaction<'_>, ids: &[i64]) -> Result<Vec<Locked>, Error> {
    tx.query(
        "SELECT id, event_type, event_created, payload FROM dead_letters \
         WHERE id = ANY($1) AND replayed_at IS NULL \
         ORDER BY dead_lettered_at DESC, id DESC FOR UPDATE SKIP LOCKED",
        &[&ids],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(Locked {
            id: row.try_get(0)?,
            event_type: row.try_get(1)?,
            event_created: row.try_get(2)?,
            payload: row.try_get(3)?,
        })
    })
    .collect()
}

/// Marks `ids` replayed as of now (clock time: after the broker's confirm,
/// not when the transaction began).
pub async fn mark_replayed(tx: &Transaction<'_>, ids: &[i64]) -> Result<u64, Error> {
    tx.execute(
        "UPDATE dead_letters SET replayed_at = clock_timestamp() WHERE id = ANY($1)",
        &[&ids],
    )
    .await
}

/// The payloads of `ids` (those not erased), for a dry run.
pub async fn payloads(
    client: &impl GenericClient,
    ids: &[i64],
) -> Result<HashMap<i64, Vec<u8>>, Error> {
    client
        .query(
            "SELECT id, payload FROM dead_letters WHERE id = ANY($1) AND payload IS NOT NULL",
            &[&ids],
        )
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// Those of `event_ids` the inbox has seen: the worker would find them
/// duplicates.
pub async fn seen_in_inbox(
    client: &impl GenericClient,
    event_ids: &[String],
) -> Result<HashSet<String>, Error> {
    client
        .query("SELECT id FROM events WHERE id = ANY($1)", &[&event_ids])
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect()
}

/// The applied order key of each of `session_ids` that has one: an event
/// whose key is not above it would be stale.
pub async fn applied_order_keys(
    client: &impl GenericClient,
    session_ids: &[String],
) -> Result<HashMap<String, OrderKey>, Error> {
    let rows = client
        .query(
            "SELECT id, last_event_created, last_event_rank, last_event_id FROM sessions \
             WHERE id = ANY($1) AND last_event_id IS NOT NULL",
            &[&session_ids],
        )
        .await?;
    let mut keys = HashMap::with_capacity(rows.len());
    for row in &rows {
        if let (Some(created), Some(rank), Some(event_id)) =
            (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?)
        {
            keys.insert(
                row.try_get(0)?,
                OrderKey {
                    created,
                    rank,
                    event_id,
                },
            );
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_filters_given_become_sql_numbered_in_order() {
        let nothing = Selection::default();
        let (sql, params) = nothing.predicate();
        assert_eq!((sql.as_str(), params.len()), ("true", 0));
        let selection = Selection {
            event_ids: vec!["evt_1".to_owned()],
            kind: Some("refused".to_owned()),
            since_ms: Some(1),
            waiting_only: true,
            ..Selection::default()
        };
        let (sql, params) = selection.predicate();
        assert_eq!(
            sql,
            "event_id = ANY($1) AND kind = $2 \
             AND dead_lettered_at >= to_timestamp($3::bigint / 1000.0) AND replayed_at IS NULL"
        );
        assert_eq!(params.len(), 3);
    }
}
