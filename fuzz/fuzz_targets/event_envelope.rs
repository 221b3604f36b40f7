//! The event envelope ingest checks before publishing
//! (`EventEnvelope::parse`), against a reference decision made here from
//! the body read as plain JSON, and against the worker's full parse
//! (`StripeEvent::parse`).
//!
//! Input: a raw event body (seeds: the fixtures' events).
//!
//! - The envelope is accepted exactly when the body is JSON (so UTF-8
//!   throughout, in the fields the envelope skips too, no `\u0000` and
//!   no lone surrogate, no number beyond an `f64`: what serde_json reads
//!   into a `Value`) nested at most 64 deep: an object with
//!   `object: "event"`, an `evt_` id of
//!   `[A-Za-z0-9_]` (at most 255 characters), a `type` of 1 to 255
//!   characters of `[a-z0-9._]`, an integer `created` that fits in i64,
//!   `livemode` a boolean or absent (not null), and none of these keys
//!   twice (a body whose `id` could be read two ways is refused).
//! - What it returns is what the body says (id, type, created, livemode).
//! - When the worker's parse also succeeds, both read the same id, type,
//!   created and livemode: the message id and routing key ingest publishes
//!   belong to the event the worker applies.

#![no_main]

use std::fmt;

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use shared::{EventEnvelope, StripeEvent};

/// Deepest nesting a body may have (`shared::event::shape::MAX_DEPTH`).
const MAX_DEPTH: usize = 64;

/// The keys the envelope reads.
const ENVELOPE_KEYS: [&str; 5] = ["id", "object", "type", "created", "livemode"];

fuzz_target!(|body: &[u8]| {
    let envelope = EventEnvelope::parse(body);
    let expected = reference(body);
    match (&envelope, &expected) {
        (Ok(envelope), Some(expected)) => assert_eq!(envelope, expected),
        (Err(_), None) => {}
        (found, expected) => panic!("envelope {found:?}, reference {expected:?}"),
    }
    if let (Ok(envelope), Ok(event)) = (&envelope, StripeEvent::parse(body)) {
        assert_eq!(envelope.id, event.id);
        assert_eq!(envelope.event_type, event.event_type.as_str());
        assert_eq!(envelope.created, event.created);
        assert_eq!(envelope.livemode.unwrap_or(false), event.livemode);
    }
});

/// The envelope the body should give, decided from its JSON value.
fn reference(body: &[u8]) -> Option<EventEnvelope> {
    let value: Value = serde_json::from_slice(body).ok()?;
    if depth(&value) > MAX_DEPTH || has_nul(&value) {
        return None;
    }
    let object = value.as_object()?;
    let keys = serde_json::from_slice::<TopKeys>(body).ok()?.0;
    for key in ENVELOPE_KEYS {
        if keys.iter().filter(|k| *k == key).count() > 1 {
            return None;
        }
    }
    if object.get("object")?.as_str()? != "event" {
        return None;
    }
    let id = object.get("id")?.as_str()?;
    let rest = id.strip_prefix("evt_")?;
    let id_ok = !rest.is_empty()
        && id.len() <= 255
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let event_type = object.get("type")?.as_str()?;
    let type_ok = !event_type.is_empty()
        && event_type.len() <= 255
        && event_type
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_'));
    let created = object.get("created")?.as_i64()?;
    let livemode = match object.get("livemode") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return None,
    };
    if !(id_ok && type_ok) {
        return None;
    }
    let envelope = EventEnvelope {
        id: shared::EventId::parse(id).ok()?,
        event_type: event_type.to_owned(),
        created,
        livemode,
    };
    Some(envelope)
}

/// Levels of arrays and objects: `1` is 0, `[1]` is 1, `{"a":[1]}` is 2.
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A NUL anywhere (`\u0000`): PostgreSQL's `jsonb` cannot store it.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(fields) => fields.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// The top-level keys of a JSON object in order, repeats included
/// (`serde_json::Value` keeps only the last of a repeated key).
struct TopKeys(Vec<String>);

impl<'de> Deserialize<'de> for TopKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = TopKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopKeys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(TopKeys(keys))
            }
        }
        deserializer.deserialize_map(Keys)
    }
}
