//! A batch applied in memory to the rows it holds locked, one event at a
//! time in the batch's order: dedupe against the inbox (and earlier events
//! of the batch), move the session forward if the event is newer, count a
//! failed submission, derive the subject's status and collect the side
//! effects. The result is the rows to write; the database sees one
//! statement per table instead of several per event. The rules are those
//! of [`crate::transition`], which stays the only place that decides.

use std::collections::{BTreeMap, HashSet};

use super::outbox::{self, OutboxContext, OutboxRow};
use super::state::{Advance, EventRow, Locked, SessionState, SessionWrite, SubjectState};
use super::{Applied, EventOutcome, Rules};
use crate::incoming::{EventKind, Incoming};
use crate::transition::{AttemptFacts, OrderKey, SessionSummary, Stage, SubjectStatus};

/// What a batch writes, and each event's outcome in batch order.
#[derive(Debug, Default)]
pub struct Plan {
    pub outcomes: Vec<EventOutcome>,
    pub events: Vec<EventRow>,
    /// Sorted by id, like every write, so row locks are taken in one order.
    pub sessions: BTreeMap<String, SessionWrite>,
    pub subjects: BTreeMap<String, SubjectState>,
    /// Deduplicated by idempotency key, the first row winning.
    pub outbox: Vec<OutboxRow>,
    /// Sessions a `redacted` event of the batch erases (after the writes).
    pub redacted: Vec<String>,
}

/// Applies `batch` to `locked`; `Err` if a row the batch needs was not
/// locked (an invariant of the caller, never expected).
pub fn plan(rules: &Rules, batch: &[&Incoming], locked: Locked) -> Result<Plan, String> {
    let mut planner = Planner {
        rules,
        locked,
        plan: Plan::default(),
        outbox_keys: HashSet::new(),
    };
    for (index, event) in batch.iter().enumerate() {
        let outcome = planner.apply(index, event)?;
        planner.plan.outcomes.push(outcome);
    }
    Ok(planner.plan)
}

struct Planner<'r> {
    rules: &'r Rules,
    locked: Locked,
    plan: Plan,
    outbox_keys: HashSet<String>,
}

