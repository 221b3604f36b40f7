//! Header families: a valid event under a `Stripe-Signature` that is
//! garbage, huge, crowded with `v1=` entries, or not ASCII.

use super::attack::{Attack, Head, Pacing};
use super::corpus::Context;
use super::family::Family;

fn at_once(bytes: Vec<u8>) -> Attack {
    Attack {
        bytes,
        pacing: Pacing::AtOnce,
    }
}

/// Garbage where the signature should be, each refused on the head.
pub fn malformed(n: usize, context: &Context) -> Attack {
    let body = context.event_bytes(&Family::MalformedHeader.event_id(n));
    let right = context.sign(&body);
    let hex = right.split_once(",v1=").map_or("", |(_, hex)| hex);
    let now = context.now;
    let value = match n % 16 {
        0 => String::new(),
        1 => "t=".to_owned(),
        2 => format!("v1={hex}"),
        3 => format!("t=abc,v1={hex}"),
        4 => format!("t={now}"),
        5 => ",,,".to_owned(),
        6 => format!("t=+{now},v1={hex}"),
        7 => format!("t= {now},v1={hex}"),
        8 => format!("t={now};v1={hex}"),
        9 => format!("t:{now},v1:{hex}"),
        10 => format!("t={now},v1"),
        11 => format!("t={now}0000000000000000000000,v1={hex}"),
        12 => format!("t=-{now},v1={hex}"),
        13 => format!("{right},garbage"),
        // No header at all.
        14 => return at_once(Head::post().body(&body)),
        // A garbage header first: ingest reads the first one.
        _ => {
            return at_once(
                Head::post()
                    .signature("t=nonsense")
                    .signature(&right)
                    .body(&body),
            );
        }
    };
    at_once(Head::post().signature(value).body(&body))
}

/// Past actix's 128 KiB head buffer (431), past its 96 headers (431), or
/// a huge value it takes and ingest refuses (400).
pub fn huge(n: usize, context: &Context) -> Attack {
    let body = context.event_bytes(&Family::HugeHeader.event_id(n));
    let right = context.sign(&body);
    let head = match n % 4 {
        0 => Head::post().signature(format!("{right},v0={}", "a".repeat(140 * 1024))),
        1 => (0..120).fold(Head::post().signature(context.forged(n)), |head, i| {
            head.header(&format!("X-Filler-{i}"), "x")
        }),
        2 => Head::post().signature(format!("t={},v1={}", context.now, "f".repeat(100 * 1024))),
        _ => Head::post()
            .header("X-Padding", "p".repeat(100 * 1024))
            .signature(context.forged(n)),
    };
    at_once(head.body(&body))
}

/// A current timestamp and 100 to 1,000 `v1=` entries, none of them the
/// right one (the HMAC of another body among them).
pub fn many_v1(n: usize, context: &Context) -> Attack {
    let body = context.event_bytes(&Family::ManyV1.event_id(n));
    let other = context.sign(b"another body");
    let other_hex = other.split_once(",v1=").map_or("", |(_, hex)| hex);
    let count = 100 + (n * 37) % 900;
    let mut value = format!("t={}", context.now);
    for i in 0..count {
        if i == count / 2 {
            value.push_str(&format!(",v1={other_hex}"));
        } else {
            value.push_str(&format!(
                ",v1={:064x}",
                (n * 1_000 + i).wrapping_mul(0x9E37_79B9)
            ));
        }
    }
    at_once(Head::post().signature(value).body(&body))
}

/// The right signature spoilt with bytes outside visible ASCII: UTF-8
/// letters, Latin-1 bytes, a lone byte over 0x7F. (A DEL or a control byte
/// would be refused by actix's parser before ingest sees it.)
pub fn non_ascii(n: usize, context: &Context) -> Attack {
    let body = context.event_bytes(&Family::NonAsciiHeader.event_id(n));
    let right = context.sign(&body).into_bytes();
    let mut value = right.clone();
    match n % 5 {
        0 => value.splice(2..2, "ü".bytes()).for_each(drop),
        1 => value.extend_from_slice(",v1=\u{1F600}".as_bytes()),
        2 => value.insert(right.len() / 2, 0xE9),
        3 => value.insert(0, 0xFF),
        _ => value.extend_from_slice(&[0x80]),
    }
    at_once(Head::post().signature(value).body(&body))
}
