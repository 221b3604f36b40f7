//! The families of the hostile corpus, how many of each, and what counts
//! as refused for each.

use std::time::Duration;

/// One kind of defect. Each request of a family carries an event id
/// `evt_hostile_{code}_{n}` where it carries an id at all, so anything
/// published can be traced to its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// A current timestamp with a `v1` nobody computed with the secret.
    ForgedSignature,
    /// Correctly computed, with a secret that is not the endpoint's.
    WrongSecret,
    /// A correct signature of other bytes than the body sent.
    MismatchedBody,
    /// Correctly signed, with a timestamp older than the tolerance.
    StaleTimestamp,
    /// Correctly signed, with a timestamp further ahead than the tolerance.
    FutureTimestamp,
    /// `Stripe-Signature` garbage: missing, empty, wrong separators, no `v1`.
    MalformedHeader,
    /// Heads past actix's 128 KiB buffer or 96 headers, and huge values.
    HugeHeader,
    /// Hundreds of `v1=` entries, none of which matches.
    ManyV1,
    /// Bytes outside visible ASCII in `Stripe-Signature`.
    NonAsciiHeader,
    /// `Content-Length` larger than what is sent, then the write side closed.
    TruncatedBody,
    /// Over `INGEST_MAX_BODY_BYTES`, declared by `Content-Length`.
    OversizedDeclared,
    /// Over `INGEST_MAX_BODY_BYTES`, chunked (no length to refuse it by).
    OversizedChunked,
    /// Chunked bodies with broken framing, or smuggling both lengths.
    ChunkedBody,
    /// Correctly signed bodies that are not UTF-8.
    InvalidUtf8,
    /// Correctly signed events nested deeper than any Stripe event.
    NestedJson,
    /// Correctly signed events holding, where the envelope does not read,
    /// a value the worker cannot read or store: an escape of no character
    /// or a number beyond a double.
    UnreadableValue,
    /// Correctly signed JSON of nearly the body limit that is no event.
    HugeJson,
    /// Correctly signed, `object` other than `"event"`.
    WrongObject,
    /// Correctly signed, `id` missing or not an `evt_` id.
    MissingId,
    /// Correctly signed, `type` missing or not a routing key.
    WrongType,
    /// Correctly signed, livemode other than `EXPECTED_LIVEMODE=false`.
    WrongLivemode,
    /// The head dribbled a byte at a time (slowloris).
    SlowHead,
    /// A signed head, then the body dribbled a byte at a time.
    SlowBody,
}

/// What counts as refused for one family.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// The right answers.
    pub statuses: &'static [u16],
    /// When ingest answers (a JSON `error`), it holds one of these; empty:
    /// the answer may come from actix's HTTP layer, which says no reason.
    pub reasons: &'static [&'static str],
    /// A close by the server without an answer also counts as refused.
    pub closed_ok: bool,
    /// How long the client waits for an answer or a close.
    pub deadline: Duration,
}

const NO_MATCH: &[&str] = &["no signature matches the payload"];
const NOT_AN_EVENT: &[&str] = &["body is not a Stripe event"];
const QUICK: Duration = Duration::from_secs(30);

impl Family {
    pub const ALL: [Family; 23] = [
        Self::ForgedSignature,
        Self::WrongSecret,
        Self::MismatchedBody,
        Self::StaleTimestamp,
        Self::FutureTimestamp,
        Self::MalformedHeader,
        Self::HugeHeader,
        Self::ManyV1,
        Self::NonAsciiHeader,
        Self::TruncatedBody,
        Self::OversizedDeclared,
        Self::OversizedChunked,
        Self::ChunkedBody,
        Self::InvalidUtf8,
        Self::NestedJson,
        Self::UnreadableValue,
        Self::HugeJson,
        Self::WrongObject,
        Self::MissingId,
        Self::WrongType,
        Self::WrongLivemode,
        Self::SlowHead,
        Self::SlowBody,
    ];

