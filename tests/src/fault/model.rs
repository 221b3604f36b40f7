//! The rules, written again from DESIGN.md and the README alone (never
//! from the worker's code), as a reference to audit the record against:
//! given every event of a subject's sessions, in any order, what the
//! subject, its sessions and its platform messages must be.
//!
//! - A session only moves forward, by (`created`, rank, event id): rank
//!   `created` (and `requires_input` without an error) < `processing` <
//!   `requires_input` with an error < `verified` = `canceled`. A `redacted`
//!   event moves nothing; it marks the session redacted.
//! - A `requires_input` with a `last_error` is one failed attempt per event
//!   id, except `abandoned`; `consent_declined`, `under_supported_age` and
//!   `country_not_supported` block (manual review at once); any other code,
//!   unknown ones too, is retryable. `failed_attempts` is capped at the limit.
//! - The subject: `verified` if any session is (the first to verify
//!   decided it), else `manual_review` at the limit or when blocked, else
//!   `canceled` when every session is, else what its newest open session
//!   says (`pending`, `processing`, `requires_input`).
//! - Platform messages (one outbox row per kind and key): per `verified`,
//!   `canceled`, `redacted` event and per failure event of a session, and
//!   one `manual_review` per subject at its limit.

use std::collections::{BTreeMap, BTreeSet};

use super::stories::{Story, StoryEvent};

/// What the README's policy table says a code does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Retryable,
    Blocking,
    NotAnAttempt,
}

fn class(code: &str) -> Class {
    match code {
        "abandoned" => Class::NotAnAttempt,
        "consent_declined" | "under_supported_age" | "country_not_supported" => Class::Blocking,
        _ => Class::Retryable,
    }
}

/// A session as the record must hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedSession {
    pub status: String,
    pub redacted: bool,
    /// Distinct events of the session (the inbox's rows).
    pub events: i64,
    /// Of which counted as failed attempts.
    pub counted: i64,
}

/// A subject as the record must hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedSubject {
    pub status: String,
    pub failed_attempts: i32,
    pub blocked: bool,
    pub last_error_code: Option<String>,
    pub decided_by_session: Option<String>,
    pub sessions: BTreeMap<String, ExpectedSession>,
    /// Idempotency keys of the platform's messages (outcome_message and
    /// outcome_webhook rows), without the kind.
    pub messages: BTreeSet<String>,
}

/// The order of a session's lifecycle events.
type OrderKey = (i64, u8, String);

fn rank(event: &StoryEvent) -> u8 {
    match (event.kind, event.code) {
        ("processing", _) => 1,
        ("requires_input", Some(_)) => 2,
        ("verified" | "canceled", _) => 3,
        _ => 0,
    }
}

/// The newest lifecycle event of each session, by id.
fn newest_by_session(story: &Story) -> BTreeMap<&str, (&StoryEvent, OrderKey)> {
    let mut newest: BTreeMap<&str, (&StoryEvent, OrderKey)> = BTreeMap::new();
    for e in story.events.iter().filter(|e| e.kind != "redacted") {
        let key = (e.created, rank(e), e.id.clone());
        let entry = newest.entry(e.session.as_str()).or_insert((e, key.clone()));
        if key > entry.1 {
            *entry = (e, key);
        }
    }
    newest
}

