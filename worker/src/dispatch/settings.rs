//! The dispatcher's settings: how it claims and retries rows, and which
//! actions this deployment performs (an action whose settings are absent
//! gets no outbox rows).

use std::time::Duration;

use secrecy::SecretString;
use shared::config::{ConfigError, Env, invalid};

use crate::domain::outbox::Sinks;

/// Stripe's API, for cancels and verified outputs.
pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";

/// What this process runs (`WORKER_ROLE`, or `idv-worker --dispatcher-only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The consumer and the dispatcher (the default).
    All,
    /// Only the consumer: the dispatcher runs elsewhere.
    Consumer,
    /// Only the dispatcher, scaled apart from the consumers.
    Dispatcher,
}

impl Role {
    pub fn consumes(self) -> bool {
        self != Self::Dispatcher
    }

    pub fn dispatches(self) -> bool {
        self != Self::Consumer
    }
}

/// `OUTCOME_WEBHOOK_URL` and its secret.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: String,
    /// `OUTCOME_WEBHOOK_SECRET`: signs each POST (HMAC-SHA256).
    pub secret: SecretString,
}

/// `SMTP_URL` and the e-mails' settings.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// `SMTP_URL`: `smtp://host:port` (plain, tests), `smtp://...?tls=required`
    /// (STARTTLS) or `smtps://` (TLS); may carry a password.
    pub smtp_url: SecretString,
    /// `EMAIL_FROM`.
    pub from: String,
    /// `EMAIL_TEMPLATES_DIR`: overrides of the built-in templates.
    pub templates_dir: Option<std::path::PathBuf>,
}

/// `STRIPE_API_KEY` and `STRIPE_API_BASE`.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    pub api_key: SecretString,
    pub api_base: String,
}

#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub role: Role,
    /// `DISPATCH_BATCH_SIZE`: rows claimed at once.
    pub batch_size: i64,
    /// `DISPATCH_POLL_MS`: how often an idle dispatcher looks for due rows.
    pub poll: Duration,
    /// `DISPATCH_LEASE_SECS`: how long a claim lasts; a row whose dispatcher
    /// died is claimed again after it. Every action is cut off at half of it.
    pub lease: Duration,
    /// `DISPATCH_MAX_ATTEMPTS`: attempts before a row is `failed`.
    pub max_attempts: i32,
    /// `DISPATCH_BACKOFF_MIN_MS` and `DISPATCH_BACKOFF_MAX_SECS`: the first
    /// retry's delay, doubling (with jitter) up to the most.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// `DISPATCH_HTTP_TIMEOUT_MS`: each HTTP request (webhook, Stripe).
    pub http_timeout: Duration,
    pub webhook: Option<WebhookSettings>,
    pub email: Option<EmailSettings>,
    pub stripe: Option<StripeSettings>,
    /// `IDV_EXPECTED_MATCHING=on`: compare verified outputs with
    /// `expected_identity` (needs `STRIPE_API_KEY`).
    pub expected_matching: bool,
}

