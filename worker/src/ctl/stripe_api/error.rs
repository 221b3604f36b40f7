//! Why a call to Stripe failed, in words for the operator: Stripe's
//! answer read for its status and its error `type` and `code` (and, for a
//! 400, its `message`, the key masked should Stripe ever echo it), never
//! for anything else it holds. 401 and 403 messages quote part of the key,
//! so they are not shown.

use std::time::Duration;

use serde::Deserialize;

use crate::ctl::text::one_line;
use crate::dispatch::settings::DEFAULT_STRIPE_API_BASE;

/// The most of Stripe's 400 message shown.
const MAX_MESSAGE_CHARS: usize = 500;

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
         over {secs:.1}s: run it again later, or slower"
    )]
    RateLimited {
        what: String,
        tries: Tries,
        secs: f64,
    },
    #[error(
        "Stripe answered {status}{parens} to {what} after {tries} over {secs:.1}s: \
         trouble at Stripe's end (https://status.stripe.com); run it again later"
    )]
    Unavailable {
        what: String,
        status: u16,
        parens: String,
        tries: Tries,
        secs: f64,
    },
    #[error(
        "could not reach Stripe (STRIPE_API_BASE) for {what}: {cause}, {tries} over \
         {secs:.1}s"
    )]
    Unreachable {
        what: String,
        cause: &'static str,
        tries: Tries,
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
pub(super) enum Failure {
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
    pub(super) fn is_retryable(&self) -> bool {
        match self {
            Self::Status {
                status,
                should_retry,
                ..
            } => should_retry.unwrap_or(true) && matches!(status, 408 | 409 | 429 | 500..=599),
            Self::Transport(_) => true,
        }
    }

    pub(super) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            Self::Transport(_) => None,
        }
    }

    /// The failure in words.
    pub(super) fn explain(
        self,
        what: &str,
        tries: u32,
        elapsed: Duration,
        key: &str,
        permission: &'static str,
    ) -> ApiError {
        let what = what.to_owned();
        let tries = Tries(tries);
        let secs = elapsed.as_secs_f64();
        let (status, body) = match self {
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
                permission,
            },
            404 => ApiError::NotFound {
                what,
                parens: error.parens(),
            },
            400 => ApiError::BadRequest {
                what,
                summary: error.summary(),
                message: message(&error, key),
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
}

/// How many requests were sent: `1 try`, `3 tries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tries(pub u32);

impl std::fmt::Display for Tries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            1 => f.write_str("1 try"),
            n => write!(f, "{n} tries"),
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

pub(super) fn failure_name(failure: &Failure) -> String {
    match failure {
        Failure::Status { status, .. } => format!("HTTP {status}"),
        Failure::Transport(cause) => (*cause).to_owned(),
    }
}

/// Stripe's 400 `message` (and `param`) on one line, cut short, the
/// key masked should Stripe ever echo it.
fn message(error: &StripeError, key: &str) -> String {
    let Some(message) = error.message.as_deref() else {
        return "Stripe gave no reason".to_owned();
    };
    let mut text = one_line(Some(message)).replace(key, "[STRIPE_API_KEY]");
    if let Some(param) = error.param.as_deref().filter(|p| p.len() <= 100) {
        text = format!("{text} (param {})", one_line(Some(param)));
    }
    if text.chars().count() > MAX_MESSAGE_CHARS {
        text = text.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let key = "sk_test_secret42";
        let permission = "write access to Webhook Endpoints";
        let body = br#"{"error":{"type":"invalid_request_error","code":"url_invalid",
            "message":"Invalid URL: sk_test_secret42\n is not allowed","param":"url"}}"#;
        let failure = Failure::Status {
            status: 400,
            retry_after: None,
            should_retry: None,
            body: body.to_vec(),
        };
        let shown = failure
            .explain(
                "POST /v1/webhook_endpoints",
                1,
                Duration::ZERO,
                key,
                permission,
            )
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
        let shown = unauthorized
            .explain("GET /v1/events", 1, Duration::ZERO, key, permission)
            .to_string();
        assert!(
            shown.starts_with("Stripe refused STRIPE_API_KEY (401"),
            "{shown}"
        );
        assert!(!shown.contains("secret42"), "{shown}");
    }
}
