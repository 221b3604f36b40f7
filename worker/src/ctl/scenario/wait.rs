//! Waiting for the worker: a story is applied once the inbox (`events`,
//! keyed by Stripe's event id) holds each of its events, because the worker
//! writes an event's inbox row in the same transaction as what it changed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::ProgressBar;
use tokio_postgres::Client;

/// How often the inbox is asked again.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Why the wait ended without every event applied.
#[derive(Debug)]
pub struct NotApplied {
    /// The events the inbox still lacks, as given.
    pub missing: Vec<String>,
    /// Of those, the ones in `dead_letters`, with the worker's failure kind.
    pub dead_lettered: Vec<(String, String)>,
}

/// Polls the inbox until it holds every id of `ids`, or `timeout` passes.
/// `bar` counts the events applied. A failing query is an error at once:
/// waiting would not mend a missing table or a refused login.
pub async fn until_applied(
    client: &Client,
    ids: &[String],
    timeout: Duration,
    bar: &ProgressBar,
) -> anyhow::Result<Result<Duration, NotApplied>> {
    let wanted: Vec<&str> = ids.iter().map(String::as_str).collect();
    let started = Instant::now();
    loop {
        let rows = client
            .query("SELECT id FROM events WHERE id = ANY($1)", &[&wanted])
            .await
            .context("reading the inbox (is the schema applied? `idvctl migrate`)")?;
        let seen: BTreeSet<String> = rows.iter().filter_map(|row| row.try_get(0).ok()).collect();
        bar.set_position(u64::try_from(seen.len()).unwrap_or(u64::MAX));
        if wanted.iter().all(|id| seen.contains(*id)) {
            return Ok(Ok(started.elapsed()));
        }
        if started.elapsed() >= timeout {
            let missing: Vec<String> = wanted
                .iter()
                .filter(|id| !seen.contains(**id))
                .map(|id| (*id).to_owned())
                .collect();
            let dead_lettered = dead_lettered(client, &missing).await;
            return Ok(Err(NotApplied {
                missing,
                dead_lettered,
            }));
        }
        tokio::time::sleep(POLL_EVERY.min(timeout.saturating_sub(started.elapsed()))).await;
    }
}

/// Those of `ids` the worker dead-lettered, with their failure kind (the
/// worker's own label, never payload text). Best effort: a database
/// without the `dead_letters` table (or without the drain filling it)
/// simply has none.
async fn dead_lettered(client: &Client, ids: &[String]) -> Vec<(String, String)> {
    let wanted: Vec<&str> = ids.iter().map(String::as_str).collect();
    client
        .query(
            "SELECT DISTINCT event_id, kind FROM dead_letters WHERE event_id = ANY($1) \
             ORDER BY event_id",
            &[&wanted],
        )
        .await
        .map(|rows| {
            rows.iter()
                .filter_map(|row| Some((row.try_get(0).ok()?, row.try_get(1).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}