impl DispatchSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        // Every action is cut off at half the lease; an e-mail conversation
        // takes up to 10 s and a mark up to the pool's wait, so 30 s at least.
        let lease = env.secs_or("DISPATCH_LEASE_SECS", 60, 30..=3600)?;
        let http_timeout = env.millis_or("DISPATCH_HTTP_TIMEOUT_MS", 10_000, 100..=600_000)?;
        if http_timeout * 3 > lease {
            return Err(invalid(
                "DISPATCH_HTTP_TIMEOUT_MS",
                "at most a third of DISPATCH_LEASE_SECS, so that no claim runs out while its action runs",
                Some(&http_timeout.as_millis().to_string()),
            ));
        }
        for (alone, needs) in [
            ("OUTCOME_WEBHOOK_SECRET", "OUTCOME_WEBHOOK_URL"),
            ("EMAIL_FROM", "SMTP_URL"),
            ("EMAIL_TEMPLATES_DIR", "SMTP_URL"),
            ("STRIPE_API_BASE", "STRIPE_API_KEY"),
        ] {
            if env.optional(alone).is_some() && env.optional(needs).is_none() {
                return Err(invalid(
                    alone,
                    &format!("unset unless {needs} is set too (alone it would be ignored)"),
                    None,
                ));
            }
        }
        let stripe = match env.optional("STRIPE_API_KEY") {
            None => None,
            Some(key) => Some(StripeSettings {
                api_key: key.to_owned().into(),
                api_base: url(env, "STRIPE_API_BASE", DEFAULT_STRIPE_API_BASE)?,
            }),
        };
        let expected_matching = on_off(env, "IDV_EXPECTED_MATCHING")?;
        if expected_matching && stripe.is_none() {
            return Err(invalid(
                "IDV_EXPECTED_MATCHING",
                "`off` unless STRIPE_API_KEY is set (the verified outputs come from Stripe's API)",
                Some("on"),
            ));
        }
        Ok(Self {
            role: role(env)?,
            batch_size: i64::try_from(env.number_or("DISPATCH_BATCH_SIZE", 16, 1..=1000)?)
                .unwrap_or(16),
            poll: env.millis_or("DISPATCH_POLL_MS", 200, 10..=60_000)?,
            lease,
            max_attempts: i32::try_from(env.number_or("DISPATCH_MAX_ATTEMPTS", 10, 1..=1000)?)
                .unwrap_or(10),
            backoff_min: env.millis_or("DISPATCH_BACKOFF_MIN_MS", 1000, 1..=3_600_000)?,
            backoff_max: env.secs_or("DISPATCH_BACKOFF_MAX_SECS", 600, 1..=86_400)?,
            http_timeout,
            webhook: webhook(env)?,
            email: email(env)?,
            stripe,
            expected_matching,
        })
    }

    /// The actions configured, so the outbox rows the worker writes.
    pub fn sinks(&self) -> Sinks {
        Sinks {
            webhook: self.webhook.is_some(),
            email: self.email.is_some(),
            stripe_cancel: self.stripe.is_some(),
            expected_matching: self.expected_matching,
        }
    }
}

fn role(env: &Env) -> Result<Role, ConfigError> {
    match env.optional("WORKER_ROLE") {
        None | Some("all") => Ok(Role::All),
        Some("consumer") => Ok(Role::Consumer),
        Some("dispatcher") => Ok(Role::Dispatcher),
        Some(other) => Err(invalid(
            "WORKER_ROLE",
            "`all`, `consumer` or `dispatcher`",
            Some(other),
        )),
    }
}

fn on_off(env: &Env, name: &str) -> Result<bool, ConfigError> {
    match env.optional(name) {
        None | Some("off") => Ok(false),
        Some("on") => Ok(true),
        Some(other) => Err(invalid(name, "`on` or `off`", Some(other))),
    }
}

/// An `http://` or `https://` URL (never echoed: it may carry a token).
fn url(env: &Env, name: &str, default: &str) -> Result<String, ConfigError> {
    let raw = env.string_or(name, default);
    let scheme_ok = raw.starts_with("https://") || raw.starts_with("http://");
    let host = raw.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    if scheme_ok && !host.is_empty() && !raw.chars().any(char::is_whitespace) {
        Ok(raw.trim_end_matches('/').to_owned())
    } else {
        Err(invalid(name, "an http:// or https:// URL", None))
    }
}

fn webhook(env: &Env) -> Result<Option<WebhookSettings>, ConfigError> {
    if env.optional("OUTCOME_WEBHOOK_URL").is_none() {
        return Ok(None);
    }
    let url = url(env, "OUTCOME_WEBHOOK_URL", "")?;
    let secret = env.optional("OUTCOME_WEBHOOK_SECRET").unwrap_or("");
    if secret.len() < 16 {
        return Err(invalid(
            "OUTCOME_WEBHOOK_SECRET",
            "a secret of at least 16 characters whenever OUTCOME_WEBHOOK_URL is set",
            None,
        ));
    }
    Ok(Some(WebhookSettings {
        url,
        secret: secret.to_owned().into(),
    }))
}

