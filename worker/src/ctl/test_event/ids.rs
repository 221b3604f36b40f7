//! Fresh Stripe-looking ids: Stripe's prefix, then 24 characters of
//! `[A-Za-z0-9]` (14 for request ids), as in `evt_1Sk3Hq2eZvKYlo2CgT0oRk5a`.
//! Random, so that a test event never collides with a real one or with
//! another test's, and the inbox's deduplication sees each as new.

use uuid::Uuid;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Characters after the prefix of an event, session or report id.
pub const OBJECT_ID_LEN: usize = 24;
/// Characters after `req_` of a request id.
pub const REQUEST_ID_LEN: usize = 14;

/// `prefix` followed by `len` random characters of Stripe's alphabet.
pub fn fresh(prefix: &str, len: usize) -> String {
    let mut id = String::with_capacity(prefix.len() + len);
    id.push_str(prefix);
    let mut left = len;
    while left > 0 {
        // A v4 UUID is the randomness at hand (no `rand` in this crate);
        // bytes of 248 and above are skipped so that every character is
        // equally likely (248 = 4 × 62).
        for byte in Uuid::new_v4().into_bytes() {
            if left == 0 {
                break;
            }
            if byte < 248 {
                id.push(char::from(ALPHABET[usize::from(byte % 62)]));
                left -= 1;
            }
        }
    }
    id
}

pub fn event_id() -> String {
    fresh("evt_", OBJECT_ID_LEN)
}

pub fn session_id() -> String {
    fresh("vs_", OBJECT_ID_LEN)
}

pub fn report_id() -> String {
    fresh("vr_", OBJECT_ID_LEN)
}

pub fn request_id() -> String {
    fresh("req_", REQUEST_ID_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_stripes_prefix_length_and_alphabet() {
        for (id, prefix, len) in [
            (event_id(), "evt_", 24),
            (session_id(), "vs_", 24),
            (report_id(), "vr_", 24),
            (request_id(), "req_", 14),
        ] {
            let rest = id.strip_prefix(prefix).unwrap();
            assert_eq!(rest.len(), len, "{id}");
            assert!(rest.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        }
        assert!(shared::EventId::parse(&event_id()).is_ok());
        assert!(shared::SessionId::parse(&session_id()).is_ok());
        assert_ne!(event_id(), event_id());
    }
}
