//! Stop further submissions at the limit: `POST
//! /v1/identity/verification_sessions/{id}/cancel` for each session of a
//! subject at its limit (Stripe cancels a session only while it is
//! `requires_input`; the judge holds the row while our record says
//! otherwise).
//!
//! A refusal (400) is read by asking Stripe for the session's status
//! rather than by the error's wording, which Stripe does not document: a
//! session already `canceled` or `verified` is success (nothing can be
//! submitted to it any more); one `processing` waits (no attempt) until it
//! comes back to `requires_input` or ends verified; one still
//! `requires_input` is a refusal for another reason, so failed (unless
//! Stripe replayed an earlier refusal saved under the same idempotency key,
//! which is retried).
//!
//! The `Idempotency-Key` is the row's key and the session's last applied
//! event ([`cancel_key`]): a repeat after a crash carries the same key, and
//! a cancel Stripe refused while it had the session `processing` gets a new
//! one once an event brings the session back, instead of Stripe's saved
//! refusal (kept for 24 hours). A cancel is idempotent by nature: a second
//! one is refused and read as done through the session's status.

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use serde::Deserialize;

use super::{StripeClient, session_path};
use crate::dispatch::sink::{Job, Performed, Sink};
use crate::domain::outbox::ActionKind;

/// What the errors name.
const WHAT: &str = "Stripe's cancel";

#[derive(Debug)]
pub struct CancelSession {
    client: StripeClient,
}

/// The part of a VerificationSession the cancel reads.
#[derive(Debug, Deserialize)]
struct Status {
    status: Option<String>,
}

impl CancelSession {
    pub fn new(client: StripeClient) -> Self {
        Self { client }
    }

    async fn cancel(&self, job: &Job) -> Result<Performed, Performed> {
        let path = session_path(job.row.session_id.as_deref())?;
        let answer = self
            .client
            .post(&format!("{path}/cancel"), &[], &cancel_key(job))
            .await?;
        if answer.status != 400 {
            return Ok(answer.performed(WHAT));
        }
        let refused = format!("{WHAT} refused it: HTTP 400{}", answer.error_summary());
        let session = self.client.get(&path, &[]).await?;
        if !session.is_success() {
            return Ok(session.performed("Stripe's session lookup"));
        }
        let status = session.json::<Status>()?.status;
        Ok(match status.as_deref() {
            Some("canceled" | "verified") => Performed::Done,
            Some("processing") => {
                Performed::Wait(format!("{refused}: the session is processing at Stripe"))
            }
            Some("requires_input") if answer.replayed => Performed::Retry {
                error: format!(
                    "{refused}: replayed for this idempotency key, though the session is \
                     requires_input now"
                ),
                after: None,
            },
            Some("requires_input") => {
                Performed::Failed(format!("{refused}, though the session is requires_input"))
            }
            _ => Performed::Failed(format!("{refused}, and the session's status is unknown")),
        })
    }
}

/// The cancel's `Idempotency-Key`: the row's key and the last event our
/// record applied to the session.
pub fn cancel_key(job: &Job) -> String {
    match &job.facts.session_last_event {
        Some(event) => format!("{}:{event}", job.row.idempotency_key),
        None => job.row.idempotency_key.clone(),
    }
}

impl Sink for CancelSession {
    fn kinds(&self) -> &'static [ActionKind] {
        &[ActionKind::CancelStripeSession]
    }

    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed> {
        async move {
            match self.cancel(job).await {
                Ok(performed) | Err(performed) => performed,
            }
        }
        .boxed()
    }
}
