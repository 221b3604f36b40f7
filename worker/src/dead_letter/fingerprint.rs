//! A dead letter's fingerprint: SHA-256 of its body and a canonical
//! encoding of its headers, leaving out those the broker rewrites when it
//! delivers the same message again. So the same DLQ message delivered twice
//! (the drain died between its commit and its ack) has one fingerprint and
//! becomes one row, while a new dead-lettering of the same bytes has another:
//! a Stripe redelivery or an ingest retry carries a fresh
//! `x-received-at-ms`, a replay adds `x-idv-replay`, the worker's
//! `x-idv-first-failure-at-ms` and the broker's `x-death` times differ.
//!
//! Seen on RabbitMQ 3.10.8 (`tests/tests/dead_letters_drain.rs` checks
//! it): a message taken from the quorum DLQ again carries the same headers
//! but for `x-delivery-count` (0, then 1, 2, … on each redelivery); the
//! `redelivered` flag is not a header. `x-acquired-count` is left out as
//! well, not seen on 3.10.8: it is the same kind of per-delivery count,
//! should a later broker set it.

use lapin::types::{AMQPValue, FieldTable};
use sha2::{Digest, Sha256};

/// Headers the broker changes on each delivery of one stored message.
pub const PER_DELIVERY_HEADERS: [&str; 2] = ["x-delivery-count", "x-acquired-count"];

/// Tells this encoding from any later one.
const VERSION: &[u8] = b"idv-dead-letter-fingerprint-v1\0";

/// The fingerprint of a message with `body` and `headers`.
pub fn fingerprint(body: &[u8], headers: Option<&FieldTable>) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(VERSION);
    bytes(&mut hash, body);
    let kept: Vec<_> = headers
        .map(|table| {
            table
                .inner()
                .iter()
                .filter(|(name, _)| !PER_DELIVERY_HEADERS.contains(&name.as_str()))
                .collect()
        })
        .unwrap_or_default();
    // BTreeMap order: names sorted by bytes, whatever order they came in.
    length(&mut hash, kept.len());
    for (name, value) in kept {
        bytes(&mut hash, name.as_str().as_bytes());
        self::value(&mut hash, value);
    }
    hash.finalize().into()
}

fn length(hash: &mut Sha256, len: usize) {
    hash.update(u64::try_from(len).unwrap_or(u64::MAX).to_be_bytes());
}

/// Length-prefixed, so that no two sequences encode alike.
fn bytes(hash: &mut Sha256, data: &[u8]) {
    length(hash, data.len());
    hash.update(data);
}

/// A tag and the value's canonical bytes. Every integer width is one tag
/// (the value counts, not the width a client chose); both string types
/// are one tag.
fn value(hash: &mut Sha256, value: &AMQPValue) {
    let int = |hash: &mut Sha256, n: i128| {
        hash.update(b"i");
        hash.update(n.to_be_bytes());
    };
    match value {
        AMQPValue::Boolean(b) => hash.update(if *b { b"t" } else { b"f" }),
        AMQPValue::ShortShortInt(n) => int(hash, i128::from(*n)),
        AMQPValue::ShortShortUInt(n) => int(hash, i128::from(*n)),
        AMQPValue::ShortInt(n) => int(hash, i128::from(*n)),
        AMQPValue::ShortUInt(n) => int(hash, i128::from(*n)),
        AMQPValue::LongInt(n) => int(hash, i128::from(*n)),
        AMQPValue::LongUInt(n) => int(hash, i128::from(*n)),
        AMQPValue::LongLongInt(n) => int(hash, i128::from(*n)),
        AMQPValue::Float(x) => {
            hash.update(b"r");
            hash.update(f64::from(*x).to_bits().to_be_bytes());
        }
        AMQPValue::Double(x) => {
            hash.update(b"r");
            hash.update(x.to_bits().to_be_bytes());
        }
        AMQPValue::DecimalValue(d) => {
            hash.update(b"d");
            hash.update([d.scale]);
            hash.update(d.value.to_be_bytes());
        }
        AMQPValue::ShortString(s) => {
            hash.update(b"s");
            bytes(hash, s.as_str().as_bytes());
        }
        AMQPValue::LongString(s) => {
            hash.update(b"s");
            bytes(hash, s.as_bytes());
        }
        AMQPValue::ByteArray(b) => {
            hash.update(b"b");
            bytes(hash, b.as_slice());
        }
        AMQPValue::Timestamp(t) => {
            hash.update(b"T");
            hash.update(t.to_be_bytes());
        }
        AMQPValue::FieldArray(array) => {
            hash.update(b"A");
            length(hash, array.as_slice().len());
            for item in array.as_slice() {
                self::value(hash, item);
            }
        }
        AMQPValue::FieldTable(table) => {
            hash.update(b"F");
            length(hash, table.inner().len());
            for (name, item) in table.inner() {
                bytes(hash, name.as_str().as_bytes());
                self::value(hash, item);
            }
        }
        AMQPValue::Void => hash.update(b"V"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut table = FieldTable::default();
        for (name, value) in pairs {
            table.insert((*name).into(), value.clone());
        }
        table
    }

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    #[test]
    fn a_redelivery_of_the_same_message_has_the_same_fingerprint() {
        let death = AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(table(&[
            ("reason", text("delivery_limit")),
            ("count", AMQPValue::LongLongInt(1)),
        ]))]));
        let first = table(&[
            ("x-death", death.clone()),
            ("x-delivery-count", AMQPValue::LongLongInt(0)),
            ("x-received-at-ms", AMQPValue::LongLongInt(5)),
        ]);
        let again = table(&[
            ("x-death", death),
            ("x-delivery-count", AMQPValue::LongLongInt(3)),
            ("x-received-at-ms", AMQPValue::LongLongInt(5)),
        ]);
        assert_eq!(
            fingerprint(b"{}", Some(&first)),
            fingerprint(b"{}", Some(&again))
        );
    }

    #[test]
    fn a_new_dead_lettering_of_the_same_bytes_has_another() {
        let received = |ms| table(&[("x-received-at-ms", AMQPValue::LongLongInt(ms))]);
        let body = b"{\"id\":\"evt_1\"}";
        let first = fingerprint(body, Some(&received(5)));
        assert_ne!(first, fingerprint(body, Some(&received(6))));
        let mut replayed = received(5);
        replayed.insert("x-idv-replay".into(), text("dead-letter:1"));
        assert_ne!(first, fingerprint(body, Some(&replayed)));
        assert_ne!(
            first,
            fingerprint(b"{\"id\":\"evt_2\"}", Some(&received(5)))
        );
    }

    #[test]
    fn integer_widths_and_string_types_do_not_matter_but_boundaries_do() {
        let long = table(&[("n", AMQPValue::LongLongInt(7)), ("s", text("a"))]);
        let short = table(&[
            ("n", AMQPValue::ShortShortUInt(7)),
            ("s", AMQPValue::ShortString("a".into())),
        ]);
        assert_eq!(
            fingerprint(b"", Some(&long)),
            fingerprint(b"", Some(&short))
        );
        // The body's end is not the headers' start.
        let split = table(&[("ab", text("c"))]);
        let moved = table(&[("a", text("bc"))]);
        assert_ne!(
            fingerprint(b"", Some(&split)),
            fingerprint(b"", Some(&moved))
        );
        assert_ne!(fingerprint(b"x", None), fingerprint(b"", None));
        assert_eq!(
            fingerprint(b"x", None),
            fingerprint(b"x", Some(&FieldTable::default()))
        );
    }
}
