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

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable as _};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use shared::config::{ConfigError, Env, invalid};

use super::UsageError;
use super::text::one_line;
use crate::dispatch::settings::DEFAULT_STRIPE_API_BASE;
use crate::dispatch::sink::retry_after;
use crate::dispatch::stripe::STRIPE_VERSION;

/// The longest wait a `Retry-After` may ask for before a retry.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The longest wait between two tries of the backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The most of Stripe's 400 message shown.
const MAX_MESSAGE_CHARS: usize = 500;

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

/// Why a call to Stripe failed, in words for the operator (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "Stripe refused STRIPE_API_KEY (401 Unauthorized): check that it is the account's \
         secret key (sk_…) or a restricted key (rk_…), of the mode (test or live) meant, \
         and not rolled or expired"
    )]
    Unauthorized,
    #[error(
        "Stripe refused {what} to STRIPE_API_KEY (403 Forbidden{summary}): \
         a restricted key needs {permission}"
    )]
    Forbidden {
        what: String,
        summary: String,
        permission: &'static str,
    },
    #[error(
        "Stripe answered 404 Not Found{parens} to {what}: check STRIPE_API_BASE \
         (Stripe's own is {DEFAULT_STRIPE_API_BASE})"
    )]
    NotFound { what: String, parens: String },
    #[error("Stripe refused {what} (400 Bad Request{summary}): {message}")]
    BadRequest {
        what: String,
        summary: String,
        message: String,
    },
    #[error(
        "Stripe still answered 429 Too Many Requests (rate limited) to {what} after {tries} \
         tries over {secs:.1}s: run it again later, or slower"
    )]
    RateLimited { what: String, tries: u32, secs: f64 },
    #[error(
        "Stripe answered {status}{parens} to {what} after {tries} tries over {secs:.1}s: \
         trouble at Stripe's end (https://status.stripe.com); run it again later"
    )]
    Unavailable {
        what: String,
        status: u16,
        parens: String,
        tries: u32,
        secs: f64,
    },
    #[error(
        "could not reach Stripe (STRIPE_API_BASE) for {what}: {cause}, {tries} tries over \
         {secs:.1}s"
    )]
    Unreachable {
        what: String,
        cause: &'static str,
        tries: u32,
        secs: f64,
    },
    #[error("Stripe refused {what}: HTTP {status}{parens}")]
    Refused {
        what: String,
        status: u16,
        parens: String,
    },
    #[error("Stripe's answer to {what} is not what was expected: {detail}")]
    Unexpected { what: String, detail: String },
}

/// One try that did not succeed, before it is put into words.
#[derive(Debug)]
enum Failure {
    /// Stripe answered with a status other than 2xx.
    Status {
        status: u16,
        /// `Retry-After`, in seconds.
        retry_after: Option<Duration>,
        /// `Stripe-Should-Retry`, when Stripe says.
        should_retry: Option<bool>,
        /// Read only for its error fields.
        body: Vec<u8>,
    },
    /// No answer: timed out, could not connect, cut off.
    Transport(&'static str),
}

impl Failure {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Status {
                status,
                should_retry,
                ..
            } => should_retry.unwrap_or(true) && matches!(status, 408 | 409 | 429 | 500..=599),
            Self::Transport(_) => true,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            Self::Transport(_) => None,
        }
    }
}

/// Stripe's error object: `{"error": {"type", "code", "message", "param"}}`.
#[derive(Debug, Default, Deserialize)]
struct StripeError {
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
    message: Option<String>,
    param: Option<String>,
}

impl StripeError {
    fn of(body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Envelope {
            error: Option<StripeError>,
        }
        serde_json::from_slice::<Envelope>(body)
            .ok()
            .and_then(|e| e.error)
            .unwrap_or_default()
    }

    /// Its `type` and `code`, each only if it is a plain identifier.
    fn names(&self) -> Vec<&str> {
        [self.kind.as_deref(), self.code.as_deref()]
            .into_iter()
            .flatten()
            .filter(|name| is_identifier(name))
            .collect()
    }

    /// `", type, code"`, to go inside parentheses.
    fn summary(&self) -> String {
        self.names()
            .iter()
            .map(|name| format!(", {name}"))
            .collect()
    }

    /// `" (type, code)"`, or nothing.
    fn parens(&self) -> String {
        let names = self.names();
        if names.is_empty() {
            String::new()
        } else {
            format!(" ({})", names.join(", "))
        }
    }
}

