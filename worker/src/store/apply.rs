//! One batch in one transaction, in a fixed number of round trips whatever
//! its size: lock the batch's sessions and read which events the inbox
//! already has; lock its subjects and read their other sessions; apply the
//! events in memory in batch order ([`plan`]); write every table with one
//! statement ([`write`]). Row locks are taken sessions first, then
//! subjects, each in sorted order, so concurrent workers cannot deadlock.

use std::collections::BTreeSet;

use deadpool_postgres::Transaction;

use super::state::Locked;
use super::{EventOutcome, Rules, StoreError, lock, plan, write};
use crate::incoming::Incoming;

/// Applies `batch` inside `tx`: one outcome per event, in order, or `None`
/// when an event the inbox did not hold at the read was inserted meanwhile
/// (only possible if one event id came with two session ids): the caller
/// rolls back and tries again, and then sees it as a duplicate.
pub async fn apply_batch(
    tx: &Transaction<'_>,
    rules: &Rules,
    batch: &[&Incoming],
) -> Result<Option<Vec<EventOutcome>>, StoreError> {
    let session_ids: BTreeSet<&str> = batch.iter().map(|e| e.session_id.as_str()).collect();
    let session_ids: Vec<&str> = session_ids.into_iter().collect();
    let event_ids: Vec<&str> = batch.iter().map(|e| e.event_id.as_str()).collect();
    let (sessions, seen) = lock::sessions(tx, &session_ids, &event_ids).await?;

    // Each event's subject as its session maps it, else as the event names it.
    let subject_keys: BTreeSet<&str> = batch
        .iter()
        .filter_map(|e| {
            sessions
                .get(&e.session_id)
                .and_then(|s| s.subject_key.as_deref())
                .or(e.subject_key.as_deref())
        })
        .collect();
    let subject_keys: Vec<&str> = subject_keys.into_iter().collect();
    let (subjects, others) = lock::subjects(tx, &subject_keys, &session_ids).await?;

    let locked = Locked {
        sessions,
        subjects,
        others,
        seen,
    };
    let plan = plan::plan(rules, batch, locked).map_err(StoreError::Refused)?;
    let inserted = write::all(tx, batch, &plan).await?;
    if usize::try_from(inserted).ok() != Some(plan.events.len()) {
        return Ok(None);
    }
    tracing::debug!(
        events = batch.len(),
        inserted,
        sessions = plan.sessions.len(),
        subjects = plan.subjects.len(),
        outbox_rows = plan.outbox.len(),
        "batch written"
    );
    Ok(Some(plan.outcomes))
}
