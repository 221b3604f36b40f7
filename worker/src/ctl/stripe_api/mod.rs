//! A small client of Stripe's API for the commands that call it
//! (`resync`, `register-endpoint`), apart from the dispatcher's
//! (`dispatch::stripe`), whose errors are outbox outcomes: here a failure
//! ends the command with a sentence for the operator.
//!
//! Every request carries `STRIPE_API_KEY` as a Bearer token (a sensitive
//! header, never printed) and pins the dispatcher's
//! [`STRIPE_VERSION`], so the events `resync` lists have the shape the
//! worker parses whatever the account's default version. 429, 408, 409,
//! 5xx and a request that timed out or could not connect are retried with
//! exponential backoff (`backon`) a bounded number of times (unless Stripe
//! says `Stripe-Should-Retry: false`); 401, 403, 404 and 400 are not, and
//! each has its own message. Nothing of an answer is printed but Stripe's
//! error `type`, `code` and, for a 400, its `message` (with the key masked
//! should it ever be echoed): 401 and 403 messages quote part of the key,
//! so they are not shown.

mod error;
mod settings;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable as _};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret as _, SecretString};
use serde::de::DeserializeOwned;
use shared::config::Env;

pub use error::{ApiError, Tries};
use error::{Failure, failure_name};

use super::UsageError;
use crate::dispatch::sink::retry_after;
use crate::dispatch::stripe::STRIPE_VERSION;

/// The longest wait a `Retry-After` may ask for before a retry.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The longest wait between two tries of the backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a command asks of Stripe, for its errors.
#[derive(Debug, Clone, Copy)]
pub struct Purpose {
    /// The `idvctl` command, for "STRIPE_API_KEY is not set".
    pub command: &'static str,
    /// What a restricted key (`rk_…`) needs for it, for a 403.
    pub permission: &'static str,
}

/// Stripe's API as `STRIPE_API_KEY`, `STRIPE_API_BASE`,
/// `STRIPE_API_RETRIES`, `STRIPE_API_BACKOFF_MS` and
/// `STRIPE_API_TIMEOUT_MS` configure it.
#[derive(Debug)]
pub struct StripeApi {
    /// `sk_…` or `rk_…`: only ever exposed into the `Authorization` header.
    key: SecretString,
    /// Without a trailing slash; paths start with one.
    base: String,
    /// Tries after the first, for answers worth another try.
    retries: usize,
    /// The first wait before a retry, doubled each time (with jitter).
    first_backoff: Duration,
    /// Timeouts per request, no redirects.
    http: reqwest::Client,
    purpose: Purpose,
}

impl StripeApi {
    /// Reads and checks the settings: a missing key is a [`UsageError`], a
    /// malformed one a [`ConfigError`](shared::config::ConfigError) (both exit code 2, neither echoing
    /// the key).
    pub fn from_env(env: &Env, purpose: Purpose) -> anyhow::Result<Self> {
        const KEY: &str = "STRIPE_API_KEY";
        let Some(key) = env.optional(KEY) else {
            return Err(UsageError(format!(
                "{KEY} is not set: idvctl {} calls Stripe's API with it (the account's secret \
                 key sk_…, or a restricted key rk_… with {})",
                purpose.command, purpose.permission
            ))
            .into());
        };
        settings::check_key(key)?;
        let base = settings::api_base(env)?;
        let retries = usize::try_from(env.number_or("STRIPE_API_RETRIES", 5, 0..=10)?).unwrap_or(5);
        let first_backoff = env.millis_or("STRIPE_API_BACKOFF_MS", 1000, 1..=60_000)?;
        let timeout = env.millis_or("STRIPE_API_TIMEOUT_MS", 30_000, 100..=300_000)?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("idvctl/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            key: key.to_owned().into(),
            base,
            retries,
            first_backoff,
            http,
            purpose,
        })
    }

    /// GETs `path` with `query` and reads the answer as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ApiError> {
        let what = format!("GET {path}");
        let url = self.url(path);
        let body = self
            .call(&what, || self.http.get(&url).query(query))
            .await?;
        parse(&what, &body)
    }

    /// POSTs `form` (form-encoded) to `path` with `idempotency_key`, the
    /// same for every try, so that a retry after an answer lost on the
    /// way creates nothing twice; reads the answer as `T`.
    pub async fn post_form<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &[(&str, String)],
        idempotency_key: &str,
    ) -> Result<T, ApiError> {
        let what = format!("POST {path}");
        let url = self.url(path);
        let body = self
            .call(&what, || {
                self.http
                    .post(&url)
                    .header("Idempotency-Key", idempotency_key)
                    .form(form)
            })
            .await?;
        parse(&what, &body)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends what `build` makes, again while the failure is worth another
    /// try and tries remain; the answer's body on a 2xx.
    async fn call(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, ApiError> {
        let started = Instant::now();
        let tries = AtomicU32::new(0);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.first_backoff)
            .with_max_delay(MAX_BACKOFF.max(self.first_backoff))
            .with_factor(2.0)
            .with_max_times(self.retries)
            .with_jitter();
        let once = || {
            tries.fetch_add(1, Ordering::Relaxed);
            self.once(build())
        };
        let result = once
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(Failure::is_retryable)
            .adjust(|failure, next| {
                // Stripe's Retry-After, when longer than ours (and sane).
                next.map(|ours| match failure.retry_after() {
                    Some(theirs) => ours.max(theirs.min(MAX_RETRY_AFTER)),
                    None => ours,
                })
            })
            .notify(|failure, wait| {
                let failure = failure_name(failure);
                tracing::info!(what, ?wait, %failure, "retrying a call to Stripe");
            })
            .await;
        result.map_err(|failure| {
            failure.explain(
                what,
                tries.load(Ordering::Relaxed),
                started.elapsed(),
                self.key.expose_secret(),
                self.purpose.permission,
            )
        })
    }

    async fn once(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>, Failure> {
        let response = request
            .headers(self.headers())
            .send()
            .await
            .map_err(|error| Failure::Transport(cause(&error)))?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let should_retry = response
            .headers()
            .get("Stripe-Should-Retry")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<bool>().ok());
        let body = response
            .bytes()
            .await
            .map_err(|error| Failure::Transport(cause(&error)))?;
        if (200..300).contains(&status) {
            Ok(body.to_vec())
        } else {
            Err(Failure::Status {
                status,
                retry_after,
                should_retry,
                body: body.to_vec(),
            })
        }
    }

    /// `Authorization` (sensitive: kept out of any debug print) and
    /// `Stripe-Version`.
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        // The key was checked to be letters, digits and `_` only.
        if let Ok(mut value) =
            HeaderValue::from_str(&format!("Bearer {}", self.key.expose_secret()))
        {
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        headers.insert("Stripe-Version", HeaderValue::from_static(STRIPE_VERSION));
        headers
    }
}

