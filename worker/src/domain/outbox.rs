//! The side effects of the events, as outbox rows for the dispatcher.
//!
//! Which rows exist is a function of the set of events, never of their
//! order or batching:
//!
//! - **Event rows** follow from one event alone: a session's `verified`,
//!   `canceled` or `redacted`, or a `requires_input` that carries a failure.
//!   Their keys name the session (and, for a failure, the event); their
//!   payload holds only what the event says.
//! - **Limit rows** follow from a subject being at its limit (counted
//!   failures reached `IDV_MAX_FAILED_ATTEMPTS`, a failure retrying cannot
//!   fix, or verified outputs that did not match): tell the platform and the
//!   person once per subject, and cancel every session of the subject at
//!   Stripe. They are reconciled whenever the subject changes: a subject's
//!   pending limit rows that its state no longer calls for (a session moved
//!   to another person's key, the subject was deleted) are deleted, so the
//!   pending rows are always those its current state calls for.
//!
//! Whether a row is still *true* when its turn comes (never tell a verified
//! person to retry) is the dispatcher's call, made on the state then; it
//! marks such a row `superseded` instead of performing it.

use serde_json::json;

use crate::incoming::{EventKind, Incoming};
use crate::transition::Stage;

/// What a row does (the `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActionKind {
    /// Publish the outcome message to the `idv.outcomes` exchange.
    OutcomeMessage,
    /// POST the outcome message, signed, to `OUTCOME_WEBHOOK_URL`.
    OutcomeWebhook,
    /// E-mail the person: "you are verified".
    NotifyUserVerified,
    /// E-mail the person what went wrong and how many attempts are left.
    NotifyUserRetry,
    /// E-mail the person: "we will offer you another way".
    NotifyUserAlternative,
    /// Cancel the session at Stripe so that no further submission is taken.
    CancelStripeSession,
    /// Fetch the session's verified outputs and compare them with
    /// `expected_identity`.
    CompareVerifiedOutputs,
}

impl ActionKind {
    pub const ALL: [Self; 7] = [
        Self::OutcomeMessage,
        Self::OutcomeWebhook,
        Self::NotifyUserVerified,
        Self::NotifyUserRetry,
        Self::NotifyUserAlternative,
        Self::CancelStripeSession,
        Self::CompareVerifiedOutputs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutcomeMessage => "outcome_message",
            Self::OutcomeWebhook => "outcome_webhook",
            Self::NotifyUserVerified => "notify_user_verified",
            Self::NotifyUserRetry => "notify_user_retry",
            Self::NotifyUserAlternative => "notify_user_alternative",
            Self::CancelStripeSession => "cancel_stripe_session",
            Self::CompareVerifiedOutputs => "compare_verified_outputs",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == raw)
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened, as the platform is told (`outcome` of the message and
/// its routing key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Verified,
    RequiresInput,
    ManualReview,
    Canceled,
    Redacted,
}

impl Outcome {
    pub const ALL: [Self; 5] = [
        Self::Verified,
        Self::RequiresInput,
        Self::ManualReview,
        Self::Canceled,
        Self::Redacted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::RequiresInput => "requires_input",
            Self::ManualReview => "manual_review",
            Self::Canceled => "canceled",
            Self::Redacted => "redacted",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == raw)
    }
}

/// Which actions this deployment performs, from its settings: a sink that
/// is not configured gets no rows (the outcome message always does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sinks {
    /// `OUTCOME_WEBHOOK_URL` is set.
    pub webhook: bool,
    /// `SMTP_URL` is set.
    pub email: bool,
    /// `STRIPE_API_KEY` is set: sessions are canceled at the limit.
    pub stripe_cancel: bool,
    /// `IDV_EXPECTED_MATCHING=on` (and `STRIPE_API_KEY` set).
    pub expected_matching: bool,
}

/// One side effect to perform, written with the transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub kind: ActionKind,
    pub idempotency_key: String,
    /// The subject when the row was written (a session's may change): the
    /// dispatcher reads the current one.
    pub subject_key: Option<String>,
    /// `None` for a subject's limit rows other than cancels.
    pub session_id: Option<String>,
    pub payload: serde_json::Value,
    /// A limit row: reconciled with the subject's state.
    pub from_limit: bool,
}

