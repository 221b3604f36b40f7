//! The worker's parse of a delivery (`worker::incoming::parse_delivery`,
//! which the consumer calls): the body with the message's headers, under
//! the worker's settings.
//!
//! Input: `<control>\n<body>`. The control line is `;`-separated
//! `NAME=VALUE` items: `IDV_…` names are worker settings
//! (`IDV_SUBJECT_KEY`, `IDV_CODE_POLICY`); any other name is a message
//! header whose value is `TYPE:VALUE`, TYPE one of `i64 i32 i16 i8 u32 u16
//! u8 long short bool f64 void ts` (e.g. `x-received-at-ms=i64:1767230000123;
//! x-idv-replay=long:inbox`). Seeds: the fixtures' events under a few
//! control lines.
//!
//! - The receive time is the integer `x-received-at-ms` header, else the
//!   clock; the origin is an inbox replay exactly for `x-idv-replay: inbox`.
//! - An applied event is what its body says: the JSON payload kept is the
//!   body's, ids and type and created are the body's, the session's status
//!   fits the type, a failure exists exactly for a `requires_input` event
//!   with a `last_error` and is classified by the configured policy, a
//!   subject key is never a placeholder nor set on a redacted event.
//! - Where ingest's envelope check also accepts the body, both read the
//!   same id, type, created and livemode; and an event ingest accepts, of
//!   a type the worker handles, is applied once its `data` holds a session
//!   of the right status (ingest publishes no poison envelope).
//! - A refusal's text (the `x-idv-failure-reason` header operators read)
//!   is built from the worker's own words only: a class, a schema field, a
//!   position, a known type and status; never text from the body.

#![no_main]

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shared::config::Env;
use shared::envelope::{RECEIVED_AT_MS, REPLAY};
use shared::{EventEnvelope, LastErrorCode};
use worker::incoming::{EventKind, Incoming, MessageFailure, Origin, parse_delivery};
use worker::settings::Settings;
use worker::subject_key::is_placeholder;

/// What the clock says when the header does not.
const NOW_MS: i64 = 4_242;

const SESSION_TYPES: [(&str, Option<&str>); 6] = [
    (
        "identity.verification_session.created",
        Some("requires_input"),
    ),
    (
        "identity.verification_session.processing",
        Some("processing"),
    ),
    (
        "identity.verification_session.requires_input",
        Some("requires_input"),
    ),
    ("identity.verification_session.verified", Some("verified")),
    ("identity.verification_session.canceled", Some("canceled")),
    ("identity.verification_session.redacted", None),
];
const STATUSES: [&str; 4] = ["requires_input", "processing", "verified", "canceled"];

/// `ParseReason`'s classes and schema fields
/// (worker/src/incoming/parse_reason.rs): keep in step with it.
const CLASSES: [&str; 10] = [
    "unreadable body",
    "truncated JSON",
    "invalid JSON",
    "missing field",
    "duplicate field",
    "unknown field",
    "a value of the wrong type",
    "an unknown variant",
    "a sequence or map of the wrong length",
    "an invalid value",
];
const SCHEMA_FIELDS: [&str; 15] = [
    "id",
    "object",
    "type",
    "created",
    "livemode",
    "data",
    "status",
    "last_error",
    "code",
    "reason",
    "client_reference_id",
    "metadata",
    "last_verification_report",
    "redaction",
    "verification_type",
];

fuzz_target!(|data: &[u8]| {
    let (control, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&[][..], data),
    };
    let control = String::from_utf8_lossy(control);
    let (env, headers) = read_control(&control);
    let Ok(settings) = Settings::from_env(&Env::from_pairs(env)) else {
        return; // Settings refusing a value is tested with the settings.
    };
    let properties = BasicProperties::default().with_headers(headers.clone());
    let parsed = parse_delivery(body, &properties, &settings, || NOW_MS);
    match parsed {
        Ok(event) => check_applied(&event, body, &headers, &settings),
        Err(failure) => check_refused(&failure),
    }
    applies_what_ingest_accepts(body, &properties, &settings);
});

