//! The inbox as `idvctl events replay` reads it: which stored events a
//! filter selects, oldest first, then their payloads a page at a time.
//!
//! Two steps, so that a replay of many events neither holds a transaction
//! open while it publishes (paced by `--rate`, it may take hours) nor holds
//! every payload in memory: the selection is one statement returning ids
//! and a few columns; the payloads are read by primary key, a page before
//! it is published. An event whose payload is gone by then (its session
//! was redacted, or `idvctl prune` erased it) is skipped and counted.
//!
//! A payload is `jsonb`: what is read back is PostgreSQL's rendering of the
//! JSON (`payload::text`: keys in its order, its spacing), not the bytes
//! Stripe sent. The worker reads it the same way; a signature would not
//! verify over it, and none is checked past ingest.

use std::collections::HashMap;

use serde::Serialize;
use tokio_postgres::{Client, Error};

/// What `idvctl events replay` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayFilter<'a> {
    /// Events received at or after this moment, Unix milliseconds.
    pub since_ms: i64,
    /// Only this event type (a full `identity.verification_session.*`).
    pub event_type: Option<&'a str>,
    /// Only this VerificationSession.
    pub session_id: Option<&'a str>,
}

/// One stored event a replay selected, without its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub session_id: String,
    /// Stripe's `created`, Unix seconds.
    pub created: i64,
    /// When it was received, UTC text.
    pub received_at: String,
}

/// Events with a payload received since `filter.since_ms`, oldest first
/// (by receipt, then Stripe's `created`, then id: a total order).
const SELECT: &str = "SELECT id, type, session_id, created, \
     to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
     FROM events \
     WHERE payload IS NOT NULL AND received_at >= to_timestamp($1::float8 / 1000) \
       AND ($2::text IS NULL OR type = $2) AND ($3::text IS NULL OR session_id = $3) \
     ORDER BY received_at, created, id";

/// The payloads of some events, as text, by primary key.
const PAYLOADS: &str =
    "SELECT id, payload::text FROM events WHERE id = ANY($1) AND payload IS NOT NULL";

/// The events `filter` selects, oldest first, without their payloads.
pub async fn select(client: &Client, filter: ReplayFilter<'_>) -> Result<Vec<StoredEvent>, Error> {
    let since = filter.since_ms as f64;
    let rows = client
        .query(SELECT, &[&since, &filter.event_type, &filter.session_id])
        .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredEvent {
                id: row.try_get(0)?,
                event_type: row.try_get(1)?,
                session_id: row.try_get(2)?,
                created: row.try_get(3)?,
                received_at: row.try_get(4)?,
            })
        })
        .collect()
}

/// The payloads (as PostgreSQL renders the JSON) of those of `ids` that
/// still have one.
pub async fn payloads(client: &Client, ids: &[&str]) -> Result<HashMap<String, String>, Error> {
    let rows = client.query(PAYLOADS, &[&ids]).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}