fn is_identifier(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= 64
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl StripeApi {
    /// Reads and checks the settings: a missing key is a [`UsageError`], a
    /// malformed one a [`ConfigError`] (both exit code 2, neither echoing
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
        check_key(key)?;
        let base = api_base(env)?;
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
            self.explain(
                what,
                failure,
                tries.load(Ordering::Relaxed),
                started.elapsed(),
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

    /// The failure in words.
    fn explain(&self, what: &str, failure: Failure, tries: u32, elapsed: Duration) -> ApiError {
        let what = what.to_owned();
        let secs = elapsed.as_secs_f64();
        let (status, body) = match failure {
            Failure::Transport(cause) => {
                return ApiError::Unreachable {
                    what,
                    cause,
                    tries,
                    secs,
                };
            }
            Failure::Status { status, body, .. } => (status, body),
        };
        let error = StripeError::of(&body);
        match status {
            401 => ApiError::Unauthorized,
            403 => ApiError::Forbidden {
                what,
                summary: error.summary(),
                permission: self.purpose.permission,
            },
            404 => ApiError::NotFound {
                what,
                parens: error.parens(),
            },
            400 => ApiError::BadRequest {
                what,
                summary: error.summary(),
                message: self.message(&error),
            },
            429 => ApiError::RateLimited { what, tries, secs },
            408 | 409 | 500..=599 => ApiError::Unavailable {
                what,
                status,
                parens: error.parens(),
                tries,
                secs,
            },
            _ => ApiError::Refused {
                what,
                status,
                parens: error.parens(),
            },
        }
    }

    /// Stripe's 400 `message` (and `param`) on one line, cut short, the
    /// key masked should Stripe ever echo it.
    fn message(&self, error: &StripeError) -> String {
        let Some(message) = error.message.as_deref() else {
            return "Stripe gave no reason".to_owned();
        };
        let mut text =
            one_line(Some(message)).replace(self.key.expose_secret(), "[STRIPE_API_KEY]");
        if let Some(param) = error.param.as_deref().filter(|p| p.len() <= 100) {
            text = format!("{text} (param {})", one_line(Some(param)));
        }
        if text.chars().count() > MAX_MESSAGE_CHARS {
            text = text.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
        }
        text
    }
}

fn failure_name(failure: &Failure) -> String {
    match failure {
        Failure::Status { status, .. } => format!("HTTP {status}"),
        Failure::Transport(cause) => (*cause).to_owned(),
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

/// `sk_…` or `rk_…` then letters, digits and `_`: a publishable key
/// (`pk_…`) cannot list events or create endpoints, and anything else
/// would not make a header.
fn check_key(key: &str) -> Result<(), ConfigError> {
    let rest = key.strip_prefix("sk_").or_else(|| key.strip_prefix("rk_"));
    match rest {
        Some(rest) if is_key_body(rest) => Ok(()),
        _ => Err(invalid(
            "STRIPE_API_KEY",
            "the account's secret key (sk_…) or a restricted key (rk_…): letters, digits and _ \
             (a publishable key pk_… cannot call these endpoints)",
            None,
        )),
    }
}

fn is_key_body(rest: &str) -> bool {
    !rest.is_empty()
        && rest.len() <= 512
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `STRIPE_API_BASE`: an http(s) URL without credentials, query or
/// fragment (never echoed: it may carry a token); without a trailing slash.
fn api_base(env: &Env) -> Result<String, ConfigError> {
    const VAR: &str = "STRIPE_API_BASE";
    let raw = env.string_or(VAR, DEFAULT_STRIPE_API_BASE);
    let well_formed = reqwest::Url::parse(&raw).is_ok_and(|url| {
        matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some_and(|h| !h.is_empty())
            && url.username().is_empty()
            && url.password().is_none()
            && url.query().is_none()
            && url.fragment().is_none()
    });
    if well_formed {
        Ok(raw.trim_end_matches('/').to_owned())
    } else {
        Err(invalid(
            VAR,
            "an http:// or https:// URL without credentials, query or fragment, such as \
             https://api.stripe.com",
            None,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "whsec_abc",
            "sk_test abc",
            "sk_test_é",
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

    #[test]
    fn answers_are_retried_only_when_another_try_can_help() {
        let status = |status: u16, should_retry: Option<bool>| Failure::Status {
            status,
            retry_after: None,
            should_retry,
            body: Vec::new(),
        };
        for retried in [408, 409, 429, 500, 502, 503] {
            assert!(status(retried, None).is_retryable(), "{retried}");
        }
        for not in [400, 401, 402, 403, 404] {
            assert!(!status(not, None).is_retryable(), "{not}");
        }
        assert!(!status(500, Some(false)).is_retryable());
        assert!(!status(401, Some(true)).is_retryable());
        assert!(Failure::Transport("timed out").is_retryable());
    }

    #[test]
    fn errors_say_what_stripe_said_without_the_key() {
        let Ok(api) = api(&[("STRIPE_API_KEY", "sk_test_secret42")]) else {
            panic!("valid settings");
        };
        let body = br#"{"error":{"type":"invalid_request_error","code":"url_invalid",
            "message":"Invalid URL: sk_test_secret42\n is not allowed","param":"url"}}"#;
        let failure = Failure::Status {
            status: 400,
            retry_after: None,
            should_retry: None,
            body: body.to_vec(),
        };
        let shown = api
            .explain("POST /v1/webhook_endpoints", failure, 1, Duration::ZERO)
            .to_string();
        assert_eq!(
            shown,
            "Stripe refused POST /v1/webhook_endpoints (400 Bad Request, invalid_request_error, \
             url_invalid): Invalid URL: [STRIPE_API_KEY]  is not allowed (param url)"
        );
        let unauthorized = Failure::Status {
            status: 401,
            retry_after: None,
            should_retry: None,
            body: br#"{"error":{"message":"Invalid API Key provided: sk_test_secret42"}}"#.to_vec(),
        };
        let shown = api
            .explain("GET /v1/events", unauthorized, 1, Duration::ZERO)
            .to_string();
        assert!(
            shown.starts_with("Stripe refused STRIPE_API_KEY (401"),
            "{shown}"
        );
        assert!(!shown.contains("secret42"), "{shown}");
    }
}