/// An event whose envelope ingest accepts (and so publishes) is applied
/// once its session is one the worker can apply: ingest and the worker do
/// not disagree about the envelope's fields, which would make a poison
/// message of an accepted event.
fn applies_what_ingest_accepts(body: &[u8], properties: &BasicProperties, settings: &Settings) {
    let Ok(envelope) = EventEnvelope::parse(body) else {
        return;
    };
    let Some((_, status)) = SESSION_TYPES
        .iter()
        .find(|(name, _)| *name == envelope.event_type)
    else {
        return; // Another type: a message failure by design.
    };
    let Ok(mut payload) = serde_json::from_slice::<Value>(body) else {
        panic!("ingest accepted a body that is not JSON");
    };
    payload["data"] = serde_json::json!({
        "object": {"id": "vs_fuzz", "status": status.unwrap_or("canceled")}
    });
    let body = serde_json::to_vec(&payload).unwrap_or_else(|e| panic!("{e}"));
    if let Err(failure) = parse_delivery(&body, properties, settings, || NOW_MS) {
        panic!("ingest accepts {envelope:?}, the worker refuses it: {failure}");
    }
}

fn read_control(control: &str) -> (Vec<(String, String)>, FieldTable) {
    let mut env = Vec::new();
    let mut headers = FieldTable::default();
    for item in control.split(';') {
        let Some((name, value)) = item.split_once('=') else {
            continue;
        };
        if name.starts_with("IDV_") {
            env.push((name.to_owned(), value.to_owned()));
        } else if name.len() > 255 {
            // The wire cannot carry it (a short string), and lapin panics.
        } else if let Some(value) = header_value(value) {
            headers.insert(ShortString::from(name), value);
        }
    }
    (env, headers)
}

fn header_value(typed: &str) -> Option<AMQPValue> {
    let (kind, raw) = typed.split_once(':')?;
    Some(match kind {
        "i64" => AMQPValue::LongLongInt(raw.parse().ok()?),
        "i32" => AMQPValue::LongInt(raw.parse().ok()?),
        "i16" => AMQPValue::ShortInt(raw.parse().ok()?),
        "i8" => AMQPValue::ShortShortInt(raw.parse().ok()?),
        "u32" => AMQPValue::LongUInt(raw.parse().ok()?),
        "u16" => AMQPValue::ShortUInt(raw.parse().ok()?),
        "u8" => AMQPValue::ShortShortUInt(raw.parse().ok()?),
        "long" => AMQPValue::LongString(LongString::from(raw)),
        // At most 255 bytes on the wire.
        "short" if raw.len() <= 255 => AMQPValue::ShortString(ShortString::from(raw)),
        "bool" => AMQPValue::Boolean(raw == "true"),
        "f64" => AMQPValue::Double(raw.parse().ok()?),
        "ts" => AMQPValue::Timestamp(raw.parse().ok()?),
        "void" => AMQPValue::Void,
        _ => return None,
    })
}

/// The receive time the headers give, read here independently.
fn expected_received(headers: &FieldTable) -> i64 {
    match headers.inner().get(RECEIVED_AT_MS) {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortShortInt(n)) => i64::from(*n),
        Some(AMQPValue::LongUInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortUInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortShortUInt(n)) => i64::from(*n),
        _ => NOW_MS,
    }
}

fn expected_origin(headers: &FieldTable) -> Origin {
    let inbox = match headers.inner().get(REPLAY) {
        Some(AMQPValue::LongString(s)) => s.as_bytes() == b"inbox",
        Some(AMQPValue::ShortString(s)) => s.as_str() == "inbox",
        _ => false,
    };
    if inbox {
        Origin::InboxReplay
    } else {
        Origin::Delivered
    }
}

