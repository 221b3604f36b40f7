//! The corpus: which requests there are (a shuffled list of family and
//! number), and building each one, at the moment it is sent, from what the
//! builders share.

use rand::seq::SliceRandom;
use shared::{WebhookSecret, sign_test_header};

use super::attack::Attack;
use super::family::Family;
use super::{bodies, headers, json, signatures, slow};

/// What every builder needs: the endpoint's secret, the time, and the
/// limits ingest runs with.
#[derive(Debug, Clone)]
pub struct Context {
    pub secret: WebhookSecret,
    /// Unix seconds when the request is built (just before it is sent).
    pub now: i64,
    /// `STRIPE_WEBHOOK_TOLERANCE_SECS` of the ingest under attack.
    pub tolerance_secs: i64,
    /// `INGEST_MAX_BODY_BYTES` of the ingest under attack.
    pub max_body_bytes: usize,
    /// How long slow senders wait between two bytes.
    pub dribble_every: std::time::Duration,
}

impl Context {
    /// A correct `Stripe-Signature` for `body`, now.
    pub fn sign(&self, body: &[u8]) -> String {
        sign_test_header(&self.secret, body, self.now)
    }

    /// A correct `Stripe-Signature` for `body` at `timestamp`.
    pub fn sign_at(&self, body: &[u8], timestamp: i64) -> String {
        sign_test_header(&self.secret, body, timestamp)
    }

    /// A current timestamp and a `v1` that is 64 hex digits but no HMAC.
    pub fn forged(&self, n: usize) -> String {
        format!(
            "t={},v1={:064x}",
            self.now,
            n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        )
    }

    /// A valid Identity event (livemode false), as JSON to be spoilt.
    pub fn event(&self, event_id: &str) -> serde_json::Value {
        serde_json::json!({
            "id": event_id,
            "object": "event",
            "api_version": "2026-07-29.dahlia",
            "created": self.now,
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null},
            "type": "identity.verification_session.requires_input",
            "data": {"object": {
                "id": "vs_hostile",
                "object": "identity.verification_session",
                "client_reference_id": "user_hostile",
                "last_error": {"code": "document_expired", "reason": "expired"},
                "metadata": {},
                "status": "requires_input",
                "type": "document",
            }},
        })
    }

    /// [`Context::event`] as bytes.
    pub fn event_bytes(&self, event_id: &str) -> Vec<u8> {
        to_bytes(&self.event(event_id))
    }
}

/// `value` serialised; it is always serialisable.
pub fn to_bytes(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The `n`th request of `family`, built for `context`.
pub fn build(family: Family, n: usize, context: &Context) -> Attack {
    match family {
        Family::ForgedSignature => signatures::forged(n, context),
        Family::WrongSecret => signatures::wrong_secret(n, context),
        Family::MismatchedBody => signatures::mismatched_body(n, context),
        Family::StaleTimestamp => signatures::stale(n, context),
        Family::FutureTimestamp => signatures::future(n, context),
        Family::MalformedHeader => headers::malformed(n, context),
        Family::HugeHeader => headers::huge(n, context),
        Family::ManyV1 => headers::many_v1(n, context),
        Family::NonAsciiHeader => headers::non_ascii(n, context),
        Family::TruncatedBody => bodies::truncated(n, context),
        Family::OversizedDeclared => bodies::oversized_declared(n, context),
        Family::OversizedChunked => bodies::oversized_chunked(n, context),
        Family::ChunkedBody => bodies::chunked(n, context),
        Family::InvalidUtf8 => json::invalid_utf8(n, context),
        Family::NestedJson => json::nested(n, context),
        Family::UnreadableValue => json::unreadable_value(n, context),
        Family::HugeJson => json::huge(n, context),
        Family::WrongObject => json::wrong_object(n, context),
        Family::MissingId => json::missing_id(n, context),
        Family::WrongType => json::wrong_type(n, context),
        Family::WrongLivemode => json::wrong_livemode(n, context),
        Family::SlowHead => slow::head(n, context),
        Family::SlowBody => slow::body(n, context),
    }
}

/// Every request of the corpus as (family, number), `per_family(family)`
/// of each, shuffled so that the families arrive interleaved.
pub fn requests(per_family: impl Fn(Family) -> usize) -> Vec<(Family, usize)> {
    let mut all: Vec<(Family, usize)> = Family::ALL
        .iter()
        .flat_map(|&family| (0..per_family(family)).map(move |n| (family, n)))
        .collect();
    all.shuffle(&mut rand::rng());
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostile::attack::Pacing;

    pub(crate) fn context() -> Context {
        Context {
            secret: WebhookSecret::parse("whsec_test_secret").unwrap(),
            now: 1_800_000_000,
            tolerance_secs: 300,
            max_body_bytes: 1024 * 1024,
            dribble_every: std::time::Duration::from_millis(50),
        }
    }

    #[test]
    fn every_family_builds_every_variant_as_a_post_to_the_webhook() {
        let context = context();
        for family in Family::ALL {
            for n in 0..40 {
                let attack = build(family, n, &context);
                assert!(
                    attack.bytes.starts_with(b"POST /webhook HTTP/1.1\r\n"),
                    "{family:?} {n}: {attack:?}"
                );
                assert_eq!(
                    family.is_slow(),
                    matches!(attack.pacing, Pacing::Dribble { .. }),
                    "{family:?}"
                );
            }
        }
    }

    #[test]
    fn huge_json_stays_under_the_limit_so_it_is_refused_for_its_content() {
        let context = context();
        for n in 0..8 {
            let attack = build(Family::HugeJson, n, &context);
            let head_end = attack.bytes.windows(4).position(|w| w == b"\r\n\r\n");
            let body = attack.bytes.len() - head_end.unwrap() - 4;
            assert!(body <= context.max_body_bytes, "#{n}: {body} bytes");
            assert!(body > context.max_body_bytes / 2, "#{n}: {body} bytes");
        }
    }

    #[test]
    fn unreadable_values_are_refused_for_their_shape_alone() {
        let context = context();
        for n in 0..8 {
            let attack = build(Family::UnreadableValue, n, &context);
            let head_end = attack.bytes.windows(4).position(|w| w == b"\r\n\r\n");
            let body = &attack.bytes[head_end.unwrap() + 4..];
            // UTF-8 text with the envelope's fields intact ...
            let text = std::str::from_utf8(body).unwrap();
            assert!(
                text.contains("\"id\":\"evt_hostile_unreadable_value_"),
                "#{n}"
            );
            // ... refused by ingest's shape check, nothing else.
            assert!(
                matches!(
                    shared::EventEnvelope::parse(body),
                    Err(shared::event::EnvelopeError::BadShape(_))
                ),
                "#{n}: {text}"
            );
        }
    }

    #[test]
    fn the_spoilable_event_is_itself_a_valid_event() {
        let envelope = shared::EventEnvelope::parse(&context().event_bytes("evt_x")).unwrap();
        assert_eq!(envelope.livemode, Some(false));
    }
}
