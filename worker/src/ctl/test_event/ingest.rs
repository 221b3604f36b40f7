//! Where test events go and how they are signed: ingest's webhook URL
//! (`--to`, http or https only), the endpoint's secret (`--secret`, else
//! the first of `STRIPE_WEBHOOK_SECRET`), and a POST signed at the moment
//! it is sent, as Stripe signs each delivery attempt.

use std::fmt;
use std::time::Duration;

use reqwest::{StatusCode, Url};
use shared::config::{Env, invalid};
use shared::{WebhookSecret, sign_test_header};

use super::super::UsageError;
use super::super::text::one_line;
use super::event::BuiltEvent;
use super::now_unix;
use crate::store::error_chain;

/// The variable ingest reads its secrets from, and so the default here.
pub const SECRET_VAR: &str = "STRIPE_WEBHOOK_SECRET";

/// Longest part of ingest's answer quoted back: its answers are short
/// (`{"received":true}`, an error line); anything longer is not ingest.
const MAX_QUOTED_BODY: usize = 500;

/// Ingest's webhook endpoint, ready to take signed events.
pub struct Ingest {
    url: Url,
    secret: WebhookSecret,
    client: reqwest::Client,
}

// The secret stays out of any debug print.
impl fmt::Debug for Ingest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ingest")
            .field("url", &self.shown_url())
            .finish_non_exhaustive()
    }
}

/// What ingest answered to one event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The body, on one line, cut at [`MAX_QUOTED_BODY`] characters.
    pub body: String,
}

impl Answer {
    fn of(status: StatusCode, body: &str) -> Self {
        let mut body = one_line(Some(body.trim()));
        if body.chars().count() > MAX_QUOTED_BODY {
            body = body.chars().take(MAX_QUOTED_BODY).collect::<String>() + "…";
        }
        Self {
            status: status.as_u16(),
            body,
        }
    }

    /// `200 OK {"received":true}`.
    pub fn describe(&self) -> String {
        let reason = StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        [self.status.to_string().as_str(), reason, self.body.as_str()]
            .into_iter()
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Ingest {
    /// Checks `to` and finds the secret: `--secret`, else the first of
    /// [`SECRET_VAR`]'s comma-separated list. A bad or missing one is a
    /// usage error (exit code 2) naming where it came from.
    pub fn new(to: &str, secret: Option<&str>, env: &Env) -> anyhow::Result<Self> {
        let url = webhook_url(to)?;
        let secret = signing_secret(secret, env)?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            url,
            secret,
            client,
        })
    }

    /// The URL as it may be printed: any password in it replaced.
    pub fn shown_url(&self) -> String {
        let mut url = self.url.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        url.to_string()
    }

    /// POSTs `event`, signed now. A 2xx is `Ok`; any other answer, or no
    /// answer, is an error naming the URL and the event.
    pub async fn send(&self, event: &BuiltEvent) -> anyhow::Result<Answer> {
        let signature = sign_test_header(&self.secret, &event.body, now_unix());
        let response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Stripe-Signature", signature)
            .body(event.body.clone())
            .send()
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "could not reach ingest at {} (is idv-ingest running? --to sets the URL): {}",
                    self.shown_url(),
                    error_chain(&error)
                )
            })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let answer = Answer::of(status, &body);
        if !status.is_success() {
            anyhow::bail!(
                "ingest at {} refused {} ({}): {}",
                self.shown_url(),
                event.id,
                event.event_type,
                answer.describe()
            );
        }
        Ok(answer)
    }
}

/// `--to`: an absolute http(s) URL with a host.
fn webhook_url(to: &str) -> Result<Url, UsageError> {
    let bad = || {
        UsageError(format!(
            "--to must be an http:// or https:// URL such as http://127.0.0.1:4242/webhook, \
             found {:?}",
            one_line(Some(to))
        ))
    };
    let url = Url::parse(to.trim()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad());
    }
    Ok(url)
}

/// `--secret`, else the first of `STRIPE_WEBHOOK_SECRET`. Never echoed.
fn signing_secret(given: Option<&str>, env: &Env) -> anyhow::Result<WebhookSecret> {
    const EXPECTED: &str = "a Stripe webhook secret starting with `whsec_` (the first of a \
                            comma-separated list is used)";
    if let Some(given) = given {
        return WebhookSecret::parse(given).map_err(|expected| {
            UsageError(format!(
                "--secret must be {expected}; the value is not shown"
            ))
            .into()
        });
    }
    let Some(raw) = env.optional(SECRET_VAR) else {
        return Err(UsageError(format!(
            "no secret to sign with: pass --secret whsec_… or set {SECRET_VAR} \
             (the secret ingest checks)"
        ))
        .into());
    };
    let first = raw.split(',').next().unwrap_or_default();
    WebhookSecret::parse(first).map_err(|_| invalid(SECRET_VAR, EXPECTED, None).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn the_secret_comes_from_the_flag_else_the_first_of_the_variable() {
        assert!(signing_secret(Some("whsec_a"), &env(&[])).is_ok());
        assert!(signing_secret(None, &env(&[(SECRET_VAR, "whsec_a,whsec_b")])).is_ok());
        let missing = signing_secret(None, &env(&[])).unwrap_err();
        let text = missing.to_string();
        assert!(missing.downcast_ref::<UsageError>().is_some());
        assert!(
            text.contains("--secret") && text.contains(SECRET_VAR),
            "{text}"
        );
        let bad = signing_secret(None, &env(&[(SECRET_VAR, "sk_live_oops,whsec_b")])).unwrap_err();
        let config = bad.downcast_ref::<shared::config::ConfigError>().unwrap();
        assert_eq!(config.variable, SECRET_VAR);
        assert!(!bad.to_string().contains("sk_live_oops"));
        let flag = signing_secret(Some("sk_live_oops"), &env(&[])).unwrap_err();
        assert!(flag.downcast_ref::<UsageError>().is_some());
        assert!(!flag.to_string().contains("sk_live_oops"));
    }

    #[test]
    fn to_is_an_http_url() {
        assert!(webhook_url("http://127.0.0.1:4242/webhook").is_ok());
        assert!(webhook_url("https://idv.example.com/webhook").is_ok());
        for bad in [
            "ftp://x/webhook",
            "127.0.0.1:4242/webhook",
            "http://",
            "",
            "file:///tmp/x",
        ] {
            assert!(webhook_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_password_in_the_url_is_never_shown() {
        let ingest = Ingest::new(
            "http://u:hunter2@127.0.0.1:1/webhook",
            Some("whsec_a"),
            &env(&[]),
        )
        .unwrap();
        assert!(!ingest.shown_url().contains("hunter2"));
        assert!(!format!("{ingest:?}").contains("hunter2"));
    }

    #[test]
    fn answers_are_quoted_on_one_line_and_short() {
        let answer = Answer::of(StatusCode::BAD_REQUEST, "bad\nthing");
        assert_eq!(answer.describe(), "400 Bad Request bad thing");
        let long = Answer::of(StatusCode::OK, &"x".repeat(2000));
        assert!(long.body.chars().count() <= MAX_QUOTED_BODY + 1);
    }
}
