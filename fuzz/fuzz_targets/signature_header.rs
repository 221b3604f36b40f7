//! `Stripe-Signature`: `SignatureVerifier::check_header` and `verify`, with
//! the header parse under them, against a reference HMAC computed here.
//!
//! Input: `<header>\n<choices>\n<body>` (a seed is a fixture's header, an
//! empty line and the fixture's body). Two checks run on every input:
//!
//! - **as sent**: the header line and the body, at the fixtures' time,
//!   with the fixtures' secret among two. `check_header` and `verify` agree
//!   (a header refused before the body is refused the same way after it);
//!   `verify` passes only when the header carries the reference HMAC of
//!   this body, so a pass the fuzzer forges is a failure; a passing pair
//!   fails once any byte of the body changes.
//! - **signed here**: the body with a header built by this target from the
//!   choices line (secrets in rotation, which one signs, leading zeros in
//!   `t`, decoy `v1`/`v0`/unknown items, spaces, clock skew, tolerance) and
//!   correctly signed, so the fuzzer reaches the body checks at once. It
//!   verifies exactly when signed by a configured secret within the
//!   tolerance; a change of one body byte, one signature character, one
//!   timestamp digit, or uppercase hex never verifies.

#![no_main]

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use shared::signature::{DEFAULT_TOLERANCE, sign_test_header};
use shared::{SignatureError, SignatureVerifier, WebhookSecret};

/// The fixtures' secret and signing time (`shared/fixtures/signatures.json`).
const FIXTURE_SECRET: &str = "whsec_test_secret";
const FIXTURE_T: i64 = 1_767_230_000;
/// Secrets a rotation may hold; the first is the fixtures'.
const ROTATION: [&str; 3] = [FIXTURE_SECRET, "whsec_old_0123", "whsec_new_4567"];
/// A secret no verifier here is configured with.
const NOT_CONFIGURED: &str = "whsec_never_configured";

fuzz_target!(|data: &[u8]| {
    let (header, rest) = split_line(data);
    let (choices, body) = split_line(rest);
    if let Ok(header) = std::str::from_utf8(header) {
        as_sent(header, body);
    }
    if let Ok(choices) = Choices::arbitrary(&mut Unstructured::new(choices)) {
        signed_here(&choices, body);
    }
});

fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

fn secret(raw: &str) -> WebhookSecret {
    WebhookSecret::parse(raw).unwrap_or_else(|e| panic!("{raw} is not a secret: {e}"))
}

fn verifier(secrets: &[&str], tolerance: Duration) -> SignatureVerifier {
    SignatureVerifier::new(secrets.iter().map(|s| secret(s)).collect(), tolerance)
}

