//! The shape a body must have before any of its fields is read: UTF-8 text,
//! nested no deeper than [`MAX_DEPTH`], with no escape of no character and
//! no number the worker cannot read.
//!
//! The envelope names five fields, and serde skips every other one without
//! looking inside: it neither checks that a skipped string is UTF-8 nor
//! bounds how deep a skipped value nests. Without this check a correctly
//! signed body whose unread parts are not UTF-8, or are nested 100,000
//! deep, passed as an event and was published, to fail only in the worker
//! (PostgreSQL's `jsonb` refuses text that is not UTF-8, serde_json
//! refuses more than 128 levels where it does read): a poison message.
//! JSON is UTF-8 (RFC 8259, section 8.1), and Stripe's events nest about
//! six deep.

/// Deepest nesting of arrays and objects accepted: ten times a Stripe
/// event's, and half of what serde_json reads.
pub const MAX_DEPTH: usize = 64;

/// Why a body does not have the shape of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("it is not UTF-8 text")]
    NotUtf8,
    #[error("it is nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Found by the `event_envelope` fuzz target: serde does not check the
    /// `\u` escapes of what it skips, while the worker's parse refuses a
    /// lone surrogate and PostgreSQL's `jsonb` refuses `\u0000`.
    #[error("it has a \\u escape of no character (a lone surrogate, or \\u0000)")]
    BadEscape,
    /// Found by the `event_envelope` fuzz target: serde skips a number
    /// without reading its value, while the worker's parse (serde_json
    /// into a `Value`) refuses one beyond an `f64` (`1e400`).
    #[error("it has a number out of range (beyond a double)")]
    NumberOutOfRange,
}

/// Checks `body` is UTF-8, nests at most [`MAX_DEPTH`] deep, and holds no
/// escape or number the worker would refuse. Brackets inside
/// strings do not count; the JSON itself is checked by the parser after
/// this.
pub fn check(body: &[u8]) -> Result<(), ShapeError> {
    std::str::from_utf8(body).map_err(|_| ShapeError::NotUtf8)?;
    let mut depth = 0_usize;
    let mut at = 0_usize;
    while let Some(&byte) = body.get(at) {
        match byte {
            b'"' => {
                at = after_string(body, at + 1)?;
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ShapeError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                at = after_number(body, at)?;
                continue;
            }
            _ => {}
        }
        at += 1;
    }
    Ok(())
}

/// The index just past the string whose contents start at `at` (or the
/// end of `body` if it never closes). Strings are most of an event's bytes,
/// so they are crossed with `memchr` rather than byte by byte: this check
/// runs on every request ingest accepts.
fn after_string(body: &[u8], mut at: usize) -> Result<usize, ShapeError> {
    loop {
        let rest = body.get(at..).unwrap_or_default();
        match memchr::memchr2(b'"', b'\\', rest) {
            None => return Ok(body.len()),
            // An escape: the byte after the backslash is never the end.
            Some(offset) if rest[offset] == b'\\' => {
                at += offset + 2;
                if rest.get(offset + 1) == Some(&b'u') {
                    at = after_unicode_escape(body, at)?;
                }
            }
            Some(offset) => return Ok(at + offset + 1),
        }
    }
}

/// Past the hex digits of a `\u` escape whose digits start at `at`
/// (with its low surrogate when it is a high one). Refuses `\u0000` and a
/// surrogate without its other half; leaves bad hex digits to the parser.
fn after_unicode_escape(body: &[u8], at: usize) -> Result<usize, ShapeError> {
    let hex = |at: usize| {
        let digits = std::str::from_utf8(body.get(at..at + 4)?).ok()?;
        u16::from_str_radix(digits, 16).ok()
    };
    match hex(at) {
        Some(0) | Some(0xDC00..=0xDFFF) => Err(ShapeError::BadEscape),
        Some(0xD800..=0xDBFF) => match (body.get(at + 4..at + 6), hex(at + 6)) {
            (Some(br"\u"), Some(0xDC00..=0xDFFF)) => Ok(at + 10),
            _ => Err(ShapeError::BadEscape),
        },
        _ => Ok(at),
    }
}

