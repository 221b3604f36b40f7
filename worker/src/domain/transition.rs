//! The state machine, as pure functions: which event is newer, and what a
//! subject's status is given its sessions. Everything here is independent of
//! arrival order by construction: a session keeps its greatest event by
//! [`OrderKey`], and a subject's status is derived from its sessions and
//! commutative counters, never from the order they were updated in.

use std::fmt;

/// A session's lifecycle stage, as recorded in `sessions.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Created,
    Processing,
    RequiresInput,
    Verified,
    Canceled,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Self::Created,
        Self::Processing,
        Self::RequiresInput,
        Self::Verified,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Processing => "processing",
            Self::RequiresInput => "requires_input",
            Self::Verified => "verified",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|stage| stage.as_str() == raw)
    }

    /// Tie-break within one second of `created`: a check fails within a
    /// second of its submission far more often than a person resubmits
    /// within one, so `created` < `processing` < `requires_input` with an
    /// error < `verified` = `canceled`. A `requires_input` without an error
    /// is the session's initial state and ranks with `created`.
    pub fn rank(self, has_error: bool) -> i16 {
        match self {
            Self::Created => 0,
            Self::RequiresInput if !has_error => 0,
            Self::Processing => 1,
            Self::RequiresInput => 2,
            Self::Verified | Self::Canceled => 3,
        }
    }

    /// Stripe will send nothing that moves the session on from here.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Verified | Self::Canceled)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Total order of a session's events: `created`, then the lifecycle rank,
/// then the event id (so that even equal-rank events in one second agree).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderKey {
    pub created: i64,
    pub rank: i16,
    pub event_id: String,
}

/// `subjects.status`: where the person stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectStatus {
    Pending,
    Processing,
    RequiresInput,
    Verified,
    ManualReview,
    Canceled,
}

impl SubjectStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::RequiresInput => "requires_input",
            Self::Verified => "verified",
            Self::ManualReview => "manual_review",
            Self::Canceled => "canceled",
        }
    }
}

impl fmt::Display for SubjectStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the subject derivation needs to know of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub id: String,
    pub stage: Stage,
    /// `last_error` was set by the last applied event.
    pub has_error: bool,
    /// The last applied event; `None` if only a `redacted` event was seen.
    pub last: Option<OrderKey>,
}

/// The subject's commutative counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptFacts {
    /// Distinct failed submissions, capped at `max`.
    pub failed_attempts: i32,
    /// A code that retrying cannot fix was seen.
    pub blocked: bool,
    /// `IDV_MAX_FAILED_ATTEMPTS`.
    pub max: i32,
}

/// The subject's status and the session that decided it.
pub fn derive_subject(
    sessions: &[SessionSummary],
    facts: AttemptFacts,
) -> (SubjectStatus, Option<String>) {
    let applied = || sessions.iter().filter(|s| s.last.is_some());
    let most_recent = |it: &mut dyn Iterator<Item = &SessionSummary>| {
        it.max_by(|a, b| (&a.last, &a.id).cmp(&(&b.last, &b.id)))
            .map(|s| s.id.clone())
    };
    // Verified wins over everything, even a reached limit; the first
    // session to verify decided it.
    if let Some(first) = applied()
        .filter(|s| s.stage == Stage::Verified)
        .min_by(|a, b| (&a.last, &a.id).cmp(&(&b.last, &b.id)))
    {
        return (SubjectStatus::Verified, Some(first.id.clone()));
    }
    if facts.blocked || facts.failed_attempts >= facts.max {
        return (SubjectStatus::ManualReview, most_recent(&mut applied()));
    }
    let open: Vec<_> = applied().filter(|s| s.stage != Stage::Canceled).collect();
    let Some(current) = open
        .iter()
        .max_by(|a, b| (&a.last, &a.id).cmp(&(&b.last, &b.id)))
    else {
        let decided = most_recent(&mut applied());
        let status = if decided.is_some() {
            SubjectStatus::Canceled
        } else {
            SubjectStatus::Pending
        };
        return (status, decided);
    };
    let status = match current.stage {
        Stage::Created => SubjectStatus::Pending,
        Stage::RequiresInput if !current.has_error => SubjectStatus::Pending,
        Stage::RequiresInput => SubjectStatus::RequiresInput,
        Stage::Processing => SubjectStatus::Processing,
        // Filtered out above; kept total for the compiler.
        Stage::Verified => SubjectStatus::Verified,
        Stage::Canceled => SubjectStatus::Canceled,
    };
    (status, Some(current.id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, stage: Stage, has_error: bool, created: i64) -> SessionSummary {
        SessionSummary {
            id: id.to_owned(),
            stage,
            has_error,
            last: Some(OrderKey {
                created,
                rank: stage.rank(has_error),
                event_id: format!("evt_{id}"),
            }),
        }
    }

    const FRESH: AttemptFacts = AttemptFacts {
        failed_attempts: 0,
        blocked: false,
        max: 3,
    };

    #[test]
    fn ranks_break_ties_within_a_second() {
        let key = |stage: Stage, err| OrderKey {
            created: 10,
            rank: stage.rank(err),
            event_id: "evt_a".into(),
        };
        assert!(key(Stage::Processing, false) < key(Stage::RequiresInput, true));
        assert!(key(Stage::RequiresInput, true) < key(Stage::Verified, false));
        assert!(key(Stage::Created, false) < key(Stage::Processing, false));
        assert_eq!(Stage::Verified.rank(false), Stage::Canceled.rank(false));
    }

    #[test]
    fn verified_wins_even_after_the_limit() {
        let sessions = [
            session("vs_a", Stage::RequiresInput, true, 5),
            session("vs_b", Stage::Verified, false, 1),
        ];
        let facts = AttemptFacts {
            failed_attempts: 3,
            blocked: true,
            max: 3,
        };
        assert_eq!(
            derive_subject(&sessions, facts),
            (SubjectStatus::Verified, Some("vs_b".into()))
        );
    }

    #[test]
    fn limit_and_block_mean_manual_review() {
        let sessions = [session("vs_a", Stage::RequiresInput, true, 5)];
        let at_limit = AttemptFacts {
            failed_attempts: 3,
            ..FRESH
        };
        assert_eq!(
            derive_subject(&sessions, at_limit).0,
            SubjectStatus::ManualReview
        );
        let blocked = AttemptFacts {
            blocked: true,
            ..FRESH
        };
        assert_eq!(
            derive_subject(&sessions, blocked).0,
            SubjectStatus::ManualReview
        );
        let below = AttemptFacts {
            failed_attempts: 2,
            ..FRESH
        };
        assert_eq!(
            derive_subject(&sessions, below).0,
            SubjectStatus::RequiresInput
        );
    }

    #[test]
    fn canceled_only_when_every_session_is() {
        let one = [session("vs_a", Stage::Canceled, false, 5)];
        assert_eq!(derive_subject(&one, FRESH).0, SubjectStatus::Canceled);
        let two = [
            session("vs_a", Stage::Canceled, false, 5),
            session("vs_b", Stage::Processing, false, 1),
        ];
        assert_eq!(
            derive_subject(&two, FRESH),
            (SubjectStatus::Processing, Some("vs_b".into()))
        );
        assert_eq!(derive_subject(&[], FRESH), (SubjectStatus::Pending, None));
        let initial = [session("vs_a", Stage::RequiresInput, false, 5)];
        assert_eq!(derive_subject(&initial, FRESH).0, SubjectStatus::Pending);
    }
}
