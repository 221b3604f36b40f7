//! `Stripe-Signature` verification, and signing for tests and tools.
//!
//! The header is `t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=<hex>]`. The
//! signed string is `"{t}.{raw body}"`, HMAC-SHA256 keyed with the whole
//! `whsec_…` secret, lowercase hex. Any `v1` matching any configured secret
//! passes (secret rotation); `v0` and unknown keys are ignored.

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Stripe's default tolerance between the signed timestamp and now.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The secret the tests, the fixtures and the quick start sign with. It is
/// public, so anyone can sign with it: services refuse it on a listener
/// others can reach.
pub const PUBLISHED_TEST_SECRET: &str = "whsec_test_secret";

/// A webhook endpoint secret (`whsec_…`). Never printed.
#[derive(Clone)]
pub struct WebhookSecret(SecretString);

impl WebhookSecret {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let raw = raw.trim();
        match raw.strip_prefix("whsec_") {
            Some(rest) if !rest.is_empty() => Ok(Self(SecretString::from(raw.to_owned()))),
            _ => Err("a Stripe webhook secret starting with `whsec_`"),
        }
    }

    /// True for [`PUBLISHED_TEST_SECRET`], which anyone can sign with.
    pub fn is_published_test_secret(&self) -> bool {
        self.0.expose_secret() == PUBLISHED_TEST_SECRET
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        match HmacSha256::new_from_slice(self.0.expose_secret().as_bytes()) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(whsec_…)")
    }
}

/// Why a request's signature was refused. Each is a distinct reason in
/// responses and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    #[error("malformed Stripe-Signature header")]
    MalformedHeader,
    #[error("no v1 signature in Stripe-Signature header")]
    NoV1Signature,
    #[error("timestamp outside the tolerance of {tolerance_secs} s")]
    TimestampOutOfTolerance { tolerance_secs: u64 },
    #[error("no signature matches the payload")]
    NoMatchingSignature,
}

impl SignatureError {
    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_header",
            Self::MalformedHeader => "malformed_header",
            Self::NoV1Signature => "no_v1_signature",
            Self::TimestampOutOfTolerance { .. } => "timestamp_out_of_tolerance",
            Self::NoMatchingSignature => "no_matching_signature",
        }
    }
}

/// The parts of a `Stripe-Signature` header we use.
struct ParsedHeader<'a> {
    timestamp: i64,
    /// `t` as sent: the signed string uses these exact characters.
    timestamp_raw: &'a str,
    v1: Vec<&'a str>,
}

fn parse_header(header: &str) -> Result<ParsedHeader<'_>, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let (key, value) = item
            .trim()
            .split_once('=')
            .ok_or(SignatureError::MalformedHeader)?;
        match key {
            "t" => {
                // Digits only: `+1000` or ` 1000` would parse but is not Stripe's form.
                let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
                let t = value
                    .parse::<i64>()
                    .ok()
                    .filter(|_| digits)
                    .ok_or(SignatureError::MalformedHeader)?;
                timestamp = Some((t, value));
            }
            "v1" => v1.push(value),
            _ => {} // v0 (a test-mode decoy) and future schemes.
        }
    }
    let (timestamp, timestamp_raw) = timestamp.ok_or(SignatureError::MalformedHeader)?;
    if v1.is_empty() {
        return Err(SignatureError::NoV1Signature);
    }
    Ok(ParsedHeader {
        timestamp,
        timestamp_raw,
        v1,
    })
}

/// Verifies `Stripe-Signature` headers against one or more secrets.
#[derive(Clone, Debug)]
pub struct SignatureVerifier {
    /// Every secret currently valid; more than one while rotating.
    secrets: Vec<WebhookSecret>,
    /// How far the signed timestamp may be from now, either way.
    tolerance: Duration,
}