    /// The short name in tables and in the ids of the family's events
    /// (ASCII letters and `_` only: it is part of an `evt_` id).
    pub fn code(self) -> &'static str {
        match self {
            Self::ForgedSignature => "forged_signature",
            Self::WrongSecret => "wrong_secret",
            Self::MismatchedBody => "mismatched_body",
            Self::StaleTimestamp => "stale_timestamp",
            Self::FutureTimestamp => "future_timestamp",
            Self::MalformedHeader => "malformed_header",
            Self::HugeHeader => "huge_header",
            Self::ManyV1 => "many_v",
            Self::NonAsciiHeader => "non_ascii_header",
            Self::TruncatedBody => "truncated_body",
            Self::OversizedDeclared => "oversized_declared",
            Self::OversizedChunked => "oversized_chunked",
            Self::ChunkedBody => "chunked_body",
            Self::InvalidUtf8 => "invalid_utf",
            Self::NestedJson => "nested_json",
            Self::UnreadableValue => "unreadable_value",
            Self::HugeJson => "huge_json",
            Self::WrongObject => "wrong_object",
            Self::MissingId => "missing_id",
            Self::WrongType => "wrong_type",
            Self::WrongLivemode => "wrong_livemode",
            Self::SlowHead => "slow_head",
            Self::SlowBody => "slow_body",
        }
    }

    /// Requests of this family in the full corpus (11,100 in all). The
    /// costly ones (a mebibyte each, or held for a timeout) are fewer.
    pub fn full_count(self) -> usize {
        match self {
            Self::ForgedSignature | Self::WrongSecret | Self::MismatchedBody => 1_000,
            Self::StaleTimestamp | Self::FutureTimestamp | Self::MalformedHeader => 800,
            Self::WrongObject | Self::MissingId | Self::WrongType | Self::WrongLivemode => 600,
            Self::TruncatedBody | Self::ChunkedBody | Self::InvalidUtf8 => 500,
            Self::ManyV1
            | Self::NonAsciiHeader
            | Self::OversizedDeclared
            | Self::NestedJson
            | Self::UnreadableValue => 300,
            Self::HugeHeader => 100,
            Self::SlowHead | Self::SlowBody => 60,
            Self::OversizedChunked | Self::HugeJson => 40,
        }
    }

    /// The event id a request of this family carries, where it has one.
    pub fn event_id(self, n: usize) -> String {
        format!("evt_hostile_{}_{n}", self.code())
    }

    /// Whether the family holds its connection open for a server timeout.
    pub fn is_slow(self) -> bool {
        matches!(self, Self::SlowHead | Self::SlowBody)
    }

    /// What counts as refused. `slow`: the head and body timeouts ingest
    /// runs with, which bound how long a slow sender is waited for.
    pub fn expect(self, slow: Duration) -> Expect {
        let answered = |statuses, reasons| Expect {
            statuses,
            reasons,
            closed_ok: false,
            deadline: QUICK,
        };
        match self {
            Self::ForgedSignature | Self::WrongSecret | Self::MismatchedBody | Self::ManyV1 => {
                answered(&[400], NO_MATCH)
            }
            Self::StaleTimestamp | Self::FutureTimestamp => {
                answered(&[400], &["timestamp outside the tolerance"])
            }
            Self::MalformedHeader => answered(
                &[400],
                &[
                    "malformed Stripe-Signature header",
                    "no v1 signature",
                    "missing Stripe-Signature header",
                ],
            ),
            Self::NonAsciiHeader => answered(&[400], &["malformed Stripe-Signature header"]),
            // 431 from actix past its head buffer or header count; a
            // huge value it takes is ingest's 400.
            Self::HugeHeader => Expect {
                statuses: &[400, 431],
                reasons: &[
                    "malformed Stripe-Signature header",
                    "no signature matches the payload",
                ],
                closed_ok: true,
                deadline: QUICK,
            },
            Self::TruncatedBody => Expect {
                statuses: &[400],
                reasons: &["could not read the request body"],
                closed_ok: true,
                deadline: QUICK,
            },
            Self::OversizedDeclared | Self::OversizedChunked => Expect {
                statuses: &[413],
                reasons: &["body is larger than"],
                closed_ok: true,
                deadline: QUICK,
            },
            // Framing errors are actix's 400 (no reason); a well-framed
            // forged body is ingest's.
            Self::ChunkedBody => Expect {
                statuses: &[400],
                reasons: &[],
                closed_ok: true,
                deadline: QUICK,
            },
            Self::InvalidUtf8 | Self::NestedJson | Self::UnreadableValue => {
                answered(&[400], NOT_AN_EVENT)
            }
            Self::HugeJson => answered(
                &[400],
                &["body is not a Stripe event", "event `type` must be"],
            ),
            Self::WrongObject => answered(
                &[400],
                &[
                    "`object` is not \"event\"",
                    "invalid type",
                    "duplicate field `object`",
                ],
            ),
            Self::MissingId => answered(
                &[400],
                &[
                    "missing field `id`",
                    "event `id` is invalid",
                    "invalid type",
                    "duplicate field `id`",
                ],
            ),
            Self::WrongType => answered(
                &[400],
                &[
                    "missing field `type`",
                    "event `type` must be",
                    "invalid type",
                ],
            ),
            Self::WrongLivemode => answered(&[400], &["livemode", "expected a boolean"]),
            Self::SlowHead | Self::SlowBody => Expect {
                statuses: &[408],
                reasons: &[],
                closed_ok: true,
                deadline: slow + Duration::from_secs(15),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_corpus_has_at_least_ten_thousand_requests_and_valid_ids() {
        let total: usize = Family::ALL.iter().map(|f| f.full_count()).sum();
        assert!(total >= 10_000, "{total}");
        for family in Family::ALL {
            assert!(shared::event::EventId::parse(&family.event_id(12)).is_ok());
        }
    }
}
