//! `idvctl register-endpoint`: create the webhook endpoint at Stripe
//! (`POST /v1/webhook_endpoints`) with the six Identity events, and print
//! its id and its secret once.
//!
//! The endpoint pins `api_version` to the version the code was written
//! against ([`STRIPE_VERSION`]): Stripe renders each event for an endpoint
//! in the endpoint's version, so the events ingest receives keep the shape
//! the worker parses when the account's default version moves on (an
//! endpoint without one follows the account's default).
//!
//! `--events` takes only the six `identity.verification_session.*` types:
//! the topology binds nothing else to the worker's queue, so any other
//! type would be delivered, answered 200 and parked in
//! `stripe.events.unrouted`; and a typo (`…verifed`) would create an
//! endpoint that silently never sends what was meant. Both are a usage
//! error (exit code 2) rather than a surprise later.

use anyhow::Context as _;
use clap::Args;
use serde::Deserialize;
use serde_json::json;
use shared::config::Env;
use shared::event::EventType;

use super::stripe_api::{ApiError, Purpose, StripeApi};
use super::text::one_line;
use super::{CtlSettings, UsageError};
use crate::dispatch::stripe::STRIPE_VERSION;

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Reads STRIPE_API_KEY (a secret key, or a restricted key with write \
    access to Webhook Endpoints) and STRIPE_API_BASE (default https://api.stripe.com).\n\n\
    The endpoint's signing secret is printed once, on stdout: Stripe will not show it again. \
    It goes into STRIPE_WEBHOOK_SECRET of idv-ingest (comma-separated with the old one \
    during a rotation).\n\nExamples:\n  \
    idvctl register-endpoint --url https://idv.example.com/webhook\n  \
    idvctl register-endpoint --url https://idv.example.com/webhook \
    --events identity.verification_session.verified,identity.verification_session.requires_input"
)]
pub struct RegisterEndpoint {
    /// The public HTTPS URL of ingest's `/webhook` (http:// only for
    /// localhost or 127.0.0.1, when testing).
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The events to enable, some of the six identity.verification_session.*
    /// types (default: all six).
    #[arg(long, value_name = "TYPE", value_delimiter = ',', num_args = 1..)]
    pub events: Vec<String>,
    /// A description shown in Stripe's Dashboard.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

const PURPOSE: Purpose = Purpose {
    command: "register-endpoint",
    permission: "write access to Webhook Endpoints",
};

const PATH: &str = "/v1/webhook_endpoints";

/// The description when `--description` is not given.
const DEFAULT_DESCRIPTION: &str = "idv-pipeline: Stripe Identity verification sessions";

/// Stripe's answer: the endpoint, with its secret this once. `Debug`
/// shows no secret.
#[derive(Deserialize)]
struct Created {
    id: String,
    url: Option<String>,
    #[serde(default)]
    enabled_events: Vec<String>,
    api_version: Option<String>,
    status: Option<String>,
    secret: Option<String>,
}

impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Created")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

pub async fn run(
    _settings: &CtlSettings,
    env: &Env,
    args: &RegisterEndpoint,
) -> anyhow::Result<String> {
    let url = endpoint_url(&args.url)?;
    let events = enabled_events(&args.events)?;
    let api = StripeApi::from_env(env, PURPOSE)?;
    let mut form: Vec<(&str, String)> = vec![("url", url.clone())];
    form.extend(events.iter().map(|e| ("enabled_events[]", e.clone())));
    form.push(("api_version", STRIPE_VERSION.to_owned()));
    let description = args.description.as_deref().unwrap_or(DEFAULT_DESCRIPTION);
    form.push(("description", description.to_owned()));
    // One key for every try of this run: a retry after a lost answer
    // creates no second endpoint.
    let key = format!("idvctl-register-{}", uuid::Uuid::new_v4().simple());
    let created: Created = api
        .post_form(PATH, &form, &key)
        .await
        .context("creating the webhook endpoint")?;
    let Some(secret) = created.secret.as_deref().filter(|s| !s.is_empty()) else {
        return Err(ApiError::Unexpected {
            what: format!("POST {PATH}"),
            detail: format!(
                "it holds no secret, though the endpoint {} was created: reveal or roll its \
                 secret in Stripe's Dashboard",
                one_line(Some(&created.id))
            ),
        }
        .into());
    };
    Ok(if args.json {
        json!({
            "id": created.id,
            "url": created.url,
            "enabled_events": created.enabled_events,
            "api_version": created.api_version,
            "status": created.status,
            "secret": secret,
            "secret_goes_to": "STRIPE_WEBHOOK_SECRET",
        })
        .to_string()
    } else {
        text(&created, secret)
    })
}

fn text(created: &Created, secret: &str) -> String {
    let events = created
        .enabled_events
        .iter()
        .map(|e| one_line(Some(e)))
        .collect::<Vec<_>>()
        .join(", ");
    [
        format!("created webhook endpoint {}", one_line(Some(&created.id))),
        format!("  url: {}", one_line(created.url.as_deref())),
        format!(
            "  api version: {}",
            one_line(created.api_version.as_deref())
        ),
        format!("  status: {}", one_line(created.status.as_deref())),
        format!("  enabled events: {events}"),
        String::new(),
        "signing secret (Stripe shows it this once and will not show it again):".to_owned(),
        format!("  {}", one_line(Some(secret))),
        String::new(),
        "Put it in STRIPE_WEBHOOK_SECRET of idv-ingest. When it replaces another endpoint's \
         secret, give both, comma-separated (STRIPE_WEBHOOK_SECRET=whsec_new,whsec_old), \
         until the old endpoint is disabled or deleted."
            .to_owned(),
    ]
    .join("\n")
}

/// `--url`: https with a host and a path (ingest's `/webhook`); http only
/// for localhost, 127.0.0.1 or [::1] (a test against a local server); no
/// credentials or fragment.
fn endpoint_url(raw: &str) -> Result<String, UsageError> {
    let shown = one_line(Some(raw));
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|_| UsageError(format!("--url {shown:?} is not a URL")))?;
    let local = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" => {}
        "http" if local => {}
        _ => {
            return Err(UsageError(format!(
                "--url {shown:?}: expected https:// (Stripe delivers live events only over \
                 HTTPS); http:// only for localhost or 127.0.0.1"
            )));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UsageError(format!("--url {shown:?} names no host")));
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(UsageError(format!(
            "--url {shown:?}: expected no user, password or #fragment"
        )));
    }
    if url.path() == "/" || url.path().is_empty() {
        return Err(UsageError(format!(
            "--url {shown:?} names no path: expected ingest's webhook path, such as \
             https://idv.example.com/webhook"
        )));
    }
    Ok(url.to_string())
}