/// HMAC-SHA256 of `"{t}.{body}"` keyed with the whole secret, lowercase hex:
/// Stripe's scheme, written here apart from the code under test.
fn reference_hex(secret: &str, t: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Errors the header alone decides.
fn is_header_error(error: &SignatureError) -> bool {
    matches!(
        error,
        SignatureError::MissingHeader
            | SignatureError::MalformedHeader
            | SignatureError::NoV1Signature
    )
}

fn as_sent(header: &str, body: &[u8]) {
    let secrets = [FIXTURE_SECRET, "whsec_rotated_out"];
    let verifier = verifier(&secrets, DEFAULT_TOLERANCE);
    let now = FIXTURE_T + 10;
    let early = verifier.check_header(Some(header), now);
    let full = verifier.verify(Some(header), body, now);
    match &early {
        Err(e) if is_header_error(e) => assert_eq!(&full, &early, "{header:?}"),
        Ok(()) => assert!(
            matches!(full, Ok(()) | Err(SignatureError::NoMatchingSignature)),
            "header passed check_header, verify said {full:?}"
        ),
        Err(e) => assert!(
            matches!(full, Err(SignatureError::NoMatchingSignature)) || full.as_ref() == Err(e),
            "check_header said {e:?}, verify said {full:?}"
        ),
    }
    if full.is_ok() {
        // A pass needs the real HMAC under some `t` item of the header.
        let items: Vec<&str> = header.split(',').map(str::trim).collect();
        let signed = items.iter().filter_map(|i| i.strip_prefix("t=")).any(|t| {
            secrets.iter().any(|s| {
                let v1 = format!("v1={}", reference_hex(s, t, body));
                items.contains(&v1.as_str())
            })
        });
        assert!(
            signed,
            "verify passed a header without a valid v1: {header:?}"
        );
        for at in [0, body.len() / 2, body.len().saturating_sub(1)] {
            if let Some(byte) = body.get(at) {
                let mut changed = body.to_vec();
                changed[at] = byte ^ 0x01;
                assert_eq!(
                    verifier.verify(Some(header), &changed, now),
                    Err(SignatureError::NoMatchingSignature),
                    "a body changed at byte {at} still verifies"
                );
            }
        }
    }
}

/// How the "signed here" header is built and what is done to it.
#[derive(Debug, Arbitrary)]
struct Choices {
    /// How many of [`ROTATION`] the verifier holds (1 to 3).
    configured: u8,
    /// Which secret signs: an index into [`ROTATION`], or past it
    /// [`NOT_CONFIGURED`].
    signer: u8,
    timestamp: u32,
    /// Leading zeros in `t` (0 to 2): signed as sent, so still valid.
    zeros: u8,
    skew: Skew,
    tolerance: Tolerance,
    /// Items before and after `t` and the signature.
    before: Vec<Decoy>,
    after: Vec<Decoy>,
    /// `v1` before `t`.
    signature_first: bool,
    /// Spaces around every item (Stripe sends none; the parser trims).
    spaced: bool,
    tamper: Tamper,
}

#[derive(Debug, Arbitrary)]
enum Skew {
    Near(i16),
    Far(i64),
}

#[derive(Debug, Arbitrary)]
enum Tolerance {
    Default,
    Secs(u16),
}

/// Items that must not change the outcome.
#[derive(Debug, Arbitrary)]
enum Decoy {
    /// A `v1` that is not the signature (64 lowercase hex, or junk).
    V1([u8; 32]),
    V1Text(String),
    /// Test-mode `v0`.
    V0([u8; 32]),
    /// A scheme this code does not know.
    Unknown(u8, String),
}

#[derive(Debug, Arbitrary)]
enum Tamper {
    None,
    /// XOR one body byte (index modulo the length) with a non-zero value.
    BodyByte(u16, u8),
    /// Replace one character of the signature with another hex digit.
    SignatureChar(u8, u8),
    /// Replace one digit of `t` with another digit.
    TimestampDigit(u8, u8),
    /// The signature in uppercase hex (Stripe signs in lowercase).
    Uppercase,
}

/// A decoy item with no `,` (which would split it) and never `t=` or a
/// valid signature (which would change the expected outcome).
fn decoy_item(decoy: &Decoy) -> String {
    let clean = |s: &str| s.replace([',', '\n'], "");
    match decoy {
        Decoy::V1(bytes) => format!("v1={}", hex::encode(bytes)),
        Decoy::V1Text(text) => format!("v1={}", clean(text)),
        Decoy::V0(bytes) => format!("v0={}", hex::encode(bytes)),
        Decoy::Unknown(n, text) => format!("x{n}={}", clean(text)),
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn signed_here(choices: &Choices, body: &[u8]) {
    let configured = usize::from(choices.configured % 3) + 1;
    let tolerance = match choices.tolerance {
        Tolerance::Default => DEFAULT_TOLERANCE,
        Tolerance::Secs(secs) => Duration::from_secs(u64::from(secs)),
    };
    let verifier = verifier(&ROTATION[..configured], tolerance);
    let signer = usize::from(choices.signer % 4);
    let signer_secret = ROTATION.get(signer).copied().unwrap_or(NOT_CONFIGURED);
    let signed_by_configured = signer < configured;

    let t = i64::from(choices.timestamp);
    let mut t_raw = format!("{}{t}", "0".repeat(usize::from(choices.zeros % 3)));
    let mut signature = reference_hex(signer_secret, &t_raw, body);
    let mut body = body.to_vec();
    let mut t_now = t;
    if choices.zeros % 3 == 0 {
        // The signing helper the tools use produces the same header.
        assert_eq!(
            sign_test_header(&secret(signer_secret), &body, t),
            format!("t={t},v1={signature}")
        );
    }
    let tampered = match choices.tamper {
        Tamper::None => false,
        Tamper::BodyByte(at, flip) => match body.len() {
            0 => false,
            len => {
                body[usize::from(at) % len] ^= flip.max(1);
                true
            }
        },
        Tamper::SignatureChar(at, to) => {
            let at = usize::from(at) % signature.len();
            let old = signature.as_bytes()[at];
            let mut new = HEX[usize::from(to % 16)];
            if new == old {
                new = HEX[(usize::from(to % 16) + 1) % 16];
            }
            signature.replace_range(at..=at, &char::from(new).to_string());
            true
        }
        Tamper::TimestampDigit(at, to) => {
            let at = usize::from(at) % t_raw.len();
            let old = t_raw.as_bytes()[at];
            let new = b'0' + (old - b'0' + 1 + to % 9) % 10;
            t_raw.replace_range(at..=at, &char::from(new).to_string());
            t_now = t_raw.parse().unwrap_or_else(|_| unreachable!("digits"));
            true
        }
        Tamper::Uppercase if signature.bytes().any(|b| b.is_ascii_lowercase()) => {
            signature = signature.to_uppercase();
            true
        }
        Tamper::Uppercase => false,
    };

    let (first, second) = (format!("t={t_raw}"), format!("v1={signature}"));
    let core = if choices.signature_first {
        [second, first]
    } else {
        [first, second]
    };
    let items: Vec<String> = choices
        .before
        .iter()
        .map(decoy_item)
        .chain(core)
        .chain(choices.after.iter().map(decoy_item))
        .collect();
    let separator = if choices.spaced { " , " } else { "," };
    let header = items.join(separator);

    let now = match choices.skew {
        Skew::Near(skew) => t.saturating_add(i64::from(skew)),
        Skew::Far(now) => now,
    };
    let in_time = now.abs_diff(t_now) <= tolerance.as_secs();
    let stale = Err(SignatureError::TimestampOutOfTolerance {
        tolerance_secs: tolerance.as_secs(),
    });
    let expected_header = if in_time { Ok(()) } else { stale.clone() };
    let expected = if tampered || !signed_by_configured {
        Err(SignatureError::NoMatchingSignature)
    } else {
        expected_header.clone()
    };
    assert_eq!(
        verifier.verify(Some(&header), &body, now),
        expected,
        "header {header:?}, now {now}, tampered {tampered}, signer {signer} of {configured}"
    );
    assert_eq!(
        verifier.check_header(Some(&header), now),
        expected_header,
        "header {header:?}, now {now}"
    );
}