impl Planner<'_> {
    fn apply(&mut self, index: usize, event: &Incoming) -> Result<EventOutcome, String> {
        let session = self
            .locked
            .sessions
            .entry(event.session_id.clone())
            .or_default();
        let stage = match event.kind {
            EventKind::Redacted => {
                if !self.locked.seen.insert(event.event_id.clone()) {
                    return Ok(EventOutcome::of(Applied::Duplicate));
                }
                self.plan.events.push(EventRow {
                    index,
                    outcome: "redacted",
                    counted: false,
                    keep_payload: false,
                });
                // Erased again even if it already was (as one event at a
                // time would): the row's `updated_at` says a redaction came.
                session.redacted = true;
                if !self.plan.redacted.contains(&event.session_id) {
                    self.plan.redacted.push(event.session_id.clone());
                }
                return Ok(EventOutcome::of(Applied::Redacted));
            }
            EventKind::Lifecycle(stage) => stage,
        };
        let key = event.order_key();
        let newer = key.is_some() && session.last < key;
        let counted = event.failure.as_ref().filter(|f| f.class.counts());
        if !self.locked.seen.insert(event.event_id.clone()) {
            return Ok(EventOutcome::of(Applied::Duplicate));
        }
        self.plan.events.push(EventRow {
            index,
            outcome: if newer { "applied" } else { "stale" },
            counted: counted.is_some(),
            keep_payload: !session.redacted,
        });

        let newly_mapped = session.subject_key.is_none() && event.subject_key.is_some();
        if session.subject_key.is_none() {
            session.subject_key.clone_from(&event.subject_key);
        }
        let subject_key = session.subject_key.clone();
        if let (true, Some(key)) = (newer, &key) {
            session.last = Some(key.clone());
            session.stage = stage;
            session.has_error = event.failure.is_some();
            let write = self.session_write(&event.session_id, &subject_key);
            write.verified |= stage == Stage::Verified;
            write.canceled |= stage == Stage::Canceled;
            write.advance = Some(Advance {
                stage,
                code: event.failure.as_ref().map(|f| f.code.clone()),
                reason: event.failure.as_ref().and_then(|f| f.reason.clone()),
                key: key.clone(),
            });
        } else if newly_mapped {
            self.session_write(&event.session_id, &subject_key);
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

        let summaries = self.summaries(&subject_key);
        let subject = self
            .locked
            .subjects
            .get(&subject_key)
            .ok_or_else(|| format!("subject row `{subject_key}` was not locked"))?;
        let mut subject = subject.clone();
        let before = subject.status.clone();
        if let (Some(failure), Some(key)) = (counted, &key) {
            count_failure(
                &mut subject,
                self.rules.max_failed_attempts,
                failure.class.blocks(),
                &failure.code,
                key,
            );
        }
        let facts = AttemptFacts {
            failed_attempts: subject.failed_attempts,
            blocked: subject.blocked,
            max: self.rules.max_failed_attempts,
        };
        let (status, decided_by) = crate::transition::derive_subject(&summaries, facts);
        let reached_review =
            status == SubjectStatus::ManualReview && before != SubjectStatus::ManualReview.as_str();
        result.reached_manual_review = reached_review;
        let context = OutboxContext {
            rules: self.rules,
            event,
            stage,
            newer,
            redacted: self
                .locked
                .sessions
                .get(&event.session_id)
                .is_some_and(|s| s.redacted),
            subject_key: &subject_key,
            status,
            failed_attempts: subject.failed_attempts,
            reached_review,
            open_sessions: summaries
                .iter()
                .filter(|s| !s.stage.is_terminal())
                .map(|s| s.id.as_str())
                .collect(),
        };
        for row in outbox::rows(&context) {
            if self.outbox_keys.insert(row.idempotency_key.clone()) {
                self.plan.outbox.push(row);
            }
        }
        subject.status = status.as_str().to_owned();
        subject.decided_by = decided_by;
        let changed = self.locked.subjects.get(&subject_key) != Some(&subject);
        if changed || counted.is_some() {
            self.plan
                .subjects
                .insert(subject_key.clone(), subject.clone());
        }
        self.locked.subjects.insert(subject_key, subject);
        tracing::debug!(subject_status = %status, "transition planned");
        Ok(result)
    }

    fn session_write(&mut self, id: &str, subject_key: &Option<String>) -> &mut SessionWrite {
        let write = self.plan.sessions.entry(id.to_owned()).or_default();
        write.subject_key.clone_from(subject_key);
        write
    }

    /// Every session of the subject as the transaction now sees it: those
    /// outside the batch as read, the batch's own as updated so far.
    fn summaries(&self, subject_key: &str) -> Vec<SessionSummary> {
        let mut summaries: Vec<SessionSummary> = self
            .locked
            .others
            .get(subject_key)
            .cloned()
            .unwrap_or_default();
        summaries.extend(
            self.locked
                .sessions
                .iter()
                .filter(|(_, s)| s.subject_key.as_deref() == Some(subject_key))
                .map(|(id, s): (&String, &SessionState)| s.summary(id)),
        );
        summaries.sort_by(|a, b| a.id.cmp(&b.id));
        summaries
    }
}

/// One failed submission: counted (capped at `max`), and its code kept if
/// it is the most recent failure by (`created`, event id).
fn count_failure(subject: &mut SubjectState, max: i32, blocks: bool, code: &str, key: &OrderKey) {
    subject.failed_attempts = subject.failed_attempts.saturating_add(1).min(max);
    subject.blocked |= blocks;
    let more_recent = match (subject.last_error_created, &subject.last_error_event_id) {
        (None, _) => true,
        (Some(created), Some(id)) => (created, id.as_str()) < (key.created, key.event_id.as_str()),
        // A code without its event id: only a later second replaces it.
        (Some(created), None) => created < key.created,
    };
    if more_recent {
        subject.last_error_code = Some(code.to_owned());
        subject.last_error_event_id = Some(key.event_id.clone());
    }
    subject.last_error_created = Some(
        subject
            .last_error_created
            .map_or(key.created, |c| c.max(key.created)),
    );
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
