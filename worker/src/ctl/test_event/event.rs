//! A test event in Stripe's exact shape: the fields, their order and their
//! nesting of the fixtures in `shared/fixtures/` (Stripe's own webhook
//! bodies for API version `2026-07-29.dahlia`), pretty-printed as Stripe
//! sends them. Serde writes a struct's fields in declaration order, so the
//! structs below *are* the key order; a test compares it with the fixtures.

use std::collections::BTreeMap;

use serde::Serialize;

use super::TestEventKind;
use super::ids;
use super::reasons::stripe_reason;

/// The API version of the fixtures, which Stripe writes into every event.
pub const API_VERSION: &str = "2026-07-29.dahlia";

/// `last_error.code` of a `requires_input` event when none is asked for.
pub const DEFAULT_CODE: &str = "document_unverified_other";

/// What one test event says.
#[derive(Debug, Clone, Copy)]
pub struct EventSpec<'a> {
    pub kind: TestEventKind,
    /// `vs_…`, already checked.
    pub session: &'a str,
    /// `client_reference_id` (Stripe writes `"[redacted]"` in a redacted event).
    pub subject: Option<&'a str>,
    /// `last_error.code` of a `requires_input` event ([`DEFAULT_CODE`] if `None`).
    pub code: Option<&'a str>,
    /// The event's `created`, Unix seconds.
    pub created: i64,
    /// The session's own `created`, Unix seconds (at or before the event's).
    pub session_created: i64,
    /// `metadata.sent_by`: which command made the event, for whoever reads
    /// the inbox later.
    pub sent_by: &'a str,
}

/// A built event: its bytes, exactly as signed and sent, and what they say.
#[derive(Debug, Clone)]
pub struct BuiltEvent {
    pub id: String,
    pub event_type: String,
    pub session: String,
    pub subject: Option<String>,
    /// `last_error.code`, for a `requires_input` event.
    pub code: Option<String>,
    pub created: i64,
    pub body: Vec<u8>,
}

/// Builds the event `spec` describes, with a fresh `evt_…` id.
pub fn build(spec: &EventSpec<'_>) -> BuiltEvent {
    let kind = spec.kind;
    let redacted = kind == TestEventKind::Redacted;
    let code = (kind == TestEventKind::RequiresInput).then(|| spec.code.unwrap_or(DEFAULT_CODE));
    // Stripe erases the person from a redacted session's events.
    let subject = if redacted {
        Some("[redacted]")
    } else {
        spec.subject
    };
    let metadata = if redacted {
        BTreeMap::new()
    } else {
        BTreeMap::from([("sent_by", spec.sent_by)])
    };
    // A report exists once something was submitted and checked.
    let report = matches!(
        kind,
        TestEventKind::RequiresInput | TestEventKind::Verified | TestEventKind::Redacted
    )
    .then(ids::report_id);
    // Created and canceled through the API carry the request that did it;
    // the others happen on Stripe's side.
    let request_id =
        matches!(kind, TestEventKind::Created | TestEventKind::Canceled).then(ids::request_id);
    let event = Event {
        id: ids::event_id(),
        object: "event",
        api_version: API_VERSION,
        created: spec.created,
        data: Data {
            object: Session {
                id: spec.session,
                object: "identity.verification_session",
                client_reference_id: subject,
                client_secret: (),
                created: spec.session_created,
                last_error: code.map(|code| LastError {
                    code,
                    reason: stripe_reason(code),
                }),
                last_verification_report: report,
                livemode: false,
                metadata,
                options: Options {
                    document: DocumentOptions {
                        allowed_types: ["driving_license", "id_card", "passport"],
                        require_id_number: false,
                        require_live_capture: true,
                        require_matching_selfie: true,
                    },
                },
                redaction: redacted.then_some(Redaction { status: "redacted" }),
                related_customer: (),
                related_customer_account: (),
                status: kind.session_status(),
                verification_type: "document",
                url: (),
            },
        },
        livemode: false,
        pending_webhooks: 1,
        request: Request {
            id: request_id,
            idempotency_key: (),
        },
        event_type: kind.event_type(),
    };
    // Plain structs of strings, numbers and maps: serialising cannot fail.
    let body = serde_json::to_vec_pretty(&event).unwrap_or_default();
    BuiltEvent {
        id: event.id,
        event_type: kind.event_type().to_owned(),
        session: spec.session.to_owned(),
        subject: subject.map(str::to_owned),
        code: code.map(str::to_owned),
        created: spec.created,
        body,
    }
}

// The shape. `()` is written as `null`: fields Stripe sends as null in
// these events (client_secret only comes back on creation, url while the
// session waits for input, the customer links when the platform set them).

#[derive(Serialize)]
struct Event<'a> {
    id: String,
    object: &'static str,
    api_version: &'static str,
    created: i64,
    data: Data<'a>,
    livemode: bool,
    pending_webhooks: u32,
    request: Request,
    #[serde(rename = "type")]
    event_type: &'static str,
}

#[derive(Serialize)]
struct Data<'a> {
    object: Session<'a>,
}

#[derive(Serialize)]
struct Session<'a> {
    id: &'a str,
    object: &'static str,
    client_reference_id: Option<&'a str>,
    client_secret: (),
    created: i64,
    last_error: Option<LastError<'a>>,
    last_verification_report: Option<String>,
    livemode: bool,
    metadata: BTreeMap<&'static str, &'a str>,
    options: Options,
    redaction: Option<Redaction>,
    related_customer: (),
    related_customer_account: (),
    status: &'static str,
    #[serde(rename = "type")]
    verification_type: &'static str,
    url: (),
}

