//! Signature families: each body is a valid event, so only its signature
//! or timestamp is wrong.

use shared::{WebhookSecret, sign_test_header};

use super::attack::{Attack, Head, Pacing};
use super::corpus::Context;
use super::family::Family;

fn at_once(signature: impl AsRef<[u8]>, body: &[u8]) -> Attack {
    Attack {
        bytes: Head::post().signature(signature).body(body),
        pacing: Pacing::AtOnce,
    }
}

/// A current timestamp with a `v1` that no secret made: random hex, the
/// right HMAC in upper case (Stripe signs lower case), one digit short, or
/// the right HMAC only as `v0` (ignored).
pub fn forged(n: usize, context: &Context) -> Attack {
    let body = context.event_bytes(&Family::ForgedSignature.event_id(n));
    let right = context.sign(&body);
    let right_hex = right.split_once(",v1=").map_or("", |(_, hex)| hex);
    let signature = match n % 5 {
        0 | 1 => context.forged(n),
        2 => format!("t={},v1={}", context.now, right_hex.to_ascii_uppercase()),
        3 => format!("t={},v1={}", context.now, &right_hex[1..]),
        _ => format!("t={},v0={right_hex},v1={}", context.now, "0".repeat(64)),
    };
    at_once(signature, &body)
}

/// Correctly computed with a secret that is not the endpoint's: another
/// `whsec_`, the right one without its prefix, or one character changed.
pub fn wrong_secret(n: usize, context: &Context) -> Attack {
    let body = context.event_bytes(&Family::WrongSecret.event_id(n));
    let other = match n % 3 {
        0 => format!("whsec_attacker{n}"),
        1 => "whsec_test_secrets".to_owned(),
        _ => "whsec_Test_secret".to_owned(),
    };
    let signature = match WebhookSecret::parse(&other) {
        Ok(secret) => sign_test_header(&secret, &body, context.now),
        Err(_) => context.forged(n),
    };
    // The unprefixed key as raw HMAC key, signed by hand.
    let signature = if n % 7 == 6 {
        shared::signature::sign_header(b"test_secret", &body, context.now)
    } else {
        signature
    };
    at_once(signature, &body)
}

/// A correct signature of other bytes: one byte of the body changed after
/// signing, a trailing space, another event, or the right body signed at a
/// timestamp other than the one the header names.
pub fn mismatched_body(n: usize, context: &Context) -> Attack {
    let id = Family::MismatchedBody.event_id(n);
    let body = context.event_bytes(&id);
    let (signed, sent, signature) = match n % 4 {
        0 => {
            let mut sent = body.clone();
            let at = sent.len() / 2 + n % (sent.len() / 3);
            sent[at] = if sent[at] == b'x' { b'y' } else { b'x' };
            (body, sent, None)
        }
        1 => {
            let mut sent = body.clone();
            sent.push(b' ');
            (body, sent, None)
        }
        2 => (context.event_bytes("evt_signed_other"), body, None),
        _ => {
            let signed_then = context.sign_at(&body, context.now - 1);
            let hex = signed_then.split_once(",v1=").map_or("", |(_, hex)| hex);
            let header = format!("t={},v1={hex}", context.now);
            (body.clone(), body, Some(header))
        }
    };
    let signature = signature.unwrap_or_else(|| context.sign(&signed));
    at_once(signature, &sent)
}

/// Correctly signed at a time past the tolerance: just past it, hours,
/// years, the epoch.
pub fn stale(n: usize, context: &Context) -> Attack {
    let body = context.event_bytes(&Family::StaleTimestamp.event_id(n));
    let past = context.tolerance_secs + 1;
    let timestamp = match n % 4 {
        0 => context.now - past - (n as i64 % 60),
        1 => context.now - 3_600 * (1 + n as i64 % 48),
        2 => context.now - 86_400 * 365 * (1 + n as i64 % 5),
        _ => n as i64 % 1_000,
    };
    at_once(context.sign_at(&body, timestamp), &body)
}

/// Correctly signed at a time further ahead than the tolerance. A margin
/// of a minute over it: the request must still be ahead when it arrives.
pub fn future(n: usize, context: &Context) -> Attack {
    let body = context.event_bytes(&Family::FutureTimestamp.event_id(n));
    let ahead = context.tolerance_secs + 60;
    let timestamp = match n % 3 {
        0 => context.now + ahead + (n as i64 % 60),
        1 => context.now + 86_400 * (1 + n as i64 % 30),
        _ => 9_999_999_999 + n as i64,
    };
    at_once(context.sign_at(&body, timestamp), &body)
}