/// `--events`, checked and without repeats; all six when not given.
fn enabled_events(asked: &[String]) -> Result<Vec<String>, UsageError> {
    let six = || {
        EventType::SESSION_EVENTS
            .iter()
            .map(|t| t.as_str().to_owned())
    };
    if asked.is_empty() {
        return Ok(six().collect());
    }
    let mut events: Vec<String> = Vec::new();
    for raw in asked {
        let name = raw.trim();
        if matches!(EventType::parse(name), EventType::Other(_)) {
            return Err(UsageError(format!(
                "--events: {:?} is not one of the six Identity session events this pipeline \
                 handles: {}",
                one_line(Some(name)),
                six().collect::<Vec<_>>().join(", ")
            )));
        }
        if !events.iter().any(|e| e == name) {
            events.push(name.to_owned());
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_with_a_path() {
        for good in [
            "https://idv.example.com/webhook",
            "https://idv.example.com:8443/stripe/webhook?tenant=a",
            "http://localhost:8080/webhook",
            "http://127.0.0.1:8080/webhook",
        ] {
            assert!(endpoint_url(good).is_ok(), "{good}");
        }
        for bad in [
            "idv.example.com/webhook",
            "http://idv.example.com/webhook",
            "ftp://idv.example.com/webhook",
            "https://idv.example.com",
            "https://idv.example.com/",
            "https://user:pw@idv.example.com/webhook",
            "https://idv.example.com/webhook#x",
            "not a url",
        ] {
            assert!(endpoint_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_are_the_six_or_some_of_them() {
        assert_eq!(enabled_events(&[]).map(|e| e.len()).ok(), Some(6));
        let some = vec![
            "identity.verification_session.verified".to_owned(),
            " identity.verification_session.requires_input".to_owned(),
            "identity.verification_session.verified".to_owned(),
        ];
        assert_eq!(
            enabled_events(&some).ok(),
            Some(vec![
                "identity.verification_session.verified".to_owned(),
                "identity.verification_session.requires_input".to_owned(),
            ])
        );
        for bad in [
            "identity.verification_session.verifed",
            "*",
            "charge.succeeded",
        ] {
            assert!(enabled_events(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let created = Created {
            id: "we_1".to_owned(),
            url: None,
            enabled_events: Vec::new(),
            api_version: None,
            status: None,
            secret: Some("whsec_abc".to_owned()),
        };
        assert!(!format!("{created:?}").contains("whsec_abc"));
    }
}
