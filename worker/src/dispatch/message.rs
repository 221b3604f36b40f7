//! The outcome message the platform receives, on the `idv.outcomes`
//! exchange and by webhook: compact, versioned, documented in the README
//! ("Outcome messages"). A new field may be added within a version; a field
//! removed or changed in meaning is a new version.

use serde::{Deserialize, Serialize};

use super::claim::{Claimed, Facts};
use crate::domain::outbox::Outcome;

/// The schema version of [`OutcomeMessage`].
pub const VERSION: u32 = 1;

/// What happened to one person, as the platform is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeMessage {
    pub version: u32,
    /// The same for every copy of this message: the receiver's dedupe key.
    pub idempotency_key: String,
    /// The person (the subject key), when known.
    pub subject: Option<String>,
    /// The VerificationSession, or for `manual_review` the one that
    /// decided it.
    pub session: Option<String>,
    pub outcome: String,
    /// The failure's code for `requires_input`; the subject's latest
    /// otherwise.
    pub last_error_code: Option<String>,
    /// Stripe's text for the person (`requires_input` only; never after a
    /// redaction).
    pub reason: Option<String>,
    /// Counted failed submissions of the person, capped at the limit.
    pub failed_attempts: i32,
    pub attempts_left: i32,
    /// RFC 3339, UTC.
    pub occurred_at: String,
}

impl OutcomeMessage {
    /// The message for `row`, with what is true now (`facts`).
    pub fn new(row: &Claimed, facts: &Facts, max_failed_attempts: i32) -> Self {
        let text = |field: &str| {
            row.payload
                .get(field)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let outcome = text("outcome").unwrap_or_default();
        let requires_input = outcome == Outcome::RequiresInput.as_str();
        let session = match Outcome::parse(&outcome) {
            Some(Outcome::ManualReview) => facts.decided_by.clone(),
            _ => row.session_id.clone(),
        };
        Self {
            version: VERSION,
            idempotency_key: row.idempotency_key.clone(),
            subject: facts.subject.clone(),
            session,
            last_error_code: if requires_input {
                text("code")
            } else {
                facts.last_error_code.clone()
            },
            reason: if requires_input && !facts.session_redacted {
                text("reason")
            } else {
                None
            },
            outcome,
            failed_attempts: facts.failed_attempts,
            attempts_left: (max_failed_attempts - facts.failed_attempts).max(0),
            occurred_at: facts.occurred_at.clone(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}