/// The rows `event` calls for by itself (none for most events). `redacted`:
/// the session's personal data is erased, so no reason text.
pub fn event_rows(
    sinks: Sinks,
    event: &Incoming,
    redacted: bool,
    subject_key: Option<&str>,
) -> Vec<OutboxRow> {
    let session = event.session_id.as_str();
    let occurred = json!({ "occurred_at": event.created });
    let (outcome, prefix, payload, person) = match event.kind {
        EventKind::Redacted => (
            Outcome::Redacted,
            format!("{session}:redacted"),
            occurred,
            None,
        ),
        EventKind::Lifecycle(Stage::Verified) => {
            let mut person = vec![];
            if sinks.email {
                person.push(ActionKind::NotifyUserVerified);
            }
            if sinks.expected_matching {
                person.push(ActionKind::CompareVerifiedOutputs);
            }
            (
                Outcome::Verified,
                format!("{session}:verified"),
                occurred,
                Some(person),
            )
        }
        EventKind::Lifecycle(Stage::Canceled) => (
            Outcome::Canceled,
            format!("{session}:canceled"),
            occurred,
            None,
        ),
        EventKind::Lifecycle(Stage::RequiresInput) => {
            let Some(failure) = &event.failure else {
                return Vec::new();
            };
            let mut payload = json!({
                "occurred_at": event.created,
                "event_id": event.event_id,
                "code": failure.code,
            });
            if let (Some(reason), false, Some(object)) =
                (&failure.reason, redacted, payload.as_object_mut())
            {
                object.insert("reason".to_owned(), json!(reason));
            }
            let person = if sinks.email {
                vec![ActionKind::NotifyUserRetry]
            } else {
                vec![]
            };
            (
                Outcome::RequiresInput,
                format!("{session}:requires_input:{}", event.event_id),
                payload,
                Some(person),
            )
        }
        EventKind::Lifecycle(_) => return Vec::new(),
    };
    let mut payload = payload;
    if let Some(object) = payload.as_object_mut() {
        object.insert("outcome".to_owned(), json!(outcome.as_str()));
    }
    platform_kinds(sinks)
        .into_iter()
        .chain(person.into_iter().flatten())
        .map(|kind| OutboxRow {
            kind,
            idempotency_key: format!("{prefix}:{kind}"),
            subject_key: subject_key.map(str::to_owned),
            session_id: Some(session.to_owned()),
            payload: payload.clone(),
            from_limit: false,
        })
        .collect()
}

/// The rows a subject at its limit calls for: the platform and the person
/// told once, and a cancel for each of its `sessions`.
pub fn limit_rows(sinks: Sinks, subject_key: &str, sessions: &[&str]) -> Vec<OutboxRow> {
    let payload = json!({ "outcome": Outcome::ManualReview.as_str() });
    let mut kinds = platform_kinds(sinks);
    if sinks.email {
        kinds.push(ActionKind::NotifyUserAlternative);
    }
    let told = kinds.into_iter().map(|kind| OutboxRow {
        kind,
        idempotency_key: format!("{subject_key}:manual_review:{kind}"),
        subject_key: Some(subject_key.to_owned()),
        session_id: None,
        payload: payload.clone(),
        from_limit: true,
    });
    let cancels = sessions
        .iter()
        .filter(|_| sinks.stripe_cancel)
        .map(|session| OutboxRow {
            kind: ActionKind::CancelStripeSession,
            idempotency_key: format!("{session}:{}", ActionKind::CancelStripeSession),
            subject_key: Some(subject_key.to_owned()),
            session_id: Some((*session).to_owned()),
            payload: json!({}),
            from_limit: true,
        });
    told.chain(cancels).collect()
}

fn platform_kinds(sinks: Sinks) -> Vec<ActionKind> {
    let mut kinds = vec![ActionKind::OutcomeMessage];
    if sinks.webhook {
        kinds.push(ActionKind::OutcomeWebhook);
    }
    kinds
}