/// What a failed request says: never its URL or body.
fn cause(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timed out (STRIPE_API_TIMEOUT_MS)"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the answer was cut off"
    } else {
        "the request failed"
    }
}

fn parse<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| ApiError::Unexpected {
        what: what.to_owned(),
        detail: format!("it does not parse ({})", category(&error)),
    })
}

/// serde_json's error category, as words (its message may quote data).
fn category(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "JSON of another shape",
        serde_json::error::Category::Io | serde_json::error::Category::Eof => "cut off",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::ConfigError;

    const PURPOSE: Purpose = Purpose {
        command: "resync",
        permission: "read access to Events",
    };

    fn api(pairs: &[(&str, &str)]) -> anyhow::Result<StripeApi> {
        StripeApi::from_env(&Env::from_pairs(pairs.iter().copied()), PURPOSE)
    }

    fn variable(error: &anyhow::Error) -> Option<&str> {
        error
            .downcast_ref::<ConfigError>()
            .map(|e| e.variable.as_str())
    }

    #[test]
    fn a_key_must_be_secret_or_restricted_and_is_never_echoed() {
        assert!(api(&[("STRIPE_API_KEY", "sk_test_abc123")]).is_ok());
        assert!(api(&[("STRIPE_API_KEY", "rk_live_abc123")]).is_ok());
        for bad in [
            "pk_test_abc123",
            "sk_",
            "whsec_abc123",
            "sk_test abc123",
            "sk_test_é123",
        ] {
            let error = api(&[("STRIPE_API_KEY", bad)]).err();
            let error = error
                .as_ref()
                .map(|e| (variable(e), format!("{e:#} {e:?}")));
            match error {
                Some((Some("STRIPE_API_KEY"), shown)) => {
                    // (`sk_` alone is in the expectation itself.)
                    assert!(
                        bad == "sk_" || !shown.contains(bad),
                        "{bad:?} echoed: {shown}"
                    );
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let missing = api(&[]).err();
        let shown = missing.as_ref().map(|e| format!("{e:#}"));
        assert!(
            missing
                .as_ref()
                .is_some_and(|e| e.downcast_ref::<UsageError>().is_some()),
            "{shown:?}"
        );
        assert!(
            shown.is_some_and(|s| s.contains("STRIPE_API_KEY is not set")),
            "names the variable"
        );
    }

    #[test]
    fn the_base_is_a_plain_http_url() {
        let key = ("STRIPE_API_KEY", "sk_test_abc");
        let base = |raw: &str| api(&[key, ("STRIPE_API_BASE", raw)]).map(|a| a.base);
        assert_eq!(
            base("http://127.0.0.1:9/").ok().as_deref(),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(
            api(&[key]).map(|a| a.base).ok().as_deref(),
            Some("https://api.stripe.com")
        );
        for bad in [
            "api.stripe.com",
            "ftp://api.stripe.com",
            "https://user:token@api.stripe.com",
            "https://api.stripe.com/?x=1",
            "https://",
        ] {
            let error = base(bad).err();
            assert_eq!(
                error.as_ref().and_then(variable),
                Some("STRIPE_API_BASE"),
                "{bad:?}"
            );
        }
    }
}