fn check_applied(event: &Incoming, body: &[u8], headers: &FieldTable, settings: &Settings) {
    assert_eq!(event.received_at_ms, expected_received(headers));
    assert_eq!(event.origin, expected_origin(headers));
    let payload: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("applied a body that is not JSON: {e}"));
    assert_eq!(event.payload, payload, "the payload kept is not the body's");
    assert_eq!(payload["id"].as_str(), Some(event.event_id.as_str()));
    assert!(event.event_id.starts_with("evt_"));
    assert_eq!(payload["type"].as_str(), Some(event.event_type.as_str()));
    assert_eq!(payload["created"].as_i64(), Some(event.created));
    assert_eq!(
        payload["livemode"].as_bool().unwrap_or(false),
        event.livemode
    );
    let session = &payload["data"]["object"];
    assert_eq!(session["id"].as_str(), Some(event.session_id.as_str()));
    assert!(event.session_id.starts_with("vs_"));

    let (_, status) = SESSION_TYPES
        .iter()
        .find(|(name, _)| *name == event.event_type)
        .unwrap_or_else(|| panic!("applied an event of another type"));
    match status {
        Some(status) => {
            assert_eq!(session["status"].as_str(), Some(*status));
            assert!(matches!(event.kind, EventKind::Lifecycle(_)));
            assert!(event.order_key().is_some());
        }
        None => {
            assert_eq!(event.kind, EventKind::Redacted);
            assert_eq!(event.subject_key, None, "a redacted event names a subject");
            assert!(event.order_key().is_none());
        }
    }

    let last_error = session.get("last_error").filter(|e| !e.is_null());
    let requires_input = event.event_type == "identity.verification_session.requires_input";
    match (&event.failure, last_error) {
        (Some(failure), Some(error)) if requires_input => {
            assert_eq!(error["code"].as_str(), Some(failure.code.as_str()));
            assert_eq!(
                error.get("reason").and_then(Value::as_str),
                failure.reason.as_deref()
            );
            let classified = settings
                .policy
                .classify(&LastErrorCode::parse(&failure.code));
            assert_eq!(failure.class, classified.class);
            assert_eq!(failure.known, classified.known);
        }
        (None, None) => {}
        (None, Some(_)) if !requires_input => {}
        (failure, error) => panic!("failure {failure:?} for a last_error of {error:?}"),
    }

    match &event.subject_key {
        None => assert_eq!(event.subject_key_rank, i16::MAX),
        Some(key) => {
            assert!(
                session.get("redaction").is_none_or(Value::is_null),
                "redacted copy names {key:?}"
            );
            assert!(!is_placeholder(key), "placeholder {key:?} taken for a key");
            assert!(!key.is_empty() && key.len() <= 255 && key.trim() == key);
            let named = key == &event.session_id
                || session["client_reference_id"].as_str().map(str::trim) == Some(key.as_str())
                || session["metadata"].as_object().is_some_and(|m| {
                    m.values()
                        .any(|v| v.as_str().map(str::trim) == Some(key.as_str()))
                });
            assert!(named, "subject key {key:?} is not from the session");
            assert!(event.subject_key_rank < i16::MAX);
        }
    }

    // What ingest publishes as message id, routing key and timestamp.
    if let Ok(envelope) = EventEnvelope::parse(body) {
        assert_eq!(envelope.id.as_str(), event.event_id);
        assert_eq!(envelope.event_type, event.event_type);
        assert_eq!(envelope.created, event.created);
        assert_eq!(envelope.livemode.unwrap_or(false), event.livemode);
    }
}

fn check_refused(failure: &MessageFailure) {
    let text = failure.to_string();
    let ours = match failure {
        MessageFailure::Unparseable(_) => text
            .strip_prefix("not a Stripe Identity event: ")
            .is_some_and(is_parse_reason),
        MessageFailure::UnknownType => text == "the event type is not one the worker handles",
        MessageFailure::StatusMismatch { .. } => SESSION_TYPES.iter().any(|(name, _)| {
            STATUSES.iter().any(|status| {
                text == format!("a `{name}` event carries a session in status `{status}`")
            })
        }),
        MessageFailure::Refused(_) => false, // only the database refuses
    };
    assert!(ours, "failure text not of the worker's own words: {text:?}");
}

/// `<class>[ `<schema field>`][ at line N column M]`.
fn is_parse_reason(text: &str) -> bool {
    let Some(rest) = CLASSES.iter().find_map(|class| text.strip_prefix(class)) else {
        return false;
    };
    let rest = SCHEMA_FIELDS
        .iter()
        .find_map(|field| rest.strip_prefix(&format!(" `{field}`")))
        .unwrap_or(rest);
    if rest.is_empty() {
        return true;
    }
    let Some(position) = rest.strip_prefix(" at line ") else {
        return false;
    };
    let Some((line, column)) = position.split_once(" column ") else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(line) && digits(column)
}
