//! The side effects of a transition, as outbox rows. Each idempotency key
//! names the change, not the event (session, outcome and, for retries, the
//! attempt number), so two Stripe events for one change write one row.

use serde_json::json;

use super::Rules;
use crate::incoming::Incoming;
use crate::transition::{Stage, SubjectStatus};

/// One side effect to perform, written with the transition.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub kind: &'static str,
    pub idempotency_key: String,
    pub subject_key: Option<String>,
    pub session_id: String,
    pub payload: serde_json::Value,
}

/// What the outbox needs to know about one applied event.
#[derive(Debug)]
pub struct OutboxContext<'a> {
    pub rules: &'a Rules,
    pub event: &'a Incoming,
    pub stage: Stage,
    /// The event moved its session forward (it was not stale).
    pub newer: bool,
    /// The session was redacted: no reason texts.
    pub redacted: bool,
    pub subject_key: &'a str,
    /// The subject's status after the event.
    pub status: SubjectStatus,
    pub failed_attempts: i32,
    /// The subject entered manual review with this event.
    pub reached_review: bool,
    /// The subject's sessions Stripe could still accept a submission on.
    pub open_sessions: Vec<&'a str>,
}

impl OutboxContext<'_> {
    fn row(
        &self,
        kind: &'static str,
        key: String,
        session_id: &str,
        extra: serde_json::Value,
    ) -> OutboxRow {
        let mut payload = json!({
            "subject_key": self.subject_key,
            "session_id": session_id,
            "event_id": self.event.event_id,
            "subject_status": self.status.as_str(),
        });
        if let (Some(object), serde_json::Value::Object(extra)) = (payload.as_object_mut(), extra) {
            object.extend(extra);
        }
        OutboxRow {
            kind,
            idempotency_key: key,
            subject_key: Some(self.subject_key.to_owned()),
            session_id: session_id.to_owned(),
            payload,
        }
    }
}

/// The outbox rows `context` calls for (possibly none).
pub fn rows(context: &OutboxContext<'_>) -> Vec<OutboxRow> {
    let session = context.event.session_id.as_str();
    let mut rows = Vec::new();
    if context.stage == Stage::Verified && context.newer {
        let mut kinds = vec!["notify_user_verified", "platform_follow_up"];
        if context.rules.fetch_verified_outputs {
            kinds.push("fetch_verified_outputs");
        }
        for kind in kinds {
            rows.push(context.row(
                kind,
                format!("{session}:verified:{kind}"),
                session,
                json!({}),
            ));
        }
    }
    let failure = context.event.failure.as_ref().filter(|f| f.class.counts());
    if context.reached_review {
        let why = match failure {
            Some(f) if f.class.blocks() => f.class.as_str(),
            _ => "attempt_limit",
        };
        let extra = json!({ "why": why, "failed_attempts": context.failed_attempts });
        for open in &context.open_sessions {
            rows.push(context.row(
                "cancel_stripe_session",
                format!("{open}:cancel_stripe_session"),
                open,
                extra.clone(),
            ));
        }
        for kind in ["notify_user_alternative", "alert_reviewers"] {
            rows.push(context.row(
                kind,
                format!("{}:manual_review:{kind}", context.subject_key),
                session,
                extra.clone(),
            ));
        }
    } else if let Some(failure) = failure
        && context.newer
        && context.status == SubjectStatus::RequiresInput
    {
        let attempt = context.failed_attempts;
        let mut extra = json!({
            "code": failure.code,
            "attempt": attempt,
            "attempts_left": context.rules.max_failed_attempts.saturating_sub(attempt),
        });
        if let (Some(reason), false, Some(object)) =
            (&failure.reason, context.redacted, extra.as_object_mut())
        {
            object.insert("reason".to_owned(), json!(reason));
        }
        rows.push(context.row(
            "notify_user_retry",
            format!("{session}:requires_input:{attempt}:notify_user_retry"),
            session,
            extra,
        ));
    }
    rows
}
