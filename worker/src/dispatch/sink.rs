//! One trait for every action, so a new sink is one file: it performs a
//! claimed row and says what became of it; the dispatcher marks the row.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::claim::{Claimed, Facts};
use super::message::OutcomeMessage;
use crate::domain::outbox::ActionKind;

/// A claimed row with what is true of it now.
#[derive(Debug)]
pub struct Job {
    pub kind: ActionKind,
    pub row: Claimed,
    pub facts: Facts,
    /// The outcome message the row stands for (the platform's sinks send
    /// it; the others may read it).
    pub message: OutcomeMessage,
}

/// What became of one performance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Performed {
    /// Done; the other side has it.
    Done,
    /// Nothing to do, through nobody's fault (no e-mail address, nothing
    /// expected to compare with): recorded and counted, not failed.
    Skipped(String),
    /// Not now: tried again after a backoff (at least `after`, when the
    /// other side said so), until the attempts run out.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Refused for good (a 4xx other than 408 and 429): `failed` at once,
    /// for an operator to fix and re-drive with `idvctl outbox retry`.
    Failed(String),
    /// Not possible in the other side's present state (a cancel while
    /// Stripe has the session `processing`): waits like a judged wait, and
    /// is no attempt.
    Wait(String),
}

/// An action the dispatcher performs, for rows of one kind. `perform` must
/// not log personal data or secrets, and should return within the HTTP
/// timeout; the dispatcher cuts it off at half the lease regardless.
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// The kinds of row it performs.
    fn kinds(&self) -> &'static [ActionKind];
    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed>;
}

/// The usual reading of an HTTP answer: 2xx done; 408, 429 and 5xx
/// retried (after `Retry-After` when given); any other 4xx failed for
/// good.
pub fn from_http_status(status: u16, retry_after: Option<Duration>, what: &str) -> Performed {
    match status {
        200..=299 => Performed::Done,
        408 | 429 => Performed::Retry {
            error: format!("{what} answered {status}"),
            after: retry_after,
        },
        400..=499 => Performed::Failed(format!("{what} refused it: HTTP {status}")),
        _ => Performed::Retry {
            error: format!("{what} answered {status}"),
            after: retry_after,
        },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is treated as absent).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let raw = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    raw.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// What a failed request says (never the body, which may hold personal
/// data or echo a secret).
pub fn request_error(what: &str, error: &reqwest::Error) -> Performed {
    let cause = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    Performed::Retry {
        error: format!("{what}: {cause}"),
        after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_are_read_as_the_issue_says() {
        assert_eq!(from_http_status(204, None, "x"), Performed::Done);
        assert!(matches!(
            from_http_status(400, None, "x"),
            Performed::Failed(_)
        ));
        assert!(matches!(
            from_http_status(410, None, "x"),
            Performed::Failed(_)
        ));
        for status in [408, 429, 500, 503, 302] {
            assert!(
                matches!(from_http_status(status, None, "x"), Performed::Retry { .. }),
                "{status}"
            );
        }
        let after = Some(Duration::from_secs(7));
        assert_eq!(
            from_http_status(429, after, "x"),
            Performed::Retry {
                error: "x answered 429".to_owned(),
                after
            }
        );
    }
}
