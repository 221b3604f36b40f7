//! Stripe `Event` objects: the envelope ingest checks and the full event the
//! worker applies.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::session::VerificationSession;

pub mod shape;

/// Longest event type we accept: an AMQP routing key is a short string.
const MAX_EVENT_TYPE_LEN: usize = 255;
/// Longest Stripe object id we accept; real ones are about 30 characters.
const MAX_ID_LEN: usize = 255;

/// A Stripe event id (`evt_…`). The inbox is keyed by it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(String);

impl EventId {
    /// Parses an event id: `evt_` followed by ASCII letters, digits or `_`.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        parse_prefixed_id(raw, "evt_").map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Cow::<'de, str>::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Why a string is not a Stripe object id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("expected an id starting with `{prefix}`")]
    MissingPrefix { prefix: &'static str },
    #[error("an id may hold only ASCII letters, digits and `_`, at most {MAX_ID_LEN} characters")]
    BadCharacters,
}

/// Checks a Stripe id of the form `{prefix}{[A-Za-z0-9_]+}`.
pub(crate) fn parse_prefixed_id(raw: &str, prefix: &'static str) -> Result<String, IdError> {
    let rest = raw
        .strip_prefix(prefix)
        .ok_or(IdError::MissingPrefix { prefix })?;
    let well_formed = !rest.is_empty()
        && raw.len() <= MAX_ID_LEN
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if well_formed {
        Ok(raw.to_owned())
    } else {
        Err(IdError::BadCharacters)
    }
}

/// The Identity event types this pipeline acts on, and any other type as data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    SessionCreated,
    SessionProcessing,
    SessionRequiresInput,
    SessionVerified,
    SessionCanceled,
    SessionRedacted,
    /// Any other Stripe event type, kept verbatim.
    Other(String),
}

impl EventType {
    /// Every `identity.verification_session.*` type, in lifecycle order.
    pub const SESSION_EVENTS: [EventType; 6] = [
        EventType::SessionCreated,
        EventType::SessionProcessing,
        EventType::SessionRequiresInput,
        EventType::SessionVerified,
        EventType::SessionCanceled,
        EventType::SessionRedacted,
    ];

    pub fn parse(raw: &str) -> Self {
        match raw {
            "identity.verification_session.created" => Self::SessionCreated,
            "identity.verification_session.processing" => Self::SessionProcessing,
            "identity.verification_session.requires_input" => Self::SessionRequiresInput,
            "identity.verification_session.verified" => Self::SessionVerified,
            "identity.verification_session.canceled" => Self::SessionCanceled,
            "identity.verification_session.redacted" => Self::SessionRedacted,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::SessionCreated => "identity.verification_session.created",
            Self::SessionProcessing => "identity.verification_session.processing",
            Self::SessionRequiresInput => "identity.verification_session.requires_input",
            Self::SessionVerified => "identity.verification_session.verified",
            Self::SessionCanceled => "identity.verification_session.canceled",
            Self::SessionRedacted => "identity.verification_session.redacted",
            Self::Other(raw) => raw,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::parse(&raw))
    }
}

/// The part of an event that ingest checks before publishing: enough to know
/// the body is a Stripe event and to route and label it. The body itself is
/// published unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventEnvelope {
    pub id: EventId,
    pub event_type: String,
    /// Unix seconds at which Stripe created the event.
    pub created: i64,
    /// `None` when the body does not say (Stripe always does).
    pub livemode: Option<bool>,
}

/// Why a body is not a Stripe event.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not a Stripe event (JSON with `id`, `object`, `type`, `created`): {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("body is not a Stripe event: `object` is not \"event\"")]
    NotAnEvent,
    #[error("event `id` is invalid: {0}")]
    BadId(#[source] IdError),
    #[error("event `type` must be 1 to {MAX_EVENT_TYPE_LEN} characters of a-z, 0-9, `.` and `_`")]
    BadType,
    #[error("body is not a Stripe event: {0}")]
    BadShape(#[from] shape::ShapeError),
}

/// Only the fields the envelope needs; serde skips the rest without
/// allocating for it.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    created: i64,
    /// Absent is `None`; present, it must be a boolean (`null` too is
    /// refused), as [`StripeEvent`] reads it.
    #[serde(default, deserialize_with = "present_bool")]
    livemode: Option<bool>,
}

/// A boolean that is there: `Some` of it (absence is the field's default).
fn present_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    bool::deserialize(deserializer).map(Some)
}

impl EventEnvelope {
    /// Parses the envelope of a raw event body.
    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        // Before serde, which skips what it does not read unchecked.
        shape::check(body)?;
        let raw: RawEnvelope<'_> = serde_json::from_slice(body).map_err(EnvelopeError::NotJson)?;
        if raw.object.as_deref() != Some("event") {
            return Err(EnvelopeError::NotAnEvent);
        }
        let id = EventId::parse(&raw.id).map_err(EnvelopeError::BadId)?;
        let type_ok = !raw.event_type.is_empty()
            && raw.event_type.len() <= MAX_EVENT_TYPE_LEN
            && raw
                .event_type
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
        if !type_ok {
            return Err(EnvelopeError::BadType);
        }
        Ok(Self {
            id,
            event_type: raw.event_type.into_owned(),
            created: raw.created,
            livemode: raw.livemode,
        })
    }
}

