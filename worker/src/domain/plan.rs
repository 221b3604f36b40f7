//! A batch applied in memory to the rows it holds locked, one event at a
//! time in the batch's order: dedupe against the inbox (and earlier events
//! of the batch; an inbox replay of a seen event derives its actions
//! again instead, changing no state), map the session to the best key its
//! events name, move it forward if the event is newer, record a failed
//! submission, recompute the subject's counters from its sessions' counted
//! failures, derive its status and collect the side effects. The result is
//! the rows to write; the database sees one statement per table instead of
//! several per event. The rules are those of [`crate::transition`], which
//! stays the only place that decides.

use std::collections::{BTreeMap, HashSet};

use super::outbox::{self, OutboxRow};
use super::state::{Advance, Counted, EventRow, Locked, SessionState, SessionWrite, SubjectState};
use super::{Applied, EventOutcome, Rules};
use crate::incoming::{EventKind, Failure, Incoming, Origin};
use crate::transition::{AttemptFacts, OrderKey, SessionSummary, Stage, SubjectStatus};

/// What a batch writes, and each event's outcome in batch order.
#[derive(Debug, Default)]
pub struct Plan {
    pub outcomes: Vec<EventOutcome>,
    pub events: Vec<EventRow>,
    /// Sorted by id, like every write, so row locks are taken in one order.
    pub sessions: BTreeMap<String, SessionWrite>,
    pub subjects: BTreeMap<String, SubjectState>,
    /// Subjects the batch left with no session (a key that lost to a better
    /// one, or the one a session moved away from): deleted, so the record
    /// does not depend on which event came first or how they were batched.
    pub deleted_subjects: Vec<String>,
    /// Deduplicated by idempotency key, the first row winning: the rows the
    /// batch's events call for, then the limit rows of `reconciled`.
    pub outbox: Vec<OutboxRow>,
    /// Subjects whose limit rows the batch derived again: their pending
    /// limit rows not in `outbox` are deleted before it is inserted.
    pub reconciled: Vec<String>,
    /// Sessions the batch moved to `requires_input`: a cancel waiting for
    /// that is due again.
    pub rearmed: Vec<String>,
    /// Sessions a `redacted` event of the batch erases (after the writes).
    pub redacted: Vec<String>,
}

/// A batch the rules cannot plan: the locks taken do not cover it (a bug,
/// or rows that changed between the reads). The batch is refused and redone
/// one event per transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("a subject row the batch needs was not locked")]
    SubjectNotLocked,
}

/// Applies `batch` to `locked`; `Err` if a row the batch needs was not
/// locked (an invariant of the caller, never expected).
pub fn plan(rules: &Rules, batch: &[&Incoming], locked: Locked) -> Result<Plan, PlanError> {
    let mut planner = Planner {
        rules,
        locked,
        plan: Plan::default(),
        outbox_keys: HashSet::new(),
        limit_rows: BTreeMap::new(),
    };
    for (index, event) in batch.iter().enumerate() {
        let outcome = planner.apply(index, event)?;
        planner.plan.outcomes.push(outcome);
    }
    planner.delete_empty_subjects();
    let limit_rows = std::mem::take(&mut planner.limit_rows);
    for (subject, rows) in limit_rows {
        planner.plan.reconciled.push(subject);
        for row in rows {
            planner.push_row(row);
        }
    }
    Ok(planner.plan)
}

struct Planner<'r> {
    rules: &'r Rules,
    locked: Locked,
    plan: Plan,
    outbox_keys: HashSet<String>,
    /// The limit rows each subject the batch changed calls for, as of its
    /// last change in the batch.
    limit_rows: BTreeMap<String, Vec<OutboxRow>>,
}

