//! Body-content families: correctly signed bodies (so the signature passes)
//! that are not UTF-8, nested deeper than any event, huge non-events, or
//! events whose `object`, `id`, `type` or `livemode` is wrong.

use serde_json::{Value, json};

use super::attack::{Attack, Head, Pacing};
use super::corpus::{Context, to_bytes};
use super::family::Family;

fn signed(context: &Context, body: &[u8]) -> Attack {
    Attack {
        bytes: Head::post().signature(context.sign(body)).body(body),
        pacing: Pacing::AtOnce,
    }
}

/// Stands for bytes JSON text cannot hold, until they replace it.
const MARK: &str = "MARK_INVALID_BYTES";

/// `body` with the (first) [`MARK`] replaced by `bytes`.
fn replace_mark(body: &[u8], bytes: &[u8]) -> Vec<u8> {
    replace_text(body, MARK, bytes)
}

/// `body` with the first `text` in it replaced by `bytes`.
fn replace_text(body: &[u8], text: &str, bytes: &[u8]) -> Vec<u8> {
    let at = body
        .windows(text.len())
        .position(|w| w == text.as_bytes())
        .unwrap_or(body.len());
    let mut out = body[..at].to_vec();
    out.extend_from_slice(bytes);
    out.extend_from_slice(body.get(at + text.len()..).unwrap_or_default());
    out
}

/// A valid event but for bytes that are not UTF-8: in fields ingest's
/// envelope never reads (metadata, an unknown field, the session), in the
/// id, or the whole body as UTF-16.
pub fn invalid_utf8(n: usize, context: &Context) -> Attack {
    let id = Family::InvalidUtf8.event_id(n);
    let mut event = context.event(&id);
    let bad: &[u8] = match n % 7 {
        0 => {
            event["data"]["object"]["metadata"]["name"] = MARK.into();
            b"\xff\xfe"
        }
        1 => {
            event["note"] = MARK.into();
            b"\xc0\x80 overlong NUL"
        }
        2 => {
            event["data"]["object"]["client_reference_id"] = MARK.into();
            b"user_\xed\xa0\x80"
        }
        3 => {
            event["data"]["object"]["last_error"]["reason"] = MARK.into();
            b"cut short \xe2\x82"
        }
        4 => {
            event["id"] = MARK.into();
            b"evt_\xe9t\xe9"
        }
        5 => {
            event["data"]["object"]["last_error"]["reason"] = MARK.into();
            b"caf\xe9 latin-1"
        }
        _ => {
            let utf16: Vec<u8> = [0xFF, 0xFE]
                .into_iter()
                .chain(
                    String::from_utf8_lossy(&to_bytes(&event))
                        .encode_utf16()
                        .flat_map(u16::to_le_bytes),
                )
                .collect();
            return signed(context, &utf16);
        }
    };
    signed(context, &replace_mark(&to_bytes(&event), bad))
}

