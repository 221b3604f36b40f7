//! Whether a row is still true when its turn comes: the rows that exist
//! follow from the events, but what the person is told follows from what
//! is true now. Pure: the facts are read by the dispatcher.

use std::time::Duration;

use super::claim::WAIT_RECHECK;
use crate::domain::outbox::ActionKind;

use super::claim::Facts;

/// What to do with a claimed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Perform,
    /// Recorded, not performed: what it would say is no longer true.
    Supersede(&'static str),
    /// Not yet, for a reason that passes: judged again after the duration
    /// (a cancel whose session is not in `requires_input` at the moment,
    /// which Stripe cancels only there, is also due again when an event
    /// moves the session there).
    Wait(&'static str, Duration),
}

/// How long "you are verified" waits for the comparison of its session's
/// verified outputs, which may yet say otherwise.
pub const COMPARISON_WAIT: Duration = Duration::from_secs(10);

/// The verdict on a row of `kind` whose payload names `event_id` (a
/// failure's) and `outcome`, given `facts`.
pub fn judge(
    kind: ActionKind,
    event_id: Option<&str>,
    outcome: Option<&str>,
    facts: &Facts,
) -> Verdict {
    let subject = facts.subject_status.as_deref();
    match kind {
        // A subject at its limit that verified after all (verified wins) is
        // not reported to the platform as in manual review.
        ActionKind::OutcomeMessage | ActionKind::OutcomeWebhook
            if outcome == Some("manual_review") && subject != Some("manual_review") =>
        {
            Verdict::Supersede("the subject is not in manual review")
        }
        // The platform is told every other outcome, with the subject's
        // state as it stands when the message goes (it orders them by
        // occurred_at).
        ActionKind::OutcomeMessage | ActionKind::OutcomeWebhook => Verdict::Perform,
        ActionKind::NotifyUserVerified if subject == Some("manual_review") => {
            Verdict::Supersede("the subject is in manual review")
        }
        ActionKind::NotifyUserVerified if facts.comparison_pending => Verdict::Wait(
            "waiting for the comparison of the verified outputs",
            COMPARISON_WAIT,
        ),
        ActionKind::NotifyUserVerified | ActionKind::CompareVerifiedOutputs => Verdict::Perform,
        ActionKind::NotifyUserRetry => {
            if subject != Some("requires_input") {
                Verdict::Supersede("the subject no longer requires input")
            } else if facts.session_last_event.as_deref() != event_id {
                Verdict::Supersede("a later event of the session was applied")
            } else {
                Verdict::Perform
            }
        }
        ActionKind::NotifyUserAlternative if subject != Some("manual_review") => {
            Verdict::Supersede("the subject is not in manual review")
        }
        ActionKind::NotifyUserAlternative => Verdict::Perform,
        // The session moved to a person who is not at the limit.
        ActionKind::CancelStripeSession if !facts.at_limit => {
            Verdict::Supersede("the session's person is not at the limit")
        }
        ActionKind::CancelStripeSession => match facts.session_status.as_deref() {
            Some("verified") => Verdict::Supersede("the session is verified"),
            Some("canceled") => Verdict::Supersede("the session is canceled"),
            // A new session is `requires_input` at Stripe.
            Some("requires_input" | "created") => Verdict::Perform,
            _ => Verdict::Wait(
                "waiting for the session to come back to requires_input",
                WAIT_RECHECK,
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(subject: &str, session: &str, last: &str) -> Facts {
        Facts {
            subject_status: Some(subject.to_owned()),
            session_status: Some(session.to_owned()),
            session_last_event: Some(last.to_owned()),
            at_limit: subject == "manual_review",
            ..Facts::default()
        }
    }

    #[test]
    fn a_cancel_for_a_person_not_at_the_limit_is_superseded() {
        let mut moved = facts("requires_input", "requires_input", "evt_1");
        moved.at_limit = false;
        assert!(matches!(
            judge(ActionKind::CancelStripeSession, None, None, &moved),
            Verdict::Supersede(_)
        ));
    }

    #[test]
    fn you_are_verified_waits_for_the_comparison() {
        let mut verified = facts("verified", "verified", "evt_1");
        verified.comparison_pending = true;
        let judged = |facts: &Facts| judge(ActionKind::NotifyUserVerified, None, None, facts);
        assert!(matches!(judged(&verified), Verdict::Wait(..)));
        verified.comparison_pending = false;
        assert_eq!(judged(&verified), Verdict::Perform);
    }

    #[test]
    fn a_verified_person_is_never_told_to_retry() {
        let verdict = judge(
            ActionKind::NotifyUserRetry,
            Some("evt_1"),
            Some("requires_input"),
            &facts("verified", "verified", "evt_2"),
        );
        assert!(matches!(verdict, Verdict::Supersede(_)));
    }

    #[test]
    fn only_the_latest_failure_of_a_session_is_told() {
        let now = facts("requires_input", "requires_input", "evt_2");
        assert_eq!(
            judge(ActionKind::NotifyUserRetry, Some("evt_2"), None, &now),
            Verdict::Perform
        );
        assert!(matches!(
            judge(ActionKind::NotifyUserRetry, Some("evt_1"), None, &now),
            Verdict::Supersede(_)
        ));
    }

    #[test]
    fn the_alternative_is_offered_only_in_manual_review() {
        let review = facts("manual_review", "requires_input", "evt_3");
        let verified = facts("verified", "verified", "evt_4");
        assert_eq!(
            judge(ActionKind::NotifyUserAlternative, None, None, &review),
            Verdict::Perform
        );
        assert!(matches!(
            judge(ActionKind::NotifyUserAlternative, None, None, &verified),
            Verdict::Supersede(_)
        ));
    }

    #[test]
    fn a_cancel_waits_for_requires_input_and_a_verified_session_wins() {
        let cancel = |session| {
            judge(
                ActionKind::CancelStripeSession,
                None,
                None,
                &facts("manual_review", session, "e"),
            )
        };
        assert_eq!(cancel("requires_input"), Verdict::Perform);
        assert_eq!(cancel("created"), Verdict::Perform);
        assert!(matches!(cancel("processing"), Verdict::Wait(..)));
        assert!(matches!(cancel("verified"), Verdict::Supersede(_)));
        assert!(matches!(cancel("canceled"), Verdict::Supersede(_)));
    }

    #[test]
    fn the_platform_is_told_every_outcome_but_a_review_that_verified_after_all() {
        let verified = facts("verified", "verified", "evt_4");
        let review = facts("manual_review", "requires_input", "evt_3");
        for kind in [ActionKind::OutcomeMessage, ActionKind::OutcomeWebhook] {
            for outcome in ["requires_input", "verified", "canceled", "redacted"] {
                let verdict = judge(kind, Some("evt_1"), Some(outcome), &verified);
                assert_eq!(verdict, Verdict::Perform, "{outcome}");
            }
            assert!(matches!(
                judge(kind, None, Some("manual_review"), &verified),
                Verdict::Supersede(_)
            ));
            assert_eq!(
                judge(kind, None, Some("manual_review"), &review),
                Verdict::Perform
            );
        }
    }
}
