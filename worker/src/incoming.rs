//! A delivery's body turned into the event the store applies, or a
//! [`MessageFailure`] saying why it never can be.

use serde::Deserialize;
use shared::{EventType, SessionStatus, StripeEvent};

use crate::policy::CodeClass;
use crate::settings::Settings;
use crate::transition::{OrderKey, Stage};

mod delivery;
mod origin;
mod parse_reason;
pub use delivery::parse_delivery;
pub use origin::Origin;
pub use parse_reason::ParseReason;

/// What an event does to its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Moves the session through its lifecycle (if newer than what was applied).
    Lifecycle(Stage),
    /// Erases what we stored about the session's person; orthogonal to the lifecycle.
    Redacted,
}

/// A failed submission carried by a `requires_input` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: String,
    /// Stripe's text for the person; stored and forwarded, never logged.
    pub reason: Option<String>,
    pub class: CodeClass,
    /// Stripe documents this code (unknown ones are retryable and logged).
    pub known: bool,
}

/// An Identity event, checked and ready to apply.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub event_id: String,
    pub event_type: String,
    pub kind: EventKind,
    pub created: i64,
    pub livemode: bool,
    pub session_id: String,
    /// Who the session belongs to; `None` for `redacted` events and for
    /// redacted copies of other events (`redaction` set, or only a
    /// placeholder such as `"[redacted]"` where the key would be): Stripe
    /// erased who it was, and a placeholder is nobody's key.
    pub subject_key: Option<String>,
    /// The rank of `subject_key`'s source in `IDV_SUBJECT_KEY` (the session
    /// id ranks last): a session belongs to the key of lowest rank (then
    /// lowest key) any of its events names.
    pub subject_key_rank: i16,
    pub failure: Option<Failure>,
    /// The raw event, for audit and replay.
    pub payload: serde_json::Value,
    /// Unix milliseconds when ingest received it (or when we did).
    pub received_at_ms: i64,
    /// How it reached the worker: an inbox replay of an event the inbox
    /// has seen derives its actions again instead of being a duplicate.
    pub origin: Origin,
}

impl Incoming {
    /// The event as it reached the worker by `origin` (read from the
    /// delivery's headers, which [`parse`] does not see).
    #[must_use]
    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }

    /// Its place among the session's events (`None` for `redacted`).
    pub fn order_key(&self) -> Option<OrderKey> {
        match self.kind {
            EventKind::Lifecycle(stage) => Some(OrderKey {
                created: self.created,
                rank: stage.rank(self.failure.is_some()),
                event_id: self.event_id.clone(),
            }),
            EventKind::Redacted => None,
        }
    }
}

/// Why a message can never be applied: retried, then dead-lettered. Its
/// text is the `x-idv-failure-reason` header, so it never quotes the
/// payload: a class and a position ([`ParseReason`]), the event types and
/// statuses the worker knows, a SQLSTATE; never a value from the body (an
/// unknown type is left out too: the message's routing key carries it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageFailure {
    #[error("not a Stripe Identity event: {0}")]
    Unparseable(ParseReason),
    #[error("the event type is not one the worker handles")]
    UnknownType,
    /// Both are the worker's own names (a known event type, a known status).
    #[error("a `{event_type}` event carries a session in status `{status}`")]
    StatusMismatch {
        event_type: &'static str,
        status: &'static str,
    },
    /// The reason is the worker's own text (a SQLSTATE, never the server's
    /// message, which can quote a value).
    #[error("the database refused the event: {0}")]
    Refused(String),
}

impl MessageFailure {
    /// A short label for logs, metrics and the `x-idv-failure-kind` header.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unparseable(_) => "unparseable",
            Self::UnknownType => "unknown_type",
            Self::StatusMismatch { .. } => "status_mismatch",
            Self::Refused(_) => "refused",
        }
    }
}

/// The name of a type the worker handles, as the worker's own text.
fn event_type_name(event_type: &EventType) -> &'static str {
    match event_type {
        EventType::SessionCreated => "identity.verification_session.created",
        EventType::SessionProcessing => "identity.verification_session.processing",
        EventType::SessionRequiresInput => "identity.verification_session.requires_input",
        EventType::SessionVerified => "identity.verification_session.verified",
        EventType::SessionCanceled => "identity.verification_session.canceled",
        EventType::SessionRedacted => "identity.verification_session.redacted",
        EventType::Other(_) => "another",
    }
}

