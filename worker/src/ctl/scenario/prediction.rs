//! What each story should leave in the record, written from the rules as
//! DESIGN.md states them (verified wins; failures count per submission; a
//! code retrying cannot fix, or the limit reached, sends the person to
//! manual review; order and duplicates change nothing; a redaction erases,
//! it does not undo), and deliberately not by calling the worker's code:
//! a scenario is a check of that code, so it must not borrow its answers.

use serde::Serialize;

use super::ScenarioName;
use crate::store::read::SubjectView;

/// The outcome of a story: the subject's status and counted failures, and
/// each session's final status and whether it was redacted (sorted, as the
/// sessions' ids are random).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub status: String,
    pub failed_attempts: i32,
    pub sessions: Vec<SessionOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SessionOutcome {
    pub status: String,
    pub redacted: bool,
}

fn sessions(list: &[(&str, bool)]) -> Vec<SessionOutcome> {
    let mut sessions: Vec<_> = list
        .iter()
        .map(|&(status, redacted)| SessionOutcome {
            status: status.to_owned(),
            redacted,
        })
        .collect();
    sessions.sort();
    sessions
}

fn outcome(status: &str, failed_attempts: i32, list: &[(&str, bool)]) -> Outcome {
    Outcome {
        status: status.to_owned(),
        failed_attempts,
        sessions: sessions(list),
    }
}

/// The table: what `name` predicts with an attempt limit of `max_attempts`.
pub fn predict(name: ScenarioName, max_attempts: i32) -> Outcome {
    const VERIFIED: (&str, bool) = ("verified", false);
    const FAILED: (&str, bool) = ("requires_input", false);
    match name {
        // Created, processing, verified: whatever order, however often.
        ScenarioName::Happy | ScenarioName::OutOfOrder | ScenarioName::Duplicates => {
            outcome("verified", 0, &[VERIFIED])
        }
        // One fixable failure counted, then a second session verified.
        ScenarioName::RetryThenVerified => outcome("verified", 1, &[FAILED, VERIFIED]),
        // One failed session per allowed attempt: the limit is reached.
        ScenarioName::AttemptsExhausted => {
            let count = usize::try_from(max_attempts).unwrap_or(0);
            outcome("manual_review", max_attempts, &vec![FAILED; count])
        }
        // One failure that retrying cannot fix is enough.
        ScenarioName::NotRetryable => outcome("manual_review", 1, &[FAILED]),
        // Verified stays verified; the session's personal data goes.
        ScenarioName::Redacted => outcome("verified", 0, &[("verified", true)]),
    }
}

/// What the record says, in the same terms.
pub fn found(subject: &SubjectView) -> Outcome {
    let list: Vec<(&str, bool)> = subject
        .sessions
        .iter()
        .map(|s| (s.status.as_str(), s.redacted))
        .collect();
    outcome(&subject.status, subject.failed_attempts, &list)
}

/// `verified, 0 failed attempts`.
pub fn summary(outcome: &Outcome) -> String {
    let attempts = if outcome.failed_attempts == 1 {
        "1 failed attempt".to_owned()
    } else {
        format!("{} failed attempts", outcome.failed_attempts)
    };
    format!("{}, {attempts}", outcome.status)
}

/// `requires_input, verified (redacted)`.
fn sessions_text(outcome: &Outcome) -> String {
    let list: Vec<String> = outcome
        .sessions
        .iter()
        .map(|s| {
            if s.redacted {
                format!("{} (redacted)", s.status)
            } else {
                s.status.clone()
            }
        })
        .collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

/// The verdict line: `Ok` when `found` is what was `expected`.
pub fn verdict(
    expected: &Outcome,
    found: Option<&Outcome>,
    subject: &str,
) -> Result<String, String> {
    let Some(found) = found else {
        return Err(format!(
            "NOT as the rules predict: expected {}, found no subject {subject:?} (the worker \
             applied every event, so it filed them under another key: does its \
             IDV_SUBJECT_KEY put client_reference_id first?)",
            summary(expected)
        ));
    };
    if found == expected {
        return Ok(format!("as the rules predict: {}", summary(found)));
    }
    let mut line = format!(
        "NOT as the rules predict: expected {}, found {}",
        summary(expected),
        summary(found)
    );
    if found.sessions != expected.sessions {
        line.push_str(&format!(
            "; sessions expected {}, found {}",
            sessions_text(expected),
            sessions_text(found)
        ));
    }
    Err(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reads_as_the_rules() {
        assert_eq!(
            summary(&predict(ScenarioName::Happy, 3)),
            "verified, 0 failed attempts"
        );
        assert_eq!(
            summary(&predict(ScenarioName::RetryThenVerified, 3)),
            "verified, 1 failed attempt"
        );
        assert_eq!(
            summary(&predict(ScenarioName::AttemptsExhausted, 5)),
            "manual_review, 5 failed attempts"
        );
        assert_eq!(
            predict(ScenarioName::AttemptsExhausted, 5).sessions.len(),
            5
        );
        assert_eq!(
            summary(&predict(ScenarioName::NotRetryable, 3)),
            "manual_review, 1 failed attempt"
        );
        assert!(predict(ScenarioName::Redacted, 3).sessions[0].redacted);
    }

    #[test]
    fn a_difference_is_named() {
        let expected = predict(ScenarioName::RetryThenVerified, 3);
        assert_eq!(
            verdict(&expected, Some(&expected), "k").unwrap(),
            "as the rules predict: verified, 1 failed attempt"
        );
        let found = outcome("manual_review", 3, &[("requires_input", false)]);
        let line = verdict(&expected, Some(&found), "k").unwrap_err();
        assert_eq!(
            line,
            "NOT as the rules predict: expected verified, 1 failed attempt, found manual_review, \
             3 failed attempts; sessions expected requires_input, verified, found requires_input"
        );
        let missing = verdict(&expected, None, "k").unwrap_err();
        assert!(missing.contains("IDV_SUBJECT_KEY"), "{missing}");
    }
}