impl SignatureVerifier {
    /// `secrets` must not be empty: with none, nothing could ever verify.
    pub fn new(secrets: Vec<WebhookSecret>, tolerance: Duration) -> Self {
        debug_assert!(!secrets.is_empty(), "a verifier needs at least one secret");
        Self { secrets, tolerance }
    }

    /// Checks what can be checked before the body has arrived: the header
    /// is present, well formed, carries a `v1` and a timestamp within the
    /// tolerance. Cheap, so a server can refuse a request before reading
    /// (or buffering) its body; [`SignatureVerifier::verify`] still has to
    /// pass once the body is whole.
    pub fn check_header(&self, header: Option<&str>, now_unix: i64) -> Result<(), SignatureError> {
        let parsed = parse_header(header.ok_or(SignatureError::MissingHeader)?)?;
        self.check_timestamp(parsed.timestamp, now_unix)
    }

    fn check_timestamp(&self, timestamp: i64, now_unix: i64) -> Result<(), SignatureError> {
        if now_unix.abs_diff(timestamp) > self.tolerance.as_secs() {
            return Err(SignatureError::TimestampOutOfTolerance {
                tolerance_secs: self.tolerance.as_secs(),
            });
        }
        Ok(())
    }

    /// Checks `header` for `body` at `now_unix` (seconds).
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::MissingHeader)?;
        let parsed = parse_header(header)?;
        let candidates: Vec<[u8; 32]> = parsed
            .v1
            .iter()
            // Stripe signs in lowercase hex; anything else cannot match.
            .filter(|hex_sig| {
                hex_sig
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            })
            .filter_map(|hex_sig| {
                let mut raw = [0u8; 32];
                hex::decode_to_slice(hex_sig, &mut raw).ok().map(|()| raw)
            })
            .collect();
        let matched = self.secrets.iter().any(|secret| {
            let expected = compute(secret, parsed.timestamp_raw, body);
            // Check every candidate so timing does not depend on which matched.
            candidates
                .iter()
                .fold(subtle::Choice::from(0), |any, candidate| {
                    any | expected.ct_eq(candidate)
                })
                .into()
        });
        if !matched {
            return Err(SignatureError::NoMatchingSignature);
        }
        self.check_timestamp(parsed.timestamp, now_unix)
    }
}

/// HMAC-SHA256 of `"{timestamp}.{body}"`.
fn compute(secret: &WebhookSecret, timestamp: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = secret.mac();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Builds a `Stripe-Signature` header value for `body`, as Stripe's
/// `generateTestHeaderString` does: for tests, load generators and tools.
pub fn sign_test_header(secret: &WebhookSecret, body: &[u8], timestamp: i64) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(compute(secret, &timestamp.to_string(), body))
    )
}

