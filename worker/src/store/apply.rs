//! One batch in one transaction, in a fixed number of round trips whatever
//! its size: lock the batch's sessions and read which events the inbox
//! already has; lock its subjects and read their other sessions; apply the
//! events in memory in batch order ([`plan`]); write every table with one
//! statement ([`write`]). Row locks are taken sessions first, then
//! subjects, each in sorted order, so concurrent workers cannot deadlock.

use std::collections::BTreeSet;

use deadpool_postgres::Transaction;

use super::{EventOutcome, Rules, StoreError, lock, write};
use crate::domain::plan;
use crate::domain::state::Locked;
use crate::incoming::Incoming;

/// Applies `batch` inside `tx`: one outcome per event, in order, or `None`
/// when the caller should roll back and try again: an event the inbox did
/// not hold at the read was inserted meanwhile (only possible if one event
/// id came with two session ids; the next attempt sees a duplicate), or a
/// subject row was deleted while this transaction waited for its lock.
pub async fn apply_batch(
    tx: &Transaction<'_>,
    rules: &Rules,
    batch: &[&Incoming],
) -> Result<Option<Vec<EventOutcome>>, StoreError> {
    let session_ids: BTreeSet<&str> = batch.iter().map(|e| e.session_id.as_str()).collect();
    let session_ids: Vec<&str> = session_ids.into_iter().collect();
    let event_ids: Vec<&str> = batch.iter().map(|e| e.event_id.as_str()).collect();
    let (sessions, seen) = lock::sessions(tx, &session_ids, &event_ids).await?;

    // Each session's subject as mapped, and each key an event names that
    // would take the session over (a lower rank or key): the planner may
    // move the session there. A subject left with no session is deleted.
    let mut subject_keys: BTreeSet<&str> = BTreeSet::new();
    for event in batch {
        let mapped = sessions.get(&event.session_id);
        let current = mapped.and_then(|s| Some((s.subject_rank, s.subject_key.as_deref()?)));
        if let Some((_, key)) = current {
            subject_keys.insert(key);
        }
        if let Some(key) = event.subject_key.as_deref()
            && current.is_none_or(|current| (event.subject_key_rank, key) < current)
        {
            subject_keys.insert(key);
        }
    }
    let subject_keys: Vec<&str> = subject_keys.into_iter().collect();
    let (subjects, others, counted) =
        lock::subjects(tx, &subject_keys, &session_ids, &rules.policy).await?;
    if subjects.len() != subject_keys.len() {
        // A subject was deleted (left with no session) by the transaction
        // whose lock this one waited for: start again, and create it anew.
        return Ok(None);
    }

    let locked = Locked {
        sessions,
        subjects,
        others,
        seen,
        counted,
    };
    let plan =
        plan::plan(rules, batch, locked).map_err(|error| StoreError::Refused(error.to_string()))?;
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