/// A whole Identity event as the worker applies it.
#[derive(Clone, Debug, Deserialize)]
pub struct StripeEvent {
    pub id: EventId,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Unix seconds at which Stripe created the event.
    pub created: i64,
    #[serde(default)]
    pub livemode: bool,
    pub data: EventData,
}

/// `data` of an Identity event.
#[derive(Clone, Debug, Deserialize)]
pub struct EventData {
    /// The VerificationSession as it was when the event was created.
    pub object: VerificationSession,
}

impl StripeEvent {
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    pub fn session(&self) -> &VerificationSession {
        &self.data.object
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIED: &[u8] = include_bytes!("../fixtures/evt_verified.json");

    #[test]
    fn envelope_of_a_fixture() {
        let envelope = EventEnvelope::parse(VERIFIED).unwrap();
        assert!(envelope.id.as_str().starts_with("evt_"));
        assert_eq!(
            envelope.event_type,
            "identity.verification_session.verified"
        );
        assert!(envelope.created > 1_700_000_000);
        assert_eq!(envelope.livemode, Some(false));
    }

    #[test]
    fn envelope_rejects_what_is_not_an_event() {
        assert!(matches!(
            EventEnvelope::parse(b"not json"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert!(matches!(
            EventEnvelope::parse(b"[1,2]"),
            Err(EnvelopeError::NotJson(_))
        ));
        let customer = br#"{"id":"evt_1","object":"customer","type":"a.b","created":1}"#;
        assert!(matches!(
            EventEnvelope::parse(customer),
            Err(EnvelopeError::NotAnEvent)
        ));
        let bad_id = br#"{"id":"cus_1","object":"event","type":"a.b","created":1}"#;
        assert!(matches!(
            EventEnvelope::parse(bad_id),
            Err(EnvelopeError::BadId(_))
        ));
        let bad_type = br#"{"id":"evt_1","object":"event","type":"A B","created":1}"#;
        assert!(matches!(
            EventEnvelope::parse(bad_type),
            Err(EnvelopeError::BadType)
        ));
        let no_created = br#"{"id":"evt_1","object":"event","type":"a.b"}"#;
        assert!(matches!(
            EventEnvelope::parse(no_created),
            Err(EnvelopeError::NotJson(_))
        ));
    }

    /// Found by the `worker_delivery` fuzz target: ingest took `null` for
    /// "not said" and published the event, which the worker, reading a
    /// boolean, could never apply (a poison message).
    #[test]
    fn envelope_refuses_a_null_livemode_as_the_worker_does() {
        let null = br#"{"id":"evt_1","object":"event","type":"a.b","created":1,"livemode":null}"#;
        assert!(matches!(
            EventEnvelope::parse(null),
            Err(EnvelopeError::NotJson(_))
        ));
        assert!(StripeEvent::parse(null).is_err());
        let absent = br#"{"id":"evt_1","object":"event","type":"a.b","created":1}"#;
        assert_eq!(EventEnvelope::parse(absent).unwrap().livemode, None);
    }

    #[test]
    fn envelope_rejects_bodies_not_utf8_or_too_deep_in_fields_it_skips() {
        // The fixture's closing brace, before its final newline.
        let close = VERIFIED.iter().rposition(|&b| b == b'}').unwrap();
        let mut not_utf8 = VERIFIED.to_vec();
        not_utf8.splice(close..close, *b",\"note\":\"\xff\"");
        assert!(matches!(
            EventEnvelope::parse(&not_utf8),
            Err(EnvelopeError::BadShape(shape::ShapeError::NotUtf8))
        ));
        let deep = format!(
            "{},\"deep\":{}1{}}}",
            std::str::from_utf8(&VERIFIED[..close]).unwrap(),
            "[".repeat(1_000),
            "]".repeat(1_000)
        );
        assert!(matches!(
            EventEnvelope::parse(deep.as_bytes()),
            Err(EnvelopeError::BadShape(shape::ShapeError::TooDeep))
        ));
        let error = EventEnvelope::parse(deep.as_bytes())
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "body is not a Stripe event: it is nested deeper than 64 levels"
        );
    }

    #[test]
    fn escaped_strings_and_owned_values_parse() {
        let escaped = br#"{"id":"evt_1","object":"ev\u0065nt","type":"a.b","created":1}"#;
        assert!(EventEnvelope::parse(escaped).is_ok());
        let value: serde_json::Value = serde_json::from_slice(VERIFIED).unwrap();
        let event: StripeEvent = serde_json::from_value(value).unwrap();
        assert_eq!(event.event_type, EventType::SessionVerified);
    }

    #[test]
    fn event_types_round_trip() {
        for event_type in EventType::SESSION_EVENTS {
            assert_eq!(EventType::parse(event_type.as_str()), event_type);
        }
        assert_eq!(
            EventType::parse("customer.created"),
            EventType::Other("customer.created".into())
        );
    }

    #[test]
    fn full_event_of_a_fixture() {
        let event = StripeEvent::parse(VERIFIED).unwrap();
        assert_eq!(event.event_type, EventType::SessionVerified);
        assert!(event.session().id.as_str().starts_with("vs_"));
    }
}
