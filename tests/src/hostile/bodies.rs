//! Body families: bodies that end early, pass the size limit, or are
//! chunked wrongly.

use super::attack::{Attack, Head, Pacing, chunks};
use super::corpus::{Context, to_bytes};
use super::family::Family;

/// A valid event of about `size` bytes (padded in its session's metadata).
fn padded_event(context: &Context, event_id: &str, size: usize) -> Vec<u8> {
    let mut event = context.event(event_id);
    let base = to_bytes(&event).len() + r#""padding":"""#.len();
    event["data"]["object"]["metadata"]["padding"] =
        serde_json::Value::String("x".repeat(size.saturating_sub(base)));
    to_bytes(&event)
}

/// Correctly signed, `Content-Length` the whole body, but only part of it
/// sent (none, most, all but one byte) before the write side closes.
pub fn truncated(n: usize, context: &Context) -> Attack {
    let body = context.event_bytes(&Family::TruncatedBody.event_id(n));
    let sent = match n % 3 {
        0 => 0,
        1 => (n * 31) % body.len(),
        _ => body.len() - 1,
    };
    let mut bytes = Head::post()
        .signature(context.sign(&body))
        .header("Content-Length", body.len().to_string())
        .end();
    bytes.extend_from_slice(&body[..sent]);
    Attack {
        bytes,
        pacing: Pacing::HalfClose,
    }
}

/// A `Content-Length` over the limit and the first 8 KiB of the body, the
/// connection then held: refused on the length, without reading. The
/// signature is a forged current one: ingest cannot check one before it
/// has the body, and refuses on the length first.
pub fn oversized_declared(n: usize, context: &Context) -> Attack {
    let limit = context.max_body_bytes;
    let declared = match n % 4 {
        0 => limit + 1,
        1 => limit * 2,
        2 => 16 * 1024 * 1024 + n,
        _ => 1 << 40,
    };
    let mut bytes = Head::post()
        .signature(context.forged(n))
        .header("Content-Length", declared.to_string())
        .end();
    let start = padded_event(context, &Family::OversizedDeclared.event_id(n), 8 * 1024);
    bytes.extend_from_slice(&start);
    Attack {
        bytes,
        pacing: Pacing::AtOnce,
    }
}

/// A correctly signed, valid event just over the limit (or half as much
/// again), chunked so no length announces it: refused once the bytes read
/// pass the limit.
pub fn oversized_chunked(n: usize, context: &Context) -> Attack {
    let limit = context.max_body_bytes;
    let size = if n.is_multiple_of(2) {
        limit + 1 + n
    } else {
        limit * 3 / 2
    };
    let body = padded_event(context, &Family::OversizedChunked.event_id(n), size);
    let chunk = if n.is_multiple_of(3) {
        body.len()
    } else {
        16 * 1024
    };
    Attack {
        bytes: Head::post()
            .signature(context.sign(&body))
            .chunked(&body, chunk),
        pacing: Pacing::AtOnce,
    }
}

/// Chunked bodies whose framing is broken (refused by actix), that smuggle
/// a `Content-Length` beside the chunking, or are well framed around a
/// forged or non-event body (refused by ingest).
pub fn chunked(n: usize, context: &Context) -> Attack {
    let id = Family::ChunkedBody.event_id(n);
    let body = context.event_bytes(&id);
    let signed = Head::post().signature(context.sign(&body));
    let forged = Head::post().signature(context.forged(n));
    let framed = |head: Head, raw: &[u8]| {
        let mut bytes = head.header("Transfer-Encoding", "chunked").end();
        bytes.extend_from_slice(raw);
        bytes
    };
    let mut pacing = Pacing::AtOnce;
    let bytes = match n % 9 {
        0 => framed(signed, b"zz\r\nhello\r\n0\r\n\r\n"),
        1 => framed(signed, b"5\r\nhelloXX0\r\n\r\n"),
        2 => framed(signed, b"fffffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        3 => framed(signed, b"-5\r\nhello\r\n0\r\n\r\n"),
        // The size promises more than comes, then the write side closes.
        4 => {
            pacing = Pacing::HalfClose;
            let mut raw = format!("{:x}\r\n", body.len() + 100).into_bytes();
            raw.extend_from_slice(&body);
            framed(signed, &raw)
        }
        // Both lengths, a smuggling attempt: forged, so that neither
        // reading of the body could pass.
        5 => framed(
            forged.clone().header("Content-Length", "10"),
            &chunks(&body, 64),
        ),
        6 => forged.chunked(&body, 100),
        7 => {
            let mut raw = b"5;ext=\"x\"\r\n".to_vec();
            raw.extend_from_slice(&body[..5]);
            raw.extend_from_slice(b"\r\n");
            raw.extend(chunks(&body[5..], 1000));
            framed(forged, &raw)
        }
        _ => {
            let mut not_event = context.event(&id);
            not_event["object"] = "customer".into();
            let not_event = to_bytes(&not_event);
            Head::post()
                .signature(context.sign(&not_event))
                .chunked(&not_event, 77)
        }
    };
    Attack { bytes, pacing }
}
