//! Stripe's API, for what the dispatcher asks of it: cancel a session at
//! the limit ([`cancel`]) and compare a verified session's outputs with
//! what the platform expected ([`verified_outputs`]).
//!
//! Every request carries `STRIPE_API_KEY` as a Bearer token and pins
//! [`STRIPE_VERSION`]; every POST carries the outbox row's idempotency key,
//! so a repeat after a crash is recognised by Stripe. Nothing Stripe
//! answers is logged or kept: an error names the HTTP status and Stripe's
//! error `type` and `code`, never a message or a body.

pub mod cancel;
pub mod verified_outputs;

use std::time::Duration;

use reqwest::header::{HeaderValue, InvalidHeaderValue};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::settings::StripeSettings;
use super::sink::{self, Performed};

/// The API version every request pins (`Stripe-Version`), so that an
/// account's default version moving on changes nothing here: the version
/// of the fixtures the code was written against (`shared/fixtures`,
/// composed from Stripe's OpenAPI spec of that version).
pub const STRIPE_VERSION: &str = "2026-07-29.dahlia";

/// What the errors name as the other side.
const WHAT: &str = "Stripe";

/// The longest session id accepted in a path.
const MAX_ID_LEN: usize = 255;

/// A client of Stripe's API (`STRIPE_API_KEY`, `STRIPE_API_BASE`); its
/// timeouts are those of the `reqwest::Client` it is given.
#[derive(Debug, Clone)]
pub struct StripeClient {
    /// The key (a secret: only exposed into the `Authorization` header,
    /// marked sensitive) and the base URL, without a trailing slash.
    settings: StripeSettings,
    /// Shared with the other HTTP sinks: timeouts, no redirects.
    http: reqwest::Client,
}

/// An HTTP answer of Stripe's, read whole. `Debug` shows no body.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// `Idempotent-Replayed: true`: Stripe answered a POST with the result
    /// it saved for an earlier request with the same key.
    pub replayed: bool,
    body: Vec<u8>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("retry_after", &self.retry_after)
            .field("replayed", &self.replayed)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as `T`, or a retry naming only what failed.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Performed> {
        serde_json::from_slice(&self.body).map_err(|_| Performed::Retry {
            error: format!(
                "{WHAT} answered {} with a body that does not parse",
                self.status
            ),
            after: None,
        })
    }

    /// Stripe's error `type` and `code`, when it gave them, as
    /// `" (type, code)"`: nothing else of the body (its `message` may
    /// echo what was sent).
    pub fn error_summary(&self) -> String {
        #[derive(Deserialize)]
        struct Envelope {
            error: Option<ErrorFields>,
        }
        #[derive(Deserialize)]
        struct ErrorFields {
            #[serde(rename = "type")]
            kind: Option<String>,
            code: Option<String>,
        }
        let fields = serde_json::from_slice::<Envelope>(&self.body)
            .ok()
            .and_then(|e| e.error);
        let names: Vec<&str> = fields
            .iter()
            .flat_map(|f| [f.kind.as_deref(), f.code.as_deref()])
            .flatten()
            .filter(|name| is_identifier(name, 64))
            .collect();
        if names.is_empty() {
            String::new()
        } else {
            format!(" ({})", names.join(", "))
        }
    }

    /// The usual reading of the answer (see [`sink::from_http_status`]),
    /// with Stripe's error type and code in the error.
    pub fn performed(&self, what: &str) -> Performed {
        let summary = self.error_summary();
        match sink::from_http_status(self.status, self.retry_after, what) {
            Performed::Retry { error, after } => Performed::Retry {
                error: format!("{error}{summary}"),
                after,
            },
            Performed::Failed(error) => Performed::Failed(format!("{error}{summary}")),
            other => other,
        }
    }
}

