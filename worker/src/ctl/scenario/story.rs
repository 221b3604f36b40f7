//! Each scenario as a story: the events that happen to one person's
//! sessions, in the order they happen, and the order they are sent in
//! (Stripe does not promise order, and delivers some events more than once).

use super::super::test_event::TestEventKind;
use super::ScenarioName;

/// Codes a person can fix by submitting again (a document that expired, a
/// selfie that did not match, an ID number that did not match).
pub const RETRYABLE_CODES: [&str; 3] = [
    "document_expired",
    "selfie_face_mismatch",
    "id_number_mismatch",
];

/// A code that retrying cannot fix: Stripe does not verify minors.
pub const BLOCKING_CODE: &str = "under_supported_age";

/// One event of a story.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Which of the story's sessions (0 for the first one opened).
    pub session: usize,
    pub kind: TestEventKind,
    /// `last_error.code` of a `requires_input`.
    pub code: Option<&'static str>,
}

/// A story: what happens, and in which order it reaches ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Story {
    /// In the order they happen: each one's `created` is a second after the
    /// one before.
    pub steps: Vec<Step>,
    /// Indices into `steps`, in the order they are sent (an index twice is
    /// a duplicate delivery).
    pub sending: Vec<usize>,
}

impl Story {
    /// How many sessions the story opens.
    pub fn sessions(&self) -> usize {
        self.steps.iter().map(|s| s.session + 1).max().unwrap_or(0)
    }
}

/// The story `name` tells, for a worker whose attempt limit is
/// `max_attempts` (`IDV_MAX_FAILED_ATTEMPTS`).
pub fn story(name: ScenarioName, max_attempts: usize) -> Story {
    let steps = match name {
        ScenarioName::Happy | ScenarioName::OutOfOrder | ScenarioName::Duplicates => verified(0),
        ScenarioName::RetryThenVerified => {
            let mut steps = failed(0, RETRYABLE_CODES[0]);
            steps.extend(verified(1));
            steps
        }
        ScenarioName::AttemptsExhausted => (0..max_attempts)
            .flat_map(|session| failed(session, RETRYABLE_CODES[session % RETRYABLE_CODES.len()]))
            .collect(),
        ScenarioName::NotRetryable => failed(0, BLOCKING_CODE),
        ScenarioName::Redacted => {
            let mut steps = verified(0);
            steps.push(step(0, TestEventKind::Redacted, None));
            steps
        }
    };
    let in_order = 0..steps.len();
    let sending = match name {
        ScenarioName::OutOfOrder => in_order.rev().collect(),
        ScenarioName::Duplicates => in_order.flat_map(|i| [i, i]).collect(),
        _ => in_order.collect(),
    };
    Story { steps, sending }
}

fn step(session: usize, kind: TestEventKind, code: Option<&'static str>) -> Step {
    Step {
        session,
        kind,
        code,
    }
}

/// A session opened, submitted and verified.
fn verified(session: usize) -> Vec<Step> {
    vec![
        step(session, TestEventKind::Created, None),
        step(session, TestEventKind::Processing, None),
        step(session, TestEventKind::Verified, None),
    ]
}

/// A session opened, submitted and failed with `code`.
fn failed(session: usize, code: &'static str) -> Vec<Step> {
    vec![
        step(session, TestEventKind::Created, None),
        step(session, TestEventKind::Processing, None),
        step(session, TestEventKind::RequiresInput, Some(code)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use TestEventKind::{Created, Processing, Redacted, RequiresInput, Verified};

    fn kinds(story: &Story) -> Vec<TestEventKind> {
        story.sending.iter().map(|&i| story.steps[i].kind).collect()
    }

    #[test]
    fn stories_are_sent_as_their_scenarios_say() {
        assert_eq!(
            kinds(&story(ScenarioName::Happy, 3)),
            [Created, Processing, Verified]
        );
        assert_eq!(
            kinds(&story(ScenarioName::OutOfOrder, 3)),
            [Verified, Processing, Created]
        );
        assert_eq!(
            kinds(&story(ScenarioName::Duplicates, 3)),
            [Created, Created, Processing, Processing, Verified, Verified]
        );
        assert_eq!(
            kinds(&story(ScenarioName::Redacted, 3)),
            [Created, Processing, Verified, Redacted]
        );
        let retry = story(ScenarioName::RetryThenVerified, 3);
        assert_eq!(retry.sessions(), 2);
        assert_eq!(retry.steps[2].kind, RequiresInput);
        assert_eq!(retry.steps[5], step(1, Verified, None));
    }

    #[test]
    fn attempts_exhausted_fails_as_many_sessions_as_the_limit() {
        for max in [1, 3, 5] {
            let story = story(ScenarioName::AttemptsExhausted, max);
            assert_eq!(story.sessions(), max);
            let failures = story
                .steps
                .iter()
                .filter(|s| s.kind == RequiresInput)
                .count();
            assert_eq!(failures, max);
            assert!(story.steps.iter().all(|s| s.code != Some(BLOCKING_CODE)));
        }
        let blocked = story(ScenarioName::NotRetryable, 3);
        assert_eq!(blocked.steps[2].code, Some(BLOCKING_CODE));
    }
}