/// A valid event but for one value, where the envelope does not read,
/// that the worker cannot read or store: a lone surrogate or `\u0000`
/// escape in a string (serde_json, PostgreSQL's `jsonb`), or a number
/// beyond a double (serde_json). Each was answered 200 and published
/// before ingest's shape check looked at them.
pub fn unreadable_value(n: usize, context: &Context) -> Attack {
    let mut event = context.event(&Family::UnreadableValue.event_id(n));
    // (where, text standing for the whole value, quotes included)
    let (place, value): (&[&str], &[u8]) = match n % 8 {
        0 => (&["data", "object", "metadata", "name"], br#""\ud800""#),
        1 => (&["note"], br#""a\u0000b""#),
        2 => (
            &["data", "object", "last_error", "reason"],
            br#""\udc00 alone""#,
        ),
        3 => (
            &["data", "object", "client_reference_id"],
            br#""user_\ud83d\u0041""#,
        ),
        4 => (&["note"], b"1e400"),
        5 => (&["data", "object", "metadata", "score"], b"-1.8e308"),
        6 => (&["data", "object", "extra"], b"[1, 2e308]"),
        _ => (&["note"], b"0.001e312"),
    };
    let mut slot = &mut event;
    for key in place {
        slot = &mut slot[*key];
    }
    *slot = MARK.into();
    let quoted = format!("\"{MARK}\"");
    let out = replace_text(&to_bytes(&event), &quoted, value);
    signed(context, &out)
}

/// `depth` arrays (or objects) around a number.
fn nesting(depth: usize, objects: bool) -> String {
    let (open, close) = if objects {
        (r#"{"a":"#, "}")
    } else {
        ("[", "]")
    };
    format!("{}1{}", open.repeat(depth), close.repeat(depth))
}

/// A valid event with a field nested 200 to 100,000 deep (in a field the
/// envelope skips, in the metadata, in the session), or a body that is
/// nothing but nesting. No Stripe event is more than a dozen deep.
pub fn nested(n: usize, context: &Context) -> Attack {
    let depth = [200, 1_000, 10_000, 100_000][n % 4];
    let deep = nesting(depth, n % 2 == 1);
    let mut event = context.event(&Family::NestedJson.event_id(n));
    match (n / 4) % 4 {
        0 => event["extra"] = MARK.into(),
        1 => event["data"]["object"]["metadata"]["deep"] = MARK.into(),
        2 => event["data"]["object"]["options"] = MARK.into(),
        _ => return signed(context, deep.as_bytes()),
    }
    let body = replace_mark(&to_bytes(&event), deep.as_bytes());
    // The mark was a JSON string: take its quotes off around the nesting.
    let body = String::from_utf8_lossy(&body).replace(&format!("\"{deep}\""), &deep);
    signed(context, body.as_bytes())
}

/// Nearly `INGEST_MAX_BODY_BYTES` of JSON that is no event: an array, an
/// object of many keys without an id, a megabyte `type`, a megabyte number
/// as `created`.
pub fn huge(n: usize, context: &Context) -> Attack {
    let size = context.max_body_bytes - 4 * 1024;
    let body = match n % 4 {
        0 => {
            let mut text = String::with_capacity(size + 16);
            text.push('[');
            while text.len() < size {
                text.push_str("1234567,");
            }
            text.push_str("0]");
            text.into_bytes()
        }
        1 => {
            // About 20 bytes a key: `"k00000000":123456,`.
            let keys = size / 24;
            let map: serde_json::Map<String, Value> =
                (0..keys).map(|i| (format!("k{i:08}"), json!(i))).collect();
            let mut object = Value::Object(map);
            object["object"] = "event".into();
            to_bytes(&object)
        }
        2 => {
            let mut event = context.event(&Family::HugeJson.event_id(n));
            event["type"] = "identity.".repeat(size / 9).into();
            to_bytes(&event)
        }
        _ => {
            let mut event = context.event(&Family::HugeJson.event_id(n));
            event["created"] = MARK.into();
            let digits = "9".repeat(size);
            let body = replace_mark(&to_bytes(&event), digits.as_bytes());
            String::from_utf8_lossy(&body)
                .replace(&format!("\"{digits}\""), &digits)
                .into_bytes()
        }
    };
    signed(context, &body)
}

/// `object` other than `"event"`: another object, a case or a space off,
/// missing, null, not a string, or given twice.
pub fn wrong_object(n: usize, context: &Context) -> Attack {
    let mut event = context.event(&Family::WrongObject.event_id(n));
    let value = match n % 10 {
        0 => json!("customer"),
        1 => json!("Event"),
        2 => json!("event "),
        3 => json!(""),
        4 => Value::Null,
        5 => json!(5),
        6 => json!(["event"]),
        7 => json!("identity.verification_session"),
        8 => {
            event.as_object_mut().map(|o| o.remove("object"));
            return signed(context, &to_bytes(&event));
        }
        _ => {
            // Duplicated key: a JSON parser that keeps the last would see
            // "event"; serde refuses duplicates.
            let body = String::from_utf8_lossy(&to_bytes(&event)).replacen(
                r#""object":"event""#,
                r#""object":"customer","object":"event""#,
                1,
            );
            return signed(context, body.as_bytes());
        }
    };
    event["object"] = value;
    signed(context, &to_bytes(&event))
}

/// `id` missing, null, empty, not `evt_`, with characters an id cannot
/// hold, too long, a number, or given twice.
pub fn missing_id(n: usize, context: &Context) -> Attack {
    let mut event = context.event("evt_placeholder");
    let value = match n % 10 {
        0 => {
            event.as_object_mut().map(|o| o.remove("id"));
            return signed(context, &to_bytes(&event));
        }
        1 => Value::Null,
        2 => json!(""),
        3 => json!("evt_"),
        4 => json!(format!("cus_hostile_{n}")),
        5 => json!(format!("evt_hostile-{n}")),
        6 => json!(format!("evt_{}", "a".repeat(300))),
        7 => json!(n),
        8 => json!(format!("EVT_hostile_{n}")),
        _ => {
            let body = String::from_utf8_lossy(&to_bytes(&event)).replacen(
                r#""id":"evt_placeholder""#,
                &format!(
                    r#""id":"{}","id":"evt_twice""#,
                    Family::MissingId.event_id(n)
                ),
                1,
            );
            return signed(context, body.as_bytes());
        }
    };
    event["id"] = value;
    signed(context, &to_bytes(&event))
}

/// `type` missing, null, empty, with capitals, spaces, a newline or a
/// wildcard, 256 characters, a number or a list.
pub fn wrong_type(n: usize, context: &Context) -> Attack {
    let mut event = context.event(&Family::WrongType.event_id(n));
    let value = match n % 10 {
        0 => {
            event.as_object_mut().map(|o| o.remove("type"));
            return signed(context, &to_bytes(&event));
        }
        1 => Value::Null,
        2 => json!(""),
        3 => json!("Identity.Verification_session.verified"),
        4 => json!("identity verification_session verified"),
        5 => json!("identity.verification_session.verified\n"),
        6 => json!("identity.verification_session.#"),
        7 => json!("a".repeat(256)),
        8 => json!(42),
        _ => json!(["identity.verification_session.verified"]),
    };
    event["type"] = value;
    signed(context, &to_bytes(&event))
}

/// Livemode other than the `false` ingest expects: `true`, missing, null,
/// or the string `"false"`.
pub fn wrong_livemode(n: usize, context: &Context) -> Attack {
    let mut event = context.event(&Family::WrongLivemode.event_id(n));
    match n % 4 {
        0 => event["livemode"] = json!(true),
        1 => {
            event.as_object_mut().map(|o| o.remove("livemode"));
        }
        2 => event["livemode"] = Value::Null,
        _ => event["livemode"] = json!("false"),
    }
    signed(context, &to_bytes(&event))
}
