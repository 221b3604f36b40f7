//! Slow senders (slowloris): a correctly signed, valid event whose head or
//! body comes a byte at a time, slower than ingest's head or body timeout
//! lets it. Ingest must cut them off, and others must not wait for them.

use super::attack::{Attack, Head, Pacing};
use super::corpus::Context;
use super::family::Family;

/// The whole request dribbled from its first byte: the head never ends
/// within the head timeout.
pub fn head(n: usize, context: &Context) -> Attack {
    let body = context.event_bytes(&Family::SlowHead.event_id(n));
    Attack {
        bytes: Head::post().signature(context.sign(&body)).body(&body),
        pacing: Pacing::Dribble {
            from: n % 16,
            every: context.dribble_every,
        },
    }
}

/// The head at once, then its body dribbled (after a first part): the
/// body never ends within the body timeout.
pub fn body(n: usize, context: &Context) -> Attack {
    let body = context.event_bytes(&Family::SlowBody.event_id(n));
    let head = Head::post()
        .signature(context.sign(&body))
        .header("Content-Length", body.len().to_string())
        .end();
    let from = head.len() + n % 64;
    let mut bytes = head;
    bytes.extend_from_slice(&body);
    Attack {
        bytes,
        pacing: Pacing::Dribble {
            from,
            every: context.dribble_every,
        },
    }
}
