//! The rows a batch holds locked, as plain values: what the database had
//! when the batch locked them, then what the batch's events made of them
//! in memory, before one set-based write per table.

use std::collections::{HashMap, HashSet};

use crate::transition::{OrderKey, SessionSummary, Stage};

/// A session row while the batch holds it locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    pub subject_key: Option<String>,
    /// The rank of `subject_key`'s source ([`crate::subject_key::SubjectKey`]);
    /// `i16::MIN` for a session mapped before ranks were stored, so that it
    /// keeps its subject.
    pub subject_rank: i16,
    pub stage: Stage,
    /// `last_error_code IS NOT NULL`.
    pub has_error: bool,
    pub last: Option<OrderKey>,
    pub redacted: bool,
}

impl Default for SessionState {
    /// A row just created by the batch (the table's defaults).
    fn default() -> Self {
        Self {
            subject_key: None,
            subject_rank: i16::MAX,
            stage: Stage::Created,
            has_error: false,
            last: None,
            redacted: false,
        }
    }
}

impl SessionState {
    pub fn summary(&self, id: &str) -> SessionSummary {
        SessionSummary {
            id: id.to_owned(),
            stage: self.stage,
            has_error: self.has_error,
            last: self.last.clone(),
        }
    }
}

/// A subject row while the batch holds it locked (every column the
/// transition reads or writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectState {
    pub status: String,
    pub decided_by: Option<String>,
    pub failed_attempts: i32,
    pub blocked: bool,
    pub last_error_code: Option<String>,
    pub last_error_created: Option<i64>,
    pub last_error_event_id: Option<String>,
    /// The session whose verified outputs did not match `expected_identity`
    /// (written by the dispatcher; the worker only reads it).
    pub mismatch_session: Option<String>,
}

impl SubjectState {
    /// The person may not try again: counted failures reached `max`, one
    /// of them was of a code retrying cannot fix, or verified outputs did
    /// not match. Only more events can make it so, never fewer.
    pub fn at_limit(&self, max: i32) -> bool {
        self.failed_attempts >= max || self.blocked || self.mismatch_session.is_some()
    }
}

/// A counted failed submission of one of the sessions in play: a subject's
/// counters are recomputed from those of its sessions, so they are a
/// function of the set of events, whichever session joined it when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub event_id: String,
    pub created: i64,
    pub code: String,
    /// Its code is one retrying cannot fix.
    pub blocking: bool,
}

/// Everything the batch read under its locks.
#[derive(Debug, Clone, Default)]
pub struct Locked {
    /// The batch's sessions, by id.
    pub sessions: HashMap<String, SessionState>,
    /// The batch's subjects, by key.
    pub subjects: HashMap<String, SubjectState>,
    /// The other sessions of those subjects (not in the batch), by subject key.
    pub others: HashMap<String, Vec<SessionSummary>>,
    /// Ids of the batch's events already in the inbox.
    pub seen: HashSet<String>,
    /// Counted failures of the batch's sessions and of the subjects' other
    /// sessions, by session id (the batch's own are added as planned).
    pub counted: HashMap<String, Vec<Counted>>,
}

/// How a session row changes: the last event that moved it forward (if
/// any), and whether the batch ever moved it to `verified` or `canceled`
/// (their timestamps are kept even when a later event follows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionWrite {
    pub subject_key: Option<String>,
    pub subject_rank: i16,
    pub advance: Option<Advance>,
    pub verified: bool,
    pub canceled: bool,
}

/// The state a newer event moved a session to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance {
    pub stage: Stage,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub key: OrderKey,
}

/// One inbox row to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// Index of the event in the batch.
    pub index: usize,
    pub outcome: &'static str,
    pub counted: bool,
    /// A counted failure whose code retrying cannot fix.
    pub blocking: bool,
    pub keep_payload: bool,
}