/// The index just past the number that starts at `at`, or
/// [`ShapeError::NumberOutOfRange`] when serde_json (which the worker reads
/// events with, into a `Value`) finds it beyond an `f64`. A malformed
/// number is left to the parser. (What the worker stores is that `Value`
/// written out again, so PostgreSQL's `jsonb` never sees the text itself:
/// `1e-16384`, too many decimals for its `numeric`, is stored as `0.0`.)
fn after_number(body: &[u8], start: usize) -> Result<usize, ShapeError> {
    // The bounds of the digits from `at` on, moving `at` past them.
    let digits = |at: &mut usize| {
        let from = *at;
        while body.get(*at).is_some_and(u8::is_ascii_digit) {
            *at += 1;
        }
        (from, *at)
    };
    let mut at = start;
    if body.get(start) == Some(&b'-') {
        at += 1;
    }
    let (int_from, int_to) = digits(&mut at);
    if body.get(at) == Some(&b'.') {
        at += 1;
        digits(&mut at);
    }
    let mut exponent = 0_i64;
    if matches!(body.get(at), Some(b'e' | b'E')) {
        at += 1;
        let negative = body.get(at) == Some(&b'-');
        if matches!(body.get(at), Some(b'-' | b'+')) {
            at += 1;
        }
        let (from, to) = digits(&mut at);
        let magnitude = body[from..to].iter().fold(0_i64, |n, digit| {
            n.saturating_mul(10).saturating_add(i64::from(digit - b'0'))
        });
        exponent = if negative { -magnitude } else { magnitude };
    }
    // Below 10^308 a number cannot pass `f64::MAX`, so only one with more
    // than 308 digits before the point, the exponent applied, is read, and
    // as serde_json reads it (its threshold is not exactly the correctly
    // rounded one: it refuses `1.7976931348623158e308`, which rounds to
    // `f64::MAX`). One that serde_json refuses but Rust reads is out of
    // range; one neither reads is malformed, left to the parser.
    let int_digits = i64::try_from(int_to - int_from).unwrap_or(i64::MAX);
    if int_digits.saturating_add(exponent) > 308 {
        let number = &body[start..at];
        let well_formed = std::str::from_utf8(number).is_ok_and(|n| n.parse::<f64>().is_ok());
        if well_formed && serde_json::from_slice::<f64>(number).is_err() {
            return Err(ShapeError::NumberOutOfRange);
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn nesting_up_to_the_limit_passes_and_one_more_does_not() {
        assert_eq!(check(nested(MAX_DEPTH).as_bytes()), Ok(()));
        assert_eq!(
            check(nested(MAX_DEPTH + 1).as_bytes()),
            Err(ShapeError::TooDeep)
        );
        let objects = format!("{}1{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000));
        assert_eq!(check(objects.as_bytes()), Err(ShapeError::TooDeep));
    }

    #[test]
    fn brackets_in_strings_and_escaped_quotes_do_not_count() {
        let text = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert_eq!(check(text.as_bytes()), Ok(()));
        // An escaped backslash ends the escape: the quote after it closes.
        let text = format!(r#"{{"a":"\\",{}}}"#, nested(MAX_DEPTH + 1));
        assert_eq!(check(text.as_bytes()), Err(ShapeError::TooDeep));
        // A string left open at the end hides what follows it, as before.
        assert_eq!(
            check(format!(r#"{{"a":"{}"#, nested(100)).as_bytes()),
            Ok(())
        );
        assert_eq!(check(br#"{"a":"\"#), Ok(()));
    }

    #[test]
    fn escapes_of_no_character_are_refused() {
        for bad in [
            r#"{"a":"\udaAc"}"#,
            r#"{"\udc00":1}"#,
            r#"{"a":"\ud83d\u0041"}"#,
            r#"{"a":"\ud83d"}"#,
            r#"{"a":"x\u0000"}"#,
        ] {
            assert_eq!(check(bad.as_bytes()), Err(ShapeError::BadEscape), "{bad}");
        }
        for good in [r#"{"a":"\ud83d\ude00 \u00e9 \\u0000"}"#, r#"{"a":"\u"}"#] {
            assert_eq!(check(good.as_bytes()), Ok(()), "{good}");
        }
    }

    #[test]
    fn numbers_beyond_a_double_are_refused() {
        // serde_json refuses even `f64::MAX` written out in full (309
        // digits); `body_numbers` in the tests crate checks the rule
        // against serde_json and the worker's path into PostgreSQL.
        let max = f64::MAX.to_string();
        let over = format!("1{max}");
        for bad in [
            "1e400",
            "-1E+309",
            "1.8e308",
            "1.7976931348623158e308",
            "0.001e312",
            max.as_str(),
            over.as_str(),
        ] {
            let body = format!(r#"{{"a":[1,{bad}]}}"#);
            assert_eq!(
                check(body.as_bytes()),
                Err(ShapeError::NumberOutOfRange),
                "{bad}"
            );
        }
        let long_fraction = format!("1.{}", "0".repeat(20_000));
        for good in [
            "0",
            "-0.0",
            "1767225899",
            "1.7976931348623157e308",
            "1e-400",
            "1e-16384",
            "0e1073741823",
            "0e99999999999999999999999",
            "1e-99999999999999999999999",
            "123456789012345678901234567890",
            long_fraction.as_str(),
        ] {
            let body = format!(r#"{{"a":[{good},2]}}"#);
            assert_eq!(check(body.as_bytes()), Ok(()), "{good}");
        }
        // Digits in strings are not numbers.
        assert_eq!(check(br#"{"a":"1e400","b":"0e-99999"}"#), Ok(()));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_wherever_they_are() {
        for bad in [
            &b"{\"a\":\"\xff\"}"[..],
            b"{\"a\":\"\xc0\x80\"}",
            b"{\"a\":\"\xed\xa0\x80\"}",
            b"{\"a\":\"\xe2\x82\"}",
        ] {
            assert_eq!(check(bad), Err(ShapeError::NotUtf8), "{bad:?}");
        }
        assert_eq!(check("{\"a\":\"café ✓\"}".as_bytes()), Ok(()));
    }
}
