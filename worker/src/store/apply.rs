//! One batch in one transaction: lock the batch's sessions, then its
//! subjects, each in a fixed (sorted) order so that concurrent workers
//! cannot deadlock; then apply each event: dedupe in the inbox, move the
//! session forward if the event is newer, count a failed submission, derive
//! the subject's status and write the side effects to the outbox.

use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::Transaction;
use tokio_postgres::Error;

use super::outbox::{self, OutboxContext};
use super::queries::{self, SessionRow};
use super::{Applied, EventOutcome, Rules};
use crate::incoming::{EventKind, Incoming};
use crate::transition::{AttemptFacts, SubjectStatus, derive_subject};

/// Applies `batch` inside `tx`, returning one outcome per event, in order.
pub async fn apply_batch(
    tx: &Transaction<'_>,
    rules: &Rules,
    batch: &[&Incoming],
) -> Result<Vec<EventOutcome>, Error> {
    let session_ids: BTreeSet<&str> = batch.iter().map(|e| e.session_id.as_str()).collect();
    let session_ids: Vec<&str> = session_ids.into_iter().collect();
    let mut sessions: HashMap<String, SessionRow> = queries::lock_sessions(tx, &session_ids)
        .await?
        .into_iter()
        .collect();

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
    queries::lock_subjects(tx, &subject_keys).await?;

    let mut outcomes = Vec::with_capacity(batch.len());
    for event in batch {
        let session = sessions.entry(event.session_id.clone()).or_default();
        outcomes.push(apply_one(tx, rules, session, event).await?);
    }
    Ok(outcomes)
}

async fn apply_one(
    tx: &Transaction<'_>,
    rules: &Rules,
    session: &mut SessionRow,
    event: &Incoming,
) -> Result<EventOutcome, Error> {
    let stage = match event.kind {
        EventKind::Redacted => {
            if !queries::insert_event(tx, event, "redacted", false, false).await? {
                return Ok(EventOutcome::of(Applied::Duplicate));
            }
            queries::redact_session(tx, &event.session_id).await?;
            session.redacted = true;
            return Ok(EventOutcome::of(Applied::Redacted));
        }
        EventKind::Lifecycle(stage) => stage,
    };
    let key = event.order_key();
    let newer = key.is_some() && session.last < key;
    let counted = event.failure.as_ref().filter(|f| f.class.counts());
    let outcome = if newer { "applied" } else { "stale" };
    if !queries::insert_event(tx, event, outcome, counted.is_some(), !session.redacted).await? {
        return Ok(EventOutcome::of(Applied::Duplicate));
    }

    let newly_mapped = session.subject_key.is_none() && event.subject_key.is_some();
    if session.subject_key.is_none() {
        session.subject_key.clone_from(&event.subject_key);
    }
    let subject_key = session.subject_key.clone();
    if let (true, Some(key)) = (newer, &key) {
        queries::advance_session(tx, event, stage, subject_key.as_deref(), key).await?;
        session.last = Some(key.clone());
    } else if let (true, Some(subject)) = (newly_mapped, &subject_key) {
        queries::set_session_subject(tx, &event.session_id, subject).await?;
    }

    let mut result = EventOutcome::of(if newer {
        Applied::Applied
    } else {
        Applied::Stale
    });
    result.counted_failure = counted.map(|f| f.code.clone());
    let Some(subject_key) = subject_key else {
        return Ok(result);
    };
    if !(newer || counted.is_some() || newly_mapped) {
        return Ok(result);
    }

    // Independent statements, pipelined on the one connection.
    let counters = async {
        match (counted, &key) {
            (Some(failure), Some(key)) => {
                queries::count_failure(
                    tx,
                    &subject_key,
                    rules.max_failed_attempts,
                    failure.class.blocks(),
                    &failure.code,
                    key,
                )
                .await
            }
            _ => queries::subject_counters(tx, &subject_key).await,
        }
    };
    let (counters, summaries) =
        tokio::try_join!(counters, queries::subject_sessions(tx, &subject_key))?;
    let facts = AttemptFacts {
        failed_attempts: counters.failed_attempts,
        blocked: counters.blocked,
        max: rules.max_failed_attempts,
    };
    let (status, decided_by) = derive_subject(&summaries, facts);

    let reached_review = status == SubjectStatus::ManualReview
        && counters.status != SubjectStatus::ManualReview.as_str();
    result.reached_manual_review = reached_review;
    let context = OutboxContext {
        rules,
        event,
        stage,
        newer,
        redacted: session.redacted,
        subject_key: &subject_key,
        status,
        failed_attempts: counters.failed_attempts,
        reached_review,
        open_sessions: summaries
            .iter()
            .filter(|s| !s.stage.is_terminal())
            .map(|s| s.id.as_str())
            .collect(),
    };
    let rows = outbox::rows(&context);
    tokio::try_join!(
        queries::set_subject_status(tx, &subject_key, status.as_str(), decided_by.as_deref()),
        queries::insert_outbox(tx, &rows),
    )?;
    tracing::debug!(subject_status = %status, outbox_rows = rows.len(), "transition applied");
    Ok(result)
}