impl Planner<'_> {
    /// Applies one event to the batch's state: recorded in the inbox (or
    /// seen as a duplicate, or replayed: [`Self::seen_again`]), its session mapped to a subject, a failed
    /// submission counted, the session moved forward if the event is
    /// newer, and the subject's status, counters and side effects derived
    /// again from its sessions.
    fn apply(&mut self, index: usize, event: &Incoming) -> Result<EventOutcome, PlanError> {
        let stage = match event.kind {
            EventKind::Redacted => return self.redact(index, event),
            EventKind::Lifecycle(stage) => stage,
        };
        let key = event.order_key();
        let counted = event.failure.as_ref().filter(|f| f.class.counts());
        let Some(newer) = self.record(index, event, key.as_ref(), counted) else {
            return self.seen_again(event);
        };
        let (previous, subject_key, subject_rank) = self.map_to_subject(event);
        let remapped = previous != subject_key;
        let redacted = self.is_redacted(&event.session_id);
        for row in outbox::event_rows(self.rules.sinks, event, redacted, subject_key.as_deref()) {
            self.push_row(row);
        }
        if let (Some(failure), Some(key)) = (counted, &key) {
            self.count_failure(event, key, failure);
        }
        match (newer, &key) {
            (true, Some(key)) => {
                self.advance_session(event, stage, key, &subject_key, subject_rank);
            }
            _ if remapped => {
                self.session_write(&event.session_id, &subject_key, subject_rank);
            }
            _ => {}
        }
        if let (true, Some(left)) = (remapped, &previous) {
            self.refresh(left)?;
        }

        let mut result = EventOutcome::of(if newer {
            Applied::Applied
        } else {
            Applied::Stale
        });
        result.counted_failure = counted.map(|f| f.code.clone());
        if let Some(subject_key) = subject_key
            && (newer || counted.is_some() || remapped)
        {
            result.reached_manual_review = self.decide_subject(subject_key)?;
        }
        Ok(result)
    }

    /// A `redacted` event: recorded (once), the session's personal data
    /// marked for erasure. Orthogonal to the lifecycle.
    fn redact(&mut self, index: usize, event: &Incoming) -> Result<EventOutcome, PlanError> {
        if !self.locked.seen.insert(event.event_id.clone()) {
            return self.seen_again(event);
        }
        self.plan.events.push(EventRow {
            index,
            outcome: "redacted",
            counted: false,
            blocking: false,
            keep_payload: false,
        });
        // Erased again even if it already was (as one event at a time
        // would): the row's `updated_at` says a redaction came.
        self.locked
            .sessions
            .entry(event.session_id.clone())
            .or_default()
            .redacted = true;
        if !self.plan.redacted.contains(&event.session_id) {
            self.plan.redacted.push(event.session_id.clone());
        }
        let subject_key = self
            .locked
            .sessions
            .get(&event.session_id)
            .and_then(|s| s.subject_key.clone());
        for row in outbox::event_rows(self.rules.sinks, event, true, subject_key.as_deref()) {
            self.push_row(row);
        }
        Ok(EventOutcome::of(Applied::Redacted))
    }

    /// An event whose id the inbox (or the batch) holds already: a
    /// duplicate, unless it is an inbox replay ([`Origin::InboxReplay`]),
    /// which derives the event's outbox rows again, with the sinks
    /// configured now, and its subject's limit rows, and changes nothing
    /// else. No inbox row, no session or subject write: the record is a
    /// function of the set of events, and this one is in the set already.
    /// The rows are those the event's first application would write today
    /// (under the session's subject and redaction as they stand); the
    /// rows already there keep their key, status and payload (`ON
    /// CONFLICT`), so only the missing ones are added. The limit rows
    /// follow the subject as stored, as after any change to it.
    fn seen_again(&mut self, event: &Incoming) -> Result<EventOutcome, PlanError> {
        if event.origin != Origin::InboxReplay {
            return Ok(EventOutcome::of(Applied::Duplicate));
        }
        let subject_key = self
            .locked
            .sessions
            .get(&event.session_id)
            .and_then(|s| s.subject_key.clone());
        let redacted = self.is_redacted(&event.session_id);
        for row in outbox::event_rows(self.rules.sinks, event, redacted, subject_key.as_deref()) {
            self.push_row(row);
        }
        if let Some(key) = subject_key {
            let subject = self
                .locked
                .subjects
                .get(&key)
                .ok_or(PlanError::SubjectNotLocked)?
                .clone();
            // The limit rows a sink configured since calls for, only where
            // the record as stored says the person reached the limit, and
            // never a deletion: a replay does not decide the subject again,
            // so a limit changed since (IDV_MAX_FAILED_ATTEMPTS) must not
            // tell the platform "manual review" of a subject whose record
            // says otherwise, nor take back what the record still says.
            if subject.status == SubjectStatus::ManualReview.as_str()
                && subject.at_limit(self.rules.max_failed_attempts)
            {
                let summaries = self.summaries(&key);
                let sessions: Vec<&str> = summaries.iter().map(|s| s.id.as_str()).collect();
                for row in outbox::limit_rows(self.rules.sinks, &key, &sessions) {
                    self.push_row(row);
                }
            }
        }
        Ok(EventOutcome::of(Applied::Replayed))
    }

    /// Records `event` in the inbox: `None` if its id was seen already (a
    /// duplicate), else whether it is newer than its session's last one.
    fn record(
        &mut self,
        index: usize,
        event: &Incoming,
        key: Option<&OrderKey>,
        counted: Option<&Failure>,
    ) -> Option<bool> {
        let session = self
            .locked
            .sessions
            .entry(event.session_id.clone())
            .or_default();
        let newer = key.is_some() && session.last.as_ref() < key;
        if !self.locked.seen.insert(event.event_id.clone()) {
            return None;
        }
        self.plan.events.push(EventRow {
            index,
            outcome: if newer { "applied" } else { "stale" },
            counted: counted.is_some(),
            blocking: counted.is_some_and(|f| f.class.blocks()),
            keep_payload: !session.redacted,
        });
        Some(newer)
    }

    /// The session belongs to the lowest (rank, key) its events name: a
    /// function of its events, whichever arrives first. A redacted copy
    /// names nobody; a session no event named stays unmapped, its counted
    /// failures waiting in the inbox for the event that names it. Returns
    /// the session's key before and after, and its rank.
    fn map_to_subject(&mut self, event: &Incoming) -> (Option<String>, Option<String>, i16) {
        let session = self
            .locked
            .sessions
            .entry(event.session_id.clone())
            .or_default();
        let previous = session.subject_key.clone();
        if let Some(named) = &event.subject_key {
            let takes_over = match &session.subject_key {
                None => true,
                Some(current) => {
                    (event.subject_key_rank, named.as_str())
                        < (session.subject_rank, current.as_str())
                }
            };
            if takes_over {
                session.subject_key = Some(named.clone());
                session.subject_rank = event.subject_key_rank;
            }
        }
        (previous, session.subject_key.clone(), session.subject_rank)
    }

    /// A failed submission counts once per event id, newer or not, so the
    /// count does not depend on arrival order.
    fn count_failure(&mut self, event: &Incoming, key: &OrderKey, failure: &Failure) {
        self.locked
            .counted
            .entry(event.session_id.clone())
            .or_default()
            .push(Counted {
                event_id: key.event_id.clone(),
                created: key.created,
                code: failure.code.clone(),
                blocking: failure.class.blocks(),
            });
    }

    /// Moves the session forward to `key`, the newest event it has seen.
    fn advance_session(
        &mut self,
        event: &Incoming,
        stage: Stage,
        key: &OrderKey,
        subject_key: &Option<String>,
        subject_rank: i16,
    ) {
        let session = self
            .locked
            .sessions
            .entry(event.session_id.clone())
            .or_default();
        session.last = Some(key.clone());
        session.stage = stage;
        session.has_error = event.failure.is_some();
        let write = self.session_write(&event.session_id, subject_key, subject_rank);
        write.verified |= stage == Stage::Verified;
        write.canceled |= stage == Stage::Canceled;
        write.advance = Some(Advance {
            stage,
            code: event.failure.as_ref().map(|f| f.code.clone()),
            reason: event.failure.as_ref().and_then(|f| f.reason.clone()),
            key: key.clone(),
        });
        if stage == Stage::RequiresInput && !self.plan.rearmed.contains(&event.session_id) {
            self.plan.rearmed.push(event.session_id.clone());
        }
    }

    /// Derives the subject again from its sessions and counted failures:
    /// status, counters, the session that decided it, and the limit rows it
    /// calls for. Returns whether it entered manual review.
    fn decide_subject(&mut self, subject_key: String) -> Result<bool, PlanError> {
        let summaries = self.summaries(&subject_key);
        let mut subject = self
            .locked
            .subjects
            .get(&subject_key)
            .ok_or(PlanError::SubjectNotLocked)?
            .clone();
        let before = subject.status.clone();
        let status = self.rederive(&mut subject, &summaries);
        let reached_review =
            status == SubjectStatus::ManualReview && before != SubjectStatus::ManualReview.as_str();
        self.derive_limit_rows(&subject_key, &subject, &summaries);
        self.store_subject(subject_key, subject);
        tracing::debug!(subject_status = %status, "transition planned");
        Ok(reached_review)
    }

    /// The limit rows `subject` (`key`, with its sessions `summaries`) calls
    /// for now: none unless it is at its limit.
    fn derive_limit_rows(
        &mut self,
        key: &str,
        subject: &SubjectState,
        summaries: &[SessionSummary],
    ) {
        let rows = if subject.at_limit(self.rules.max_failed_attempts) {
            let sessions: Vec<&str> = summaries.iter().map(|s| s.id.as_str()).collect();
            outbox::limit_rows(self.rules.sinks, key, &sessions)
        } else {
            Vec::new()
        };
        self.limit_rows.insert(key.to_owned(), rows);
    }

    /// Adds `row` to the plan unless a row with its key already is.
    fn push_row(&mut self, row: OutboxRow) {
        if self.outbox_keys.insert(row.idempotency_key.clone()) {
            self.plan.outbox.push(row);
        }
    }

    fn is_redacted(&self, session_id: &str) -> bool {
        self.locked
            .sessions
            .get(session_id)
            .is_some_and(|s| s.redacted)
    }

    /// Keeps `subject` as the batch's latest state of `key`, and writes it
    /// if it changed.
    fn store_subject(&mut self, key: String, subject: SubjectState) {
        if self.locked.subjects.get(&key) != Some(&subject) {
            self.plan.subjects.insert(key.clone(), subject.clone());
        }
        self.locked.subjects.insert(key, subject);
    }

    /// Recomputes the subject `key` a session just left: its counters and
    /// status from the sessions it still has (no side effect: nothing
    /// happened to its person).
    fn refresh(&mut self, key: &str) -> Result<(), PlanError> {
        let summaries = self.summaries(key);
        let mut subject = self
            .locked
            .subjects
            .get(key)
            .ok_or(PlanError::SubjectNotLocked)?
            .clone();
        self.rederive(&mut subject, &summaries);
        self.derive_limit_rows(key, &subject, &summaries);
        self.store_subject(key.to_owned(), subject);
        Ok(())
    }

    /// The subject's counters, status and deciding session, derived again
    /// from its sessions (`summaries`); returns the status.
    fn rederive(&self, subject: &mut SubjectState, summaries: &[SessionSummary]) -> SubjectStatus {
        self.recount(subject, summaries);
        let facts = AttemptFacts {
            failed_attempts: subject.failed_attempts,
            blocked: subject.blocked,
            max: self.rules.max_failed_attempts,
        };
        let (status, decided_by) = match &subject.mismatch_session {
            // Verified outputs that did not match what the platform expected:
            // manual review, whatever the events say.
            Some(session) => (SubjectStatus::ManualReview, Some(session.clone())),
            None => crate::transition::derive_subject(summaries, facts),
        };
        subject.status = status.as_str().to_owned();
        subject.decided_by = decided_by;
        status
    }

    /// The subject's counters from the counted failures of its sessions
    /// (`summaries`): their number capped at the limit, whether one was of
    /// a code retrying cannot fix, and the code of the most recent by
    /// (`created`, event id). A function of the set of events.
    fn recount(&self, subject: &mut SubjectState, summaries: &[SessionSummary]) {
        let failures: Vec<&Counted> = summaries
            .iter()
            .filter_map(|s| self.locked.counted.get(&s.id))
            .flatten()
            .collect();
        let count = i32::try_from(failures.len()).unwrap_or(i32::MAX);
        subject.failed_attempts = count.min(self.rules.max_failed_attempts);
        subject.blocked = failures.iter().any(|f| f.blocking);
        let last = failures
            .iter()
            .max_by(|a, b| (a.created, &a.event_id).cmp(&(b.created, &b.event_id)));
        subject.last_error_code = last.map(|f| f.code.clone());
        subject.last_error_event_id = last.map(|f| f.event_id.clone());
        subject.last_error_created = last.map(|f| f.created);
    }

    /// Moves every locked subject no session belongs to any more from the
    /// writes to the deletions.
    fn delete_empty_subjects(&mut self) {
        let mut empty: Vec<String> = self
            .locked
            .subjects
            .keys()
            .filter(|key| {
                self.locked.others.get(*key).is_none_or(Vec::is_empty)
                    && !self
                        .locked
                        .sessions
                        .values()
                        .any(|s| s.subject_key.as_ref() == Some(*key))
            })
            .cloned()
            .collect();
        empty.sort();
        for key in &empty {
            self.plan.subjects.remove(key);
            self.limit_rows.insert(key.clone(), Vec::new());
        }
        self.plan.deleted_subjects = empty;
    }

    fn session_write(
        &mut self,
        id: &str,
        subject_key: &Option<String>,
        subject_rank: i16,
    ) -> &mut SessionWrite {
        let write = self.plan.sessions.entry(id.to_owned()).or_default();
        write.subject_key.clone_from(subject_key);
        write.subject_rank = subject_rank;
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

#[cfg(test)]
mod tests;
