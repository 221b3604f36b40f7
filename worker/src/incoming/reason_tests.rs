//! A failure's reason (the `x-idv-failure-reason` header) never quotes the
//! body. Sound formulation: every reason [`parse`] can give is made of the
//! worker's own texts (the classes, the schema's field names, the event
//! types and statuses it knows) and at most two integers (line and column);
//! `is_ours` checks exactly that grammar, so no byte of the body can reach
//! the reason except through those constants and numbers. On top, bodies
//! carry secret-looking strings (8 or more of `A-Z0-9-`, which no constant
//! holds and no position of a body under 1000 bytes can spell) and no
//! reason may contain one.

use proptest::prelude::*;
use shared::config::Env;

use super::*;

const PREFIX: &str = "not a Stripe Identity event: ";
const CLASSES: [&str; 10] = [
    "invalid JSON",
    "truncated JSON",
    "unreadable body",
    "missing field",
    "duplicate field",
    "unknown field",
    "a value of the wrong type",
    "an invalid value",
    "an unknown variant",
    "a sequence or map of the wrong length",
];
/// The schema's field names: the only names a reason may carry.
const FIELDS: [&str; 15] = super::parse_reason::SCHEMA_FIELDS;
const TYPES: [&str; 6] = [
    "created",
    "processing",
    "requires_input",
    "verified",
    "canceled",
    "redacted",
];
const STATUSES: [&str; 4] = ["requires_input", "processing", "verified", "canceled"];

fn settings() -> Settings {
    Settings::from_env(&Env::default()).unwrap()
}

/// `" at line N column M"` or nothing, then the end.
fn position_or_end(rest: &str) -> bool {
    if rest.is_empty() {
        return true;
    }
    let Some(rest) = rest.strip_prefix(" at line ") else {
        return false;
    };
    let Some((line, column)) = rest.split_once(" column ") else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.len() < 4 && s.bytes().all(|b| b.is_ascii_digit());
    digits(line) && digits(column)
}

/// The reason is one the grammar of the worker's own texts allows.
fn is_ours(reason: &str) -> bool {
    if reason == "the event type is not one the worker handles" {
        return true;
    }
    if let Some(rest) = reason.strip_prefix("a `identity.verification_session.") {
        return TYPES.iter().any(|t| {
            STATUSES
                .iter()
                .any(|s| rest == format!("{t}` event carries a session in status `{s}`").as_str())
        });
    }
    let Some(rest) = reason.strip_prefix(PREFIX) else {
        return false;
    };
    CLASSES.iter().any(|class| {
        let Some(rest) = rest.strip_prefix(class) else {
            return false;
        };
        position_or_end(rest)
            || FIELDS.iter().any(|field| {
                rest.strip_prefix(&format!(" `{field}`"))
                    .is_some_and(position_or_end)
            })
    })
}

fn reason(body: &[u8]) -> Option<String> {
    parse(body, 0, &settings()).err().map(|f| f.to_string())
}

/// A valid event whose session is `session` (fields replaced or added).
fn event_with(session: serde_json::Value, top: serde_json::Value) -> Vec<u8> {
    let mut event = serde_json::json!({
        "id": "evt_1", "object": "event", "type": "identity.verification_session.requires_input",
        "created": 1_700_000_000, "livemode": false,
        "data": {"object": {"id": "vs_1", "status": "requires_input",
            "last_error": {"code": "document_expired", "reason": "expired"}}},
    });
    for (key, value) in session.as_object().into_iter().flatten() {
        event["data"]["object"][key] = value.clone();
    }
    for (key, value) in top.as_object().into_iter().flatten() {
        event[key] = value.clone();
    }
    serde_json::to_vec(&event).unwrap()
}

#[test]
fn secret_looking_values_never_reach_the_reason() {
    let ssn = "SSN-123-45-6789";
    let card = "4111111111111111";
    let no = serde_json::json!({});
    let bodies = [
        event_with(serde_json::json!({"status": ssn}), no.clone()),
        event_with(no.clone(), serde_json::json!({"created": card})),
        event_with(no.clone(), serde_json::json!({"id": ssn})),
        event_with(serde_json::json!({"id": ssn}), no.clone()),
        event_with(
            serde_json::json!({"last_error": {"code": 4111, "reason": ssn}}),
            no.clone(),
        ),
        event_with(
            serde_json::json!({"last_error": {"code": ssn}, "metadata": [card]}),
            no.clone(),
        ),
        event_with(
            serde_json::json!({"client_reference_id": [ssn]}),
            no.clone(),
        ),
        event_with(no.clone(), serde_json::json!({"type": ssn})),
        event_with(
            no.clone(),
            serde_json::json!({"type": "identity.verification_session.SSN-123-45-6789"}),
        ),
        event_with(no.clone(), serde_json::json!({"data": ssn})),
        format!(r#"{{"id": "evt_1", "type": "{ssn}""#).into_bytes(),
        format!(r#"{{"{ssn}": {card}x}}"#).into_bytes(),
        format!("{card}{ssn}").into_bytes(),
    ];
    for body in bodies {
        let reason = reason(&body).expect("a failure");
        assert!(
            !reason.contains(ssn) && !reason.contains(card) && !reason.contains("SSN"),
            "{reason}"
        );
        assert!(is_ours(&reason), "{reason}");
    }
}

/// A secret-looking string: 8 to 20 of `A-Z0-9-`.
fn secret() -> impl Strategy<Value = String> {
    "[A-Z0-9-]{8,20}"
}

/// Any JSON value, small, with secrets among its strings and keys.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        secret().prop_map(Value::String),
        "[a-z_.]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    secret(),
                    prop::sample::select(FIELDS.to_vec()).prop_map(String::from)
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Where a generated value goes in an otherwise valid event.
fn placed() -> impl Strategy<Value = Vec<u8>> {
    let session_fields = prop::sample::select(vec![
        "id",
        "status",
        "last_error",
        "client_reference_id",
        "metadata",
        "redaction",
        "type",
        "last_verification_report",
    ]);
    let top_fields =
        prop::sample::select(vec!["id", "type", "created", "livemode", "data", "object"]);
    prop_oneof![
        (session_fields, json()).prop_map(|(field, value)| {
            event_with(serde_json::json!({ field: value }), serde_json::json!({}))
        }),
        (top_fields, json()).prop_map(|(field, value)| {
            event_with(serde_json::json!({}), serde_json::json!({ field: value }))
        }),
        (secret(), json()).prop_map(|(code, value)| {
            event_with(
                serde_json::json!({"last_error": {"code": code, "reason": value}}),
                serde_json::json!({}),
            )
        }),
    ]
}

/// Bodies that are not JSON, or cut short, or JSON of any shape.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        placed(),
        json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        (placed(), any::<prop::sample::Index>())
            .prop_map(|(body, cut)| { body[..cut.index(body.len())].to_vec() }),
        (placed(), any::<prop::sample::Index>(), secret()).prop_map(|(mut body, at, junk)| {
            let at = at.index(body.len());
            body.splice(at..at, junk.into_bytes());
            body
        }),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn a_reason_is_made_of_our_texts_and_positions_only(body in body()) {
        prop_assume!(body.len() < 1000);
        if let Some(reason) = reason(&body) {
            prop_assert!(is_ours(&reason), "{}", reason);
            // No secret of the body, nor any 8-byte run of it made of
            // the secrets' alphabet, appears in the reason.
            for window in body.windows(8) {
                if window.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'-') {
                    let window = std::str::from_utf8(window).unwrap();
                    prop_assert!(!reason.contains(window), "{} in {}", window, reason);
                }
            }
        }
    }
}