/// A header of Stripe's form, `t=<timestamp>,v1=<hex HMAC-SHA256 of
/// "<timestamp>.<body>" under `key`>`, for what we sign ourselves (the
/// outcome webhook, whose secret is any string).
pub fn sign_header(key: &[u8], body: &[u8], timestamp: i64) -> String {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret(raw: &str) -> WebhookSecret {
        WebhookSecret::parse(raw).unwrap()
    }

    fn verifier(raw: &[&str]) -> SignatureVerifier {
        SignatureVerifier::new(raw.iter().map(|s| secret(s)).collect(), DEFAULT_TOLERANCE)
    }

    /// The README's worked example of the outcome webhook's signature.
    #[test]
    fn outcome_webhook_worked_example_from_the_readme() {
        let body = br#"{"version":1,"idempotency_key":"vs_123:verified:outcome_webhook","subject":"user_42","session":"vs_123","outcome":"verified","last_error_code":null,"reason":null,"failed_attempts":0,"attempts_left":3,"occurred_at":"2026-11-28T12:00:00Z"}"#;
        assert_eq!(
            sign_header(b"outcome-webhook-secret-example", body, 1_795_867_200),
            "t=1795867200,v1=85264a375b58a153e05ec68ae82de67f78ca66a6dd151d25e449dd88d85183d4"
        );
    }

    #[test]
    fn sign_header_is_stripes_scheme_under_any_key() {
        let body = br#"{"id":"evt_test_webhook","object":"event"}"#;
        assert_eq!(
            sign_header(b"whsec_test_secret", body, 1_492_774_577),
            sign_test_header(&secret("whsec_test_secret"), body, 1_492_774_577)
        );
    }

    #[test]
    fn worked_example_from_the_fixtures_readme() {
        let body = br#"{"id":"evt_test_webhook","object":"event"}"#;
        let header = sign_test_header(&secret("whsec_test_secret"), body, 1_492_774_577);
        assert_eq!(
            header,
            "t=1492774577,v1=88a022085c6bdb887b02cb26ff76dd681234d9675c0f22844059f55552a8883a"
        );
        let verifier = verifier(&["whsec_test_secret"]);
        assert_eq!(verifier.verify(Some(&header), body, 1_492_774_600), Ok(()));
    }

    #[test]
    fn every_fixture_signature_verifies() {
        let signatures: serde_json::Value =
            serde_json::from_slice(include_bytes!("../fixtures/signatures.json")).unwrap();
        let t = signatures["t"].as_i64().unwrap();
        let verifier = verifier(&[signatures["secret"].as_str().unwrap()]);
        let files = signatures["files"].as_object().unwrap();
        assert_eq!(files.len(), 6);
        for (name, entry) in files {
            let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
            let body = std::fs::read(&path).unwrap();
            let header = entry["stripe_signature"].as_str().unwrap();
            assert_eq!(
                verifier.verify(Some(header), &body, t + 10),
                Ok(()),
                "{name}"
            );
            // Out of tolerance once the clock has moved on.
            assert!(matches!(
                verifier.verify(Some(header), &body, t + 301),
                Err(SignatureError::TimestampOutOfTolerance { .. })
            ));
        }
    }

    #[test]
    fn each_failure_is_named() {
        let verifier = verifier(&["whsec_test_secret"]);
        let body = b"{}";
        let good = sign_test_header(&secret("whsec_test_secret"), body, 1000);
        assert_eq!(
            verifier.verify(None, body, 1000),
            Err(SignatureError::MissingHeader)
        );
        for malformed in [
            "",
            "garbage",
            "t=abc,v1=00",
            "v1=00",
            "t=1,,v1=00",
            "t=+1000,v1=00",
        ] {
            assert_eq!(
                verifier.verify(Some(malformed), body, 1000),
                Err(SignatureError::MalformedHeader),
                "{malformed:?}"
            );
        }
        assert_eq!(
            verifier.verify(Some("t=1000,v0=abcd"), body, 1000),
            Err(SignatureError::NoV1Signature)
        );
        assert_eq!(
            verifier.verify(Some(&good), b"{ }", 1000),
            Err(SignatureError::NoMatchingSignature)
        );
        assert_eq!(
            verifier.verify(Some("t=1000,v1=not-hex"), body, 1000),
            Err(SignatureError::NoMatchingSignature)
        );
        let upper = good.replace(
            good.split_once("v1=").unwrap().1,
            &good.split_once("v1=").unwrap().1.to_uppercase(),
        );
        assert_eq!(
            verifier.verify(Some(&upper), body, 1000),
            Err(SignatureError::NoMatchingSignature),
            "only lowercase hex, as Stripe signs"
        );
        let padded = good.replace("t=1000", "t=01000");
        assert_eq!(
            verifier.verify(Some(&padded), body, 1000),
            Err(SignatureError::NoMatchingSignature),
            "the timestamp is signed as sent"
        );
        let stale = Err(SignatureError::TimestampOutOfTolerance {
            tolerance_secs: 300,
        });
        assert_eq!(verifier.verify(Some(&good), body, 1301), stale);
        // Too far in the future is refused the same way.
        assert_eq!(verifier.verify(Some(&good), body, 699), stale);
        assert_eq!(verifier.verify(Some(&good), body, 1300), Ok(()));
    }

    #[test]
    fn the_header_is_checked_without_the_body() {
        let verifier = verifier(&["whsec_test_secret"]);
        let good = sign_test_header(&secret("whsec_test_secret"), b"{}", 1000);
        assert_eq!(verifier.check_header(Some(&good), 1000), Ok(()));
        // A forged signature with a current timestamp passes this check:
        // only `verify`, with the body, can refuse it.
        assert_eq!(verifier.check_header(Some("t=1000,v1=00"), 1300), Ok(()));
        assert_eq!(
            verifier.check_header(None, 1000),
            Err(SignatureError::MissingHeader)
        );
        assert_eq!(
            verifier.check_header(Some("t=x,v1=00"), 1000),
            Err(SignatureError::MalformedHeader)
        );
        assert_eq!(
            verifier.check_header(Some("t=1000,v0=00"), 1000),
            Err(SignatureError::NoV1Signature)
        );
        let stale = Err(SignatureError::TimestampOutOfTolerance {
            tolerance_secs: 300,
        });
        assert_eq!(verifier.check_header(Some(&good), 1301), stale);
        assert_eq!(verifier.check_header(Some(&good), 699), stale);
    }

    #[test]
    fn the_published_test_secret_is_recognised() {
        assert!(secret(PUBLISHED_TEST_SECRET).is_published_test_secret());
        assert!(secret(" whsec_test_secret ").is_published_test_secret());
        assert!(!secret("whsec_test_secret2").is_published_test_secret());
    }

    #[test]
    fn any_v1_may_match_and_v0_is_ignored() {
        let verifier = verifier(&["whsec_test_secret"]);
        let body = b"{}";
        let good = sign_test_header(&secret("whsec_test_secret"), body, 1000);
        let v1 = good.split_once("v1=").unwrap().1;
        let header = format!("t=1000,v1={},v1={v1},v0=deadbeef,x=y", "0".repeat(64));
        assert_eq!(verifier.verify(Some(&header), body, 1000), Ok(()));
    }

    #[test]
    fn rotation_accepts_any_configured_secret() {
        let verifier = verifier(&["whsec_old", "whsec_new"]);
        let body = b"{}";
        for raw in ["whsec_old", "whsec_new"] {
            let header = sign_test_header(&secret(raw), body, 1000);
            assert_eq!(verifier.verify(Some(&header), body, 1000), Ok(()));
        }
        let header = sign_test_header(&secret("whsec_other"), body, 1000);
        assert_eq!(
            verifier.verify(Some(&header), body, 1000),
            Err(SignatureError::NoMatchingSignature)
        );
    }

    #[test]
    fn secrets_need_their_prefix_and_never_print() {
        assert!(WebhookSecret::parse("sk_test_123").is_err());
        assert!(WebhookSecret::parse("whsec_").is_err());
        let printed = format!("{:?}", secret("whsec_supersecret"));
        assert!(!printed.contains("supersecret"));
    }

    proptest! {
        #[test]
        fn any_signed_body_verifies(body in proptest::collection::vec(any::<u8>(), 0..2048), t in 0i64..4_000_000_000) {
            let verifier = verifier(&["whsec_a", "whsec_b"]);
            let header = sign_test_header(&secret("whsec_b"), &body, t);
            prop_assert_eq!(verifier.verify(Some(&header), &body, t), Ok(()));
        }

        #[test]
        fn any_single_byte_change_fails(
            body in proptest::collection::vec(any::<u8>(), 1..1024),
            index in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let verifier = verifier(&["whsec_a"]);
            let header = sign_test_header(&secret("whsec_a"), &body, 1000);
            let mut tampered = body.clone();
            let at = index.index(tampered.len());
            tampered[at] ^= flip;
            prop_assert_eq!(
                verifier.verify(Some(&header), &tampered, 1000),
                Err(SignatureError::NoMatchingSignature)
            );
        }
    }
}
