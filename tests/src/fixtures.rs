//! The Stripe fixtures (`shared/fixtures`), signed for the current time.

use std::time::{SystemTime, UNIX_EPOCH};

use shared::{WebhookSecret, sign_test_header};

/// The webhook secret the tests configure services with.
pub const TEST_SECRET: &str = "whsec_test_secret";

/// The six event fixtures, in the order Stripe sends them.
pub const EVENT_FIXTURES: [&str; 6] = [
    "evt_processing.json",
    "evt_requires_input_document_expired.json",
    "evt_requires_input_selfie_face_mismatch.json",
    "evt_verified.json",
    "evt_canceled.json",
    "evt_redacted.json",
];

/// The exact bytes of a fixture file.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../shared/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("read {path}: {error}"))
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A `Stripe-Signature` header for `body`, signed now with `secret`.
pub fn sign_now(secret: &str, body: &[u8]) -> String {
    let secret = WebhookSecret::parse(secret).expect("a whsec_ secret");
    sign_test_header(&secret, body, now_unix())
}

/// A minimal but complete Identity event, for tests that need many distinct ones.
pub fn session_event(
    event_id: &str,
    event_type: &str,
    created: i64,
    session: serde_json::Value,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": event_id,
        "object": "event",
        "api_version": "2026-07-29.dahlia",
        "created": created,
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": event_type,
        "data": {"object": session},
    }))
    .expect("serialisable")
}

/// A session event with id `event_id` whose body is about `size` bytes.
pub fn padded_event(event_id: &str, size: usize) -> Vec<u8> {
    session_event(
        event_id,
        "identity.verification_session.processing",
        now_unix(),
        serde_json::json!({"id": "vs_padded", "status": "processing", "padding": "x".repeat(size)}),
    )
}
