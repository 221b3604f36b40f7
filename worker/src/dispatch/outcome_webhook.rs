//! Tell the platform over HTTP: the outcome message POSTed to
//! `OUTCOME_WEBHOOK_URL`, signed like Stripe signs its webhooks:
//! `IDV-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>"
//! under OUTCOME_WEBHOOK_SECRET>`, with the row's `Idempotency-Key`. The
//! README shows how to verify it.

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use secrecy::ExposeSecret;

use super::settings::WebhookSettings;
use super::sink::{self, Job, Performed, Sink};
use crate::domain::outbox::ActionKind;

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "IDV-Signature";

#[derive(Debug)]
pub struct OutcomeWebhook {
    settings: WebhookSettings,
    http: reqwest::Client,
}

impl OutcomeWebhook {
    pub fn new(settings: WebhookSettings, http: reqwest::Client) -> Self {
        Self { settings, http }
    }
}

impl Sink for OutcomeWebhook {
    fn kinds(&self) -> &'static [ActionKind] {
        &[ActionKind::OutcomeWebhook]
    }

    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed> {
        async move {
            let body = job.message.to_json();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            let secret = self.settings.secret.expose_secret().as_bytes();
            let signature = shared::signature::sign_header(secret, &body, now);
            let sent = self
                .http
                .post(&self.settings.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("Idempotency-Key", &job.row.idempotency_key)
                .header(SIGNATURE_HEADER, signature)
                .body(body)
                .send()
                .await;
            match sent {
                Ok(response) => sink::from_http_status(
                    response.status().as_u16(),
                    sink::retry_after(response.headers()),
                    "the outcome webhook",
                ),
                Err(error) => sink::request_error("the outcome webhook", &error),
            }
        }
        .boxed()
    }
}