#[derive(Serialize)]
struct LastError<'a> {
    code: &'a str,
    reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Options {
    document: DocumentOptions,
}

#[derive(Serialize)]
struct DocumentOptions {
    allowed_types: [&'static str; 3],
    require_id_number: bool,
    require_live_capture: bool,
    require_matching_selfie: bool,
}

#[derive(Serialize)]
struct Redaction {
    status: &'static str,
}

#[derive(Serialize)]
struct Request {
    id: Option<String>,
    idempotency_key: (),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of a pretty-printed JSON text, in order, each as its path
    /// (`data.object.status`), leaving out what is inside `metadata` (the
    /// platform's own keys, different in every integration).
    fn key_paths(text: &str) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let mut paths = Vec::new();
        for line in text.lines() {
            let trimmed = line.trim_start();
            let depth = (line.len() - trimmed.len()) / 2;
            let Some(rest) = trimmed.strip_prefix('"') else {
                continue;
            };
            let Some((key, value)) = rest.split_once("\": ") else {
                continue; // a string inside an array
            };
            stack.truncate(depth.saturating_sub(1));
            let path = stack
                .iter()
                .map(String::as_str)
                .chain([key])
                .collect::<Vec<_>>()
                .join(".");
            if value.ends_with('{') || value.ends_with('[') {
                stack.push(key.to_owned());
            }
            if !path.starts_with("data.object.metadata.") {
                paths.push(path);
            }
        }
        paths
    }

    fn spec(kind: TestEventKind) -> EventSpec<'static> {
        EventSpec {
            kind,
            session: "vs_1Sk3Gh2eZvKYlo2CqR8tNw4P",
            subject: Some("user_8f14e45fceea"),
            code: None,
            created: 1_767_225_900,
            session_created: 1_767_225_600,
            sent_by: "idvctl send-test-event",
        }
    }

    #[test]
    fn keys_are_those_of_the_fixtures_in_their_order() {
        for (kind, fixture) in [
            (
                TestEventKind::Processing,
                include_str!("../../../../shared/fixtures/evt_processing.json"),
            ),
            (
                TestEventKind::RequiresInput,
                include_str!(
                    "../../../../shared/fixtures/evt_requires_input_document_expired.json"
                ),
            ),
            (
                TestEventKind::Verified,
                include_str!("../../../../shared/fixtures/evt_verified.json"),
            ),
            (
                TestEventKind::Canceled,
                include_str!("../../../../shared/fixtures/evt_canceled.json"),
            ),
            (
                TestEventKind::Redacted,
                include_str!("../../../../shared/fixtures/evt_redacted.json"),
            ),
            // No fixture of its own: a created session has a processing
            // one's shape.
            (
                TestEventKind::Created,
                include_str!("../../../../shared/fixtures/evt_processing.json"),
            ),
        ] {
            let built = build(&spec(kind));
            let text = String::from_utf8(built.body).unwrap();
            assert_eq!(key_paths(&text), key_paths(fixture), "{kind:?}");
            assert!(
                key_paths(&text).contains(&"data.object.options.document.allowed_types".into())
            );
        }
    }

    #[test]
    fn values_follow_the_kind() {
        let value = |kind, code| {
            let built = build(&EventSpec { code, ..spec(kind) });
            serde_json::from_slice::<serde_json::Value>(&built.body).unwrap()
        };
        let failed = value(TestEventKind::RequiresInput, Some("selfie_face_mismatch"));
        assert_eq!(
            failed["type"],
            "identity.verification_session.requires_input"
        );
        assert_eq!(failed["data"]["object"]["status"], "requires_input");
        assert_eq!(
            failed["data"]["object"]["last_error"]["code"],
            "selfie_face_mismatch"
        );
        let default = value(TestEventKind::RequiresInput, None);
        assert_eq!(
            default["data"]["object"]["last_error"]["code"],
            DEFAULT_CODE
        );
        let odd = value(TestEventKind::RequiresInput, Some("brand_new_code"));
        assert_eq!(
            odd["data"]["object"]["last_error"]["reason"],
            serde_json::Value::Null
        );

        let created = value(TestEventKind::Created, None);
        assert_eq!(created["data"]["object"]["status"], "requires_input");
        assert_eq!(
            created["data"]["object"]["last_error"],
            serde_json::Value::Null
        );
        assert!(
            created["request"]["id"]
                .as_str()
                .unwrap()
                .starts_with("req_")
        );

        let redacted = value(TestEventKind::Redacted, None);
        assert_eq!(
            redacted["data"]["object"]["client_reference_id"],
            "[redacted]"
        );
        assert_eq!(
            redacted["data"]["object"]["metadata"],
            serde_json::json!({})
        );
        assert_eq!(
            redacted["data"]["object"]["redaction"]["status"],
            "redacted"
        );

        for kind in [
            TestEventKind::Verified,
            TestEventKind::Canceled,
            TestEventKind::Processing,
        ] {
            let event = value(kind, None);
            assert_eq!(event["object"], "event");
            assert_eq!(event["livemode"], false);
            assert_eq!(event["api_version"], API_VERSION);
            assert_eq!(
                event["data"]["object"]["last_error"],
                serde_json::Value::Null
            );
            assert_eq!(
                event["data"]["object"]["client_reference_id"],
                "user_8f14e45fceea"
            );
            assert_eq!(event["data"]["object"]["status"], kind.session_status());
        }
    }
}