fn email(env: &Env) -> Result<Option<EmailSettings>, ConfigError> {
    let Some(smtp_url) = env.optional("SMTP_URL") else {
        return Ok(None);
    };
    if !(smtp_url.starts_with("smtp://") || smtp_url.starts_with("smtps://")) {
        return Err(invalid(
            "SMTP_URL",
            "an smtp:// or smtps:// URL such as smtp://127.0.0.1:2525",
            None,
        ));
    }
    let from = env.optional("EMAIL_FROM").unwrap_or("");
    if !from.contains('@') {
        return Err(invalid(
            "EMAIL_FROM",
            "the sender's address, such as Identity <identity@example.com>, whenever SMTP_URL is set",
            Some(from),
        ));
    }
    Ok(Some(EmailSettings {
        smtp_url: smtp_url.to_owned().into(),
        from: from.to_owned(),
        templates_dir: env.optional("EMAIL_TEMPLATES_DIR").map(Into::into),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_configure_the_outcome_message_only() {
        let settings = DispatchSettings::from_env(&Env::default()).unwrap();
        assert_eq!(settings.role, Role::All);
        assert_eq!(settings.sinks(), Sinks::default());
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for pairs in [
            vec![("WORKER_ROLE", "both")],
            vec![("DISPATCH_LEASE_SECS", "10")],
            vec![("DISPATCH_HTTP_TIMEOUT_MS", "30000")],
            vec![("OUTCOME_WEBHOOK_SECRET", "0123456789abcdef")],
            vec![("EMAIL_FROM", "identity@example.com")],
            vec![("STRIPE_API_BASE", "http://127.0.0.1:1")],
            vec![("IDV_EXPECTED_MATCHING", "yes")],
            vec![("IDV_EXPECTED_MATCHING", "on")],
            vec![("OUTCOME_WEBHOOK_URL", "ftp://x")],
            vec![("OUTCOME_WEBHOOK_URL", "https://x.example/hook")],
            vec![("SMTP_URL", "mail.example:25")],
            vec![("SMTP_URL", "smtp://127.0.0.1:25")],
            vec![
                ("STRIPE_API_KEY", "sk_test_x"),
                ("STRIPE_API_BASE", "localhost"),
            ],
        ] {
            let expected = match pairs.last().map(|p| p.0) {
                Some("OUTCOME_WEBHOOK_URL") if pairs[0].1.starts_with("https") => {
                    "OUTCOME_WEBHOOK_SECRET"
                }
                Some("SMTP_URL") if pairs[0].1.starts_with("smtp://") => "EMAIL_FROM",
                Some(name) => name,
                None => unreachable!(),
            };
            let error = DispatchSettings::from_env(&Env::from_pairs(pairs.clone())).unwrap_err();
            assert_eq!(error.variable, expected, "{pairs:?}");
        }
    }

    #[test]
    fn configured_sinks_get_rows() {
        let env = Env::from_pairs([
            ("OUTCOME_WEBHOOK_URL", "http://127.0.0.1:1/hook"),
            ("OUTCOME_WEBHOOK_SECRET", "0123456789abcdef"),
            ("SMTP_URL", "smtp://127.0.0.1:2525"),
            ("EMAIL_FROM", "identity@example.com"),
            ("STRIPE_API_KEY", "sk_test_123"),
            ("IDV_EXPECTED_MATCHING", "on"),
        ]);
        let settings = DispatchSettings::from_env(&env).unwrap();
        let sinks = settings.sinks();
        assert!(sinks.webhook && sinks.email && sinks.stripe_cancel && sinks.expected_matching);
    }
}