/// Parses and checks a delivery body.
pub fn parse(
    body: &[u8],
    received_at_ms: i64,
    settings: &Settings,
) -> Result<Incoming, MessageFailure> {
    let payload: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| MessageFailure::Unparseable(ParseReason::of(&e)))?;
    let event = StripeEvent::deserialize(&payload).map_err(|e| {
        // Read from the bytes again, only to say where: an error from the
        // parsed value has no position.
        let positioned = StripeEvent::parse(body).err();
        MessageFailure::Unparseable(ParseReason::of(positioned.as_ref().unwrap_or(&e)))
    })?;
    let session = event.session();
    let (kind, expected) = match &event.event_type {
        EventType::SessionCreated => (Stage::Created, Some(SessionStatus::RequiresInput)),
        EventType::SessionProcessing => (Stage::Processing, Some(SessionStatus::Processing)),
        EventType::SessionRequiresInput => {
            (Stage::RequiresInput, Some(SessionStatus::RequiresInput))
        }
        EventType::SessionVerified => (Stage::Verified, Some(SessionStatus::Verified)),
        EventType::SessionCanceled => (Stage::Canceled, Some(SessionStatus::Canceled)),
        EventType::SessionRedacted => (Stage::Created, None),
        EventType::Other(_) => return Err(MessageFailure::UnknownType),
    };
    if let Some(expected) = expected
        && session.status != expected
    {
        return Err(MessageFailure::StatusMismatch {
            event_type: event_type_name(&event.event_type),
            status: session.status.as_str(),
        });
    }
    let kind = match expected {
        Some(_) => EventKind::Lifecycle(kind),
        None => EventKind::Redacted,
    };
    let failure = match (kind, &session.last_error) {
        (EventKind::Lifecycle(Stage::RequiresInput), Some(error)) => {
            let classified = settings.policy.classify(&error.code);
            Some(Failure {
                code: error.code.to_string(),
                reason: error.reason.clone(),
                class: classified.class,
                known: classified.known,
            })
        }
        _ => None,
    };
    let subject_key = match kind {
        EventKind::Redacted => None,
        EventKind::Lifecycle(_) => settings.subject_key.resolve(session),
    };
    let subject_key_rank = subject_key.as_ref().map_or(i16::MAX, |k| k.rank);
    let subject_key = subject_key.map(|k| k.key);
    Ok(Incoming {
        event_id: event.id.to_string(),
        event_type: event.event_type.to_string(),
        kind,
        created: event.created,
        livemode: event.livemode,
        session_id: session.id.to_string(),
        subject_key,
        subject_key_rank,
        failure,
        payload,
        received_at_ms,
        origin: Origin::Delivered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::Env;

    fn settings() -> Settings {
        Settings::from_env(&Env::default()).unwrap()
    }

    const FAILED: &[u8] =
        include_bytes!("../../shared/fixtures/evt_requires_input_document_expired.json");
    const REDACTED: &[u8] = include_bytes!("../../shared/fixtures/evt_redacted.json");

    #[test]
    fn a_failed_submission_is_classified() {
        let incoming = parse(FAILED, 0, &settings()).unwrap();
        assert_eq!(incoming.kind, EventKind::Lifecycle(Stage::RequiresInput));
        assert_eq!(incoming.subject_key.as_deref(), Some("user_8f14e45fceea"));
        let failure = incoming.failure.unwrap();
        assert_eq!(failure.code, "document_expired");
        assert_eq!(failure.class, CodeClass::Retryable);
    }

    #[test]
    fn a_redacted_event_names_no_subject() {
        let incoming = parse(REDACTED, 0, &settings()).unwrap();
        assert_eq!(incoming.kind, EventKind::Redacted);
        assert_eq!(incoming.subject_key, None);
        assert_eq!(incoming.order_key(), None);
    }

    #[test]
    fn what_cannot_be_applied_is_a_message_failure() {
        let s = settings();
        assert_eq!(parse(b"{", 0, &s).unwrap_err().kind(), "unparseable");
        let other = br#"{"id":"evt_1","object":"event","type":"customer.created","created":1,
            "data":{"object":{"id":"vs_1","status":"processing"}}}"#;
        assert_eq!(parse(other, 0, &s).unwrap_err().kind(), "unknown_type");
        let not_a_session =
            br#"{"id":"evt_1","object":"event","type":"identity.verification_session.verified",
            "created":1,"data":{"object":{"id":"cus_1"}}}"#;
        assert_eq!(
            parse(not_a_session, 0, &s).unwrap_err().kind(),
            "unparseable"
        );
        let mismatch =
            br#"{"id":"evt_1","object":"event","type":"identity.verification_session.verified",
            "created":1,"data":{"object":{"id":"vs_1","status":"processing"}}}"#;
        assert_eq!(
            parse(mismatch, 0, &s).unwrap_err().kind(),
            "status_mismatch"
        );
    }
}

#[cfg(test)]
mod reason_tests;
