//! The rules, apart from storage: pure functions and plain data, no I/O.
//! [`store`](crate::store) reads and locks rows, hands them to these rules
//! and writes what they decide; nothing here depends on `store`.
//!
//! - [`transition`]: which event is newer, what a subject's status is;
//! - [`policy`]: what each `last_error.code` means for a retry;
//! - [`subject_key`]: whose session it is;
//! - [`plan`] over [`state`]: a batch of events applied in memory, in
//!   delivery order, to the locked rows, giving the rows to write;
//! - [`outbox`]: the side effects a transition calls for.

pub mod outbox;
// Public for the batch-plan benchmark (`worker/benches/hot_paths.rs`).
pub mod plan;
pub mod policy;
pub mod state;
pub mod subject_key;
pub mod transition;

use crate::settings::Settings;

/// The rules a transition follows, from the settings.
#[derive(Debug, Clone)]
pub struct Rules {
    /// `IDV_MAX_FAILED_ATTEMPTS`.
    pub max_failed_attempts: i32,
    /// The actions this deployment performs, so the rows to write.
    pub sinks: outbox::Sinks,
    /// `IDV_CODE_POLICY`: classifies the counted failures stored without a
    /// class (`events.blocking_attempt` NULL: counted before migration V3),
    /// so the policy in force decides whether they block.
    pub policy: crate::policy::Policy,
}

impl Rules {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            max_failed_attempts: settings.max_failed_attempts,
            sinks: settings.dispatch.sinks(),
            policy: settings.policy.clone(),
        }
    }
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Applied {
    /// It moved its session forward.
    Applied,
    /// Older than what the session had: stored, the session unchanged
    /// (a failed submission still counts once).
    Stale,
    /// Its id was already in the inbox: nothing changed.
    Duplicate,
    /// A `redacted` event: the session's personal data was erased.
    Redacted,
    /// An inbox replay (`idvctl events replay`) of an event the inbox has
    /// seen: no state changed, its outbox rows were derived again with the
    /// sinks configured now (existing keys kept) and its subject's limit
    /// rows reconciled.
    Replayed,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Stale => "stale",
            Self::Duplicate => "duplicate",
            Self::Redacted => "redacted",
            Self::Replayed => "replayed",
        }
    }
}

/// The outcome of one event, for acks, metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventOutcome {
    pub applied: Applied,
    /// The code of a failed submission this event counted.
    pub counted_failure: Option<String>,
    /// The subject entered manual review with this event.
    pub reached_manual_review: bool,
}

impl EventOutcome {
    fn of(applied: Applied) -> Self {
        Self {
            applied,
            counted_failure: None,
            reached_manual_review: false,
        }
    }
}