/// What the record must say of `story`'s subject with a limit of `max`.
pub fn expected(story: &Story, max: i32) -> ExpectedSubject {
    let newest = newest_by_session(story);
    let failures: Vec<&StoryEvent> = story
        .events
        .iter()
        .filter(|e| e.kind == "requires_input")
        .filter(|e| e.code.is_some_and(|c| class(c) != Class::NotAnAttempt))
        .collect();
    let count = i32::try_from(failures.len()).unwrap_or(i32::MAX);
    let blocked = failures
        .iter()
        .any(|e| e.code.is_some_and(|c| class(c) == Class::Blocking));
    let at_limit = blocked || count >= max;
    let last_error_code = failures
        .iter()
        .max_by_key(|e| (e.created, e.id.clone()))
        .and_then(|e| e.code.map(str::to_owned));

    let newest_of = |filter: &dyn Fn(&StoryEvent) -> bool| {
        newest
            .iter()
            .filter(|(_, (e, _))| filter(e))
            .max_by(|a, b| (&a.1.1, a.0).cmp(&(&b.1.1, b.0)))
            .map(|(id, (e, _))| ((*id).to_owned(), *e))
    };
    let first_verified = newest
        .iter()
        .filter(|(_, (e, _))| e.kind == "verified")
        .min_by(|a, b| (&a.1.1, a.0).cmp(&(&b.1.1, b.0)))
        .map(|(id, _)| (*id).to_owned());
    let (status, decided_by_session) = if let Some(first) = first_verified {
        ("verified", Some(first))
    } else if at_limit {
        ("manual_review", newest_of(&|_| true).map(|(id, _)| id))
    } else if let Some((id, current)) = newest_of(&|e| e.kind != "canceled") {
        let status = match (current.kind, current.code) {
            ("processing", _) => "processing",
            ("requires_input", Some(_)) => "requires_input",
            _ => "pending",
        };
        (status, Some(id))
    } else {
        match newest_of(&|_| true) {
            Some((id, _)) => ("canceled", Some(id)),
            None => ("pending", None),
        }
    };

    let mut sessions = BTreeMap::new();
    for e in &story.events {
        let session = sessions
            .entry(e.session.clone())
            .or_insert_with(|| ExpectedSession {
                status: newest
                    .get(e.session.as_str())
                    .map_or("created", |(n, _)| match n.kind {
                        "created" => "created",
                        other => other,
                    })
                    .to_owned(),
                redacted: false,
                events: 0,
                counted: 0,
            });
        session.events += 1;
        session.redacted |= e.kind == "redacted";
        if failures.iter().any(|f| f.id == e.id) {
            session.counted += 1;
        }
    }

    let mut messages: BTreeSet<String> = story
        .events
        .iter()
        .filter_map(|e| match e.kind {
            "verified" | "canceled" | "redacted" => Some(format!("{}:{}", e.session, e.kind)),
            "requires_input" if e.code.is_some() => {
                Some(format!("{}:requires_input:{}", e.session, e.id))
            }
            _ => None,
        })
        .collect();
    if at_limit {
        messages.insert(format!("{}:manual_review", story.subject));
    }
    ExpectedSubject {
        status: status.to_owned(),
        failed_attempts: count.min(max),
        blocked,
        last_error_code,
        decided_by_session,
        sessions,
        messages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::stories::{Plot, story};
    use rand::SeedableRng;

    fn of(plot: Plot) -> (Story, ExpectedSubject) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let n = Plot::ALL.iter().position(|p| *p == plot).unwrap_or(0);
        let story = story(&mut rng, "m", n, 1_700_000_000);
        let expected = expected(&story, 3);
        (story, expected)
    }

    #[test]
    fn the_model_follows_the_readme_on_each_plot() {
        let cases = [
            (Plot::Verified, "verified", 0, false),
            (Plot::FailedThenVerified, "verified", 1, false),
            (Plot::LimitReached, "manual_review", 3, false),
            (Plot::LimitPassed, "manual_review", 3, false),
            (Plot::Blocked, "manual_review", 1, true),
            (Plot::FailedThenCanceled, "canceled", 1, false),
            (Plot::CanceledThenVerified, "verified", 0, false),
            (Plot::VerifiedThenRedacted, "verified", 0, false),
            (Plot::FailedThenRedacted, "requires_input", 1, false),
            (Plot::Abandoned, "requires_input", 0, false),
            (Plot::UnknownCodes, "requires_input", 2, false),
            (Plot::LimitThenVerified, "verified", 3, false),
            (Plot::StillProcessing, "processing", 0, false),
            (Plot::FailedThenProcessing, "processing", 1, false),
        ];
        for (plot, status, failed, blocked) in cases {
            let (_, e) = of(plot);
            assert_eq!(
                (e.status.as_str(), e.failed_attempts, e.blocked),
                (status, failed, blocked),
                "{plot:?}"
            );
        }
    }

    #[test]
    fn limit_rows_exist_at_the_limit_even_when_verified_after() {
        let (story, e) = of(Plot::LimitThenVerified);
        assert!(
            e.messages
                .contains(&format!("{}:manual_review", story.subject))
        );
        let (_, e) = of(Plot::Abandoned);
        assert!(!e.messages.iter().any(|m| m.ends_with(":manual_review")));
    }

    #[test]
    fn redaction_marks_the_session_and_moves_nothing() {
        let (_, e) = of(Plot::VerifiedThenRedacted);
        let session = e.sessions.values().next().cloned();
        assert_eq!(
            session.map(|s| (s.status, s.redacted)),
            Some(("verified".to_owned(), true))
        );
    }
}