/// `raw` is non-empty, at most `max` long and only `[A-Za-z0-9_]`.
fn is_identifier(raw: &str, max: usize) -> bool {
    !raw.is_empty()
        && raw.len() <= max
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The path of session `id` (`/v1/identity/verification_sessions/{id}`),
/// or `Failed` if the id could not be one of Stripe's (it came from an
/// event: never put into a path unchecked).
pub fn session_path(id: Option<&str>) -> Result<String, Performed> {
    match id {
        Some(id) if is_identifier(id, MAX_ID_LEN) => {
            Ok(format!("/v1/identity/verification_sessions/{id}"))
        }
        Some(_) => Err(Performed::Failed(
            "the session id is not a Stripe id (only letters, digits and _)".to_owned(),
        )),
        None => Err(Performed::Failed("the row names no session".to_owned())),
    }
}

impl StripeClient {
    pub fn new(settings: StripeSettings, http: reqwest::Client) -> Self {
        Self { settings, http }
    }

    /// POSTs `form` (form-encoded) to `path` with `idempotency_key`.
    pub async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: &str,
    ) -> Result<Answer, Performed> {
        let key = HeaderValue::from_str(idempotency_key).map_err(|_| {
            Performed::Failed("the idempotency key is not a valid header value".to_owned())
        })?;
        let request = self
            .http
            .post(self.url(path))
            .header("Idempotency-Key", key)
            .form(form);
        self.send(request).await
    }

    /// GETs `path` with `query`.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Answer, Performed> {
        let request = self.http.get(self.url(path)).query(query);
        self.send(request).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.api_base)
    }

    fn authorization(&self) -> Result<HeaderValue, InvalidHeaderValue> {
        let key = self.settings.api_key.expose_secret();
        let mut value = HeaderValue::from_str(&format!("Bearer {key}"))?;
        value.set_sensitive(true);
        Ok(value)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, Performed> {
        let authorization = self.authorization().map_err(|_| {
            Performed::Failed("STRIPE_API_KEY is not a valid header value".to_owned())
        })?;
        let response = request
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header("Stripe-Version", STRIPE_VERSION)
            .send()
            .await
            .map_err(|error| sink::request_error(WHAT, &error))?;
        let status = response.status().as_u16();
        let retry_after = sink::retry_after(response.headers());
        let replayed = response
            .headers()
            .get("Idempotent-Replayed")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let body = response
            .bytes()
            .await
            .map_err(|error| sink::request_error(WHAT, &error))?;
        Ok(Answer {
            status,
            retry_after,
            replayed,
            body: body.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            retry_after: None,
            replayed: false,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn only_stripe_ids_reach_a_path() {
        assert_eq!(
            session_path(Some("vs_1Sk3Gh2eZvKYlo2C")).ok().as_deref(),
            Some("/v1/identity/verification_sessions/vs_1Sk3Gh2eZvKYlo2C")
        );
        for bad in [
            "",
            "vs_1/../../v1/charges",
            "vs_1?x=1",
            "vs 1",
            "vs_é",
            "vs_1%2F",
        ] {
            assert!(
                matches!(session_path(Some(bad)), Err(Performed::Failed(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(session_path(None), Err(Performed::Failed(_))));
        let long = "a".repeat(MAX_ID_LEN + 1);
        assert!(session_path(Some(&long)).is_err());
    }

    #[test]
    fn an_error_names_type_and_code_and_nothing_else() {
        let body = r#"{"error":{"type":"invalid_request_error","code":"resource_missing",
            "message":"No such verificationsession: 'Jenny Rosen'","param":"id"}}"#;
        let performed = answer(404, body).performed("Stripe");
        let Performed::Failed(error) = performed else {
            panic!("a 404 is failed: {performed:?}");
        };
        assert_eq!(
            error,
            "Stripe refused it: HTTP 404 (invalid_request_error, resource_missing)"
        );
        // A code that is not an identifier is not echoed.
        let odd = answer(400, r#"{"error":{"type":"x y","code":"Jenny Rosen"}}"#);
        assert_eq!(odd.error_summary(), "");
        assert_eq!(answer(500, "not json").error_summary(), "");
        assert!(!format!("{:?}", answer(400, body)).contains("Jenny"));
    }
}
