//! `idv-ingest` settings: defaults, then environment variables, checked at
//! load time so a bad value stops the service at start with a clear message.

use std::net::SocketAddr;
use std::time::Duration;

use shared::amqp_addresses::AmqpAddresses;
use shared::config::{ConfigError, Env, invalid};
use shared::signature::DEFAULT_TOLERANCE;
use shared::topology::Topology;
use shared::{SignatureVerifier, WebhookSecret};

/// Everything `idv-ingest` can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where Stripe's webhooks arrive (`INGEST_LISTEN`).
    pub listen: SocketAddr,
    /// Health and metrics, kept off the public listener (`INGEST_ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// Every valid endpoint secret; several while rotating (`STRIPE_WEBHOOK_SECRET`).
    pub verifier: SignatureVerifier,
    /// Largest body accepted; larger is 413 (`INGEST_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Body bytes the whole process holds at once for requests still being
    /// read or handled; past it, 503 (`INGEST_BODY_BUDGET_BYTES`). At
    /// least `max_body_bytes`, so one largest body always fits.
    pub body_budget_bytes: usize,
    /// How long a client may take to send its body once the head has
    /// arrived; longer is 408 (`INGEST_BODY_TIMEOUT_MS`).
    pub body_timeout: Duration,
    /// How long a connection may take to send a request's head; longer is
    /// 408 and the connection closes (`INGEST_HEAD_TIMEOUT_MS`).
    pub head_timeout: Duration,
    /// Connections each HTTP worker holds at once; past it, new ones wait
    /// in the listen backlog (`INGEST_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Connections the kernel completes and queues for the webhook
    /// listener before ingest accepts them (`INGEST_LISTEN_BACKLOG`;
    /// Linux caps it at `net.core.somaxconn`). Past it, new connections'
    /// handshakes are dropped, and some are reset before ingest ever sees
    /// them.
    pub listen_backlog: u32,
    /// How long `/readyz` says 503 after a stop signal while the webhook
    /// listener still takes requests, so a load balancer stops sending
    /// first (`INGEST_SHUTDOWN_DELAY_MS`).
    pub shutdown_delay: Duration,
    /// Bound on publish + broker confirm before answering 503 (`INGEST_PUBLISH_TIMEOUT_MS`).
    pub publish_timeout: Duration,
    /// Confirm-mode channels shared by all requests (`INGEST_PUBLISH_CHANNELS`).
    pub publish_channels: usize,
    /// HTTP worker threads (`INGEST_HTTP_WORKERS`).
    pub http_workers: usize,
    /// Broker address, or the nodes of a cluster to fail over between;
    /// holds passwords, so it is never printed (`AMQP_URL`).
    pub amqp_url: AmqpAddresses,
    /// Exchange and queue names (`AMQP_PREFIX`).
    pub topology: Topology,
    /// When set, events of the other mode are refused (`EXPECTED_LIVEMODE`).
    pub expected_livemode: Option<bool>,
}

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secrets = parse_secrets(env)?;
        let tolerance_secs = env.number_or(
            "STRIPE_WEBHOOK_TOLERANCE_SECS",
            DEFAULT_TOLERANCE.as_secs(),
            1..=86_400,
        )?;
        let expected_livemode = match env.optional("EXPECTED_LIVEMODE") {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(invalid(
                    "EXPECTED_LIVEMODE",
                    "`true` or `false`",
                    Some(other),
                ));
            }
        };
        let listen = env.parse_or(
            "INGEST_LISTEN",
            SocketAddr::from(([0, 0, 0, 0], 4242)),
            "a socket address such as 0.0.0.0:4242",
        )?;
        check_test_secret(env, &secrets, listen)?;
        let max_body_bytes = to_usize(env.number_or(
            "INGEST_MAX_BODY_BYTES",
            1024 * 1024,
            // RabbitMQ refuses messages over 16 MiB by default.
            1024..=16 * 1024 * 1024,
        )?);
        let body_budget_bytes = parse_body_budget(env, max_body_bytes)?;
        Ok(Self {
            listen,
            admin_listen: env.parse_or(
                "INGEST_ADMIN_LISTEN",
                SocketAddr::from(([127, 0, 0, 1], 9464)),
                "a socket address such as 127.0.0.1:9464",
            )?,
            verifier: SignatureVerifier::new(secrets, Duration::from_secs(tolerance_secs)),
            max_body_bytes,
            body_budget_bytes,
            // actix bounds only the head; Stripe sends the body at once.
            body_timeout: env.millis_or("INGEST_BODY_TIMEOUT_MS", 5_000, 100..=60_000)?,
            head_timeout: env.millis_or("INGEST_HEAD_TIMEOUT_MS", 3_000, 100..=60_000)?,
            max_connections: to_usize(env.number_or(
                "INGEST_MAX_CONNECTIONS",
                1_024,
                1..=65_536,
            )?),
            listen_backlog: to_u32(env.number_or("INGEST_LISTEN_BACKLOG", 1_024, 1..=65_535)?),
            shutdown_delay: env.millis_or("INGEST_SHUTDOWN_DELAY_MS", 3_000, 0..=60_000)?,
            publish_timeout: env.millis_or("INGEST_PUBLISH_TIMEOUT_MS", 5_000, 10..=60_000)?,
            // One unconfirmed publish per channel: the channels are the
            // concurrency. RabbitMQ allows 2047 channels per connection.
            publish_channels: to_usize(env.number_or("INGEST_PUBLISH_CHANNELS", 32, 1..=256)?),
            http_workers: to_usize(env.number_or("INGEST_HTTP_WORKERS", 2, 1..=256)?),
            amqp_url: shared::config::amqp_addresses(env, DEFAULT_AMQP_URL)?,
            topology: Topology::from_env(env)?,
            expected_livemode,
        })
    }
}

/// The published test secret lets anyone sign events: it is refused unless
/// the webhook listener is loopback-only or `INGEST_ALLOW_TEST_SECRET=true`.
fn check_test_secret(
    env: &Env,
    secrets: &[WebhookSecret],
    listen: SocketAddr,
) -> Result<(), ConfigError> {
    const ALLOW: &str = "INGEST_ALLOW_TEST_SECRET";
    let allowed = match env.optional(ALLOW) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(invalid(ALLOW, "`true` or `false`", Some(other))),
    };
    if allowed
        || listen.ip().is_loopback()
        || !secrets.iter().any(WebhookSecret::is_published_test_secret)
    {
        return Ok(());
    }
    Err(invalid(
        "STRIPE_WEBHOOK_SECRET",
        &format!(
            "a secret other than the published test secret `{}` while INGEST_LISTEN \
             ({listen}) is not loopback; listen on 127.0.0.1 or set {ALLOW}=true",
            shared::signature::PUBLISHED_TEST_SECRET
        ),
        None,
    ))
}

/// `INGEST_BODY_BUDGET_BYTES`: 1 MiB to 4 GiB, and at least
/// `INGEST_MAX_BODY_BYTES`, or the largest body could never be read.
fn parse_body_budget(env: &Env, max_body_bytes: usize) -> Result<usize, ConfigError> {
    const VAR: &str = "INGEST_BODY_BUDGET_BYTES";
    let budget =
        to_usize(env.number_or(VAR, 64 * 1024 * 1024, 1024 * 1024..=4 * 1024 * 1024 * 1024)?);
    if budget < max_body_bytes {
        return Err(invalid(
            VAR,
            &format!("at least INGEST_MAX_BODY_BYTES ({max_body_bytes})"),
            env.optional(VAR),
        ));
    }
    Ok(budget)
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// A number already checked against a range within `u32`.
fn to_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// `STRIPE_WEBHOOK_SECRET`: one or more `whsec_…` values, comma-separated.
fn parse_secrets(env: &Env) -> Result<Vec<WebhookSecret>, ConfigError> {
    const VAR: &str = "STRIPE_WEBHOOK_SECRET";
    const EXPECTED: &str =
        "one or more Stripe webhook secrets starting with `whsec_`, comma-separated";
    let raw = env
        .optional(VAR)
        .ok_or_else(|| invalid(VAR, EXPECTED, None))?;
    raw.split(',')
        .map(|one| WebhookSecret::parse(one).map_err(|_| invalid(VAR, EXPECTED, None)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn defaults_apply_when_only_the_secret_is_set() {
        let settings = Settings::from_env(&env(&[("STRIPE_WEBHOOK_SECRET", "whsec_a")])).unwrap();
        assert_eq!(settings.listen.to_string(), "0.0.0.0:4242");
        assert_eq!(settings.admin_listen.to_string(), "127.0.0.1:9464");
        assert_eq!(settings.max_body_bytes, 1024 * 1024);
        assert_eq!(settings.body_timeout, Duration::from_secs(5));
        assert_eq!(settings.head_timeout, Duration::from_secs(3));
        assert_eq!(settings.max_connections, 1024);
        assert_eq!(settings.listen_backlog, 1024);
        assert_eq!(settings.body_budget_bytes, 64 * 1024 * 1024);
        assert_eq!(settings.shutdown_delay, Duration::from_secs(3));
        assert_eq!(settings.publish_timeout, Duration::from_secs(5));
        assert_eq!(settings.publish_channels, 32);
        assert_eq!(settings.expected_livemode, None);
        assert_eq!(settings.topology.events_exchange(), "stripe.events");
    }

    #[test]
    fn the_secret_is_required_and_never_echoed() {
        let error = Settings::from_env(&env(&[])).unwrap_err();
        assert_eq!(error.variable, "STRIPE_WEBHOOK_SECRET");
        let error = Settings::from_env(&env(&[("STRIPE_WEBHOOK_SECRET", "whsec_a,sk_live_oops")]))
            .unwrap_err();
        assert_eq!(error.variable, "STRIPE_WEBHOOK_SECRET");
        assert!(!error.to_string().contains("sk_live_oops"));
    }

    #[test]
    fn a_bad_amqp_url_is_named_but_not_echoed() {
        let error = Settings::from_env(&env(&[
            ("STRIPE_WEBHOOK_SECRET", "whsec_a"),
            ("AMQP_URL", "amqp//user:hunter2@host"),
        ]))
        .unwrap_err();
        assert_eq!(error.variable, "AMQP_URL");
        assert!(!error.to_string().contains("hunter2"));
    }

    #[test]
    fn the_listen_backlog_is_a_setting_within_its_range() {
        let settings = Settings::from_env(&env(&[
            ("STRIPE_WEBHOOK_SECRET", "whsec_a"),
            ("INGEST_LISTEN_BACKLOG", "4096"),
        ]))
        .unwrap();
        assert_eq!(settings.listen_backlog, 4096);
        for bad in ["0", "65536", "many"] {
            let error = Settings::from_env(&env(&[
                ("STRIPE_WEBHOOK_SECRET", "whsec_a"),
                ("INGEST_LISTEN_BACKLOG", bad),
            ]))
            .unwrap_err();
            assert_eq!(error.variable, "INGEST_LISTEN_BACKLOG");
            assert!(error.to_string().contains("1 to 65535"), "{error}");
        }
    }

    #[test]
    fn the_body_timeout_is_a_setting_in_milliseconds_within_its_range() {
        let settings = Settings::from_env(&env(&[
            ("STRIPE_WEBHOOK_SECRET", "whsec_a"),
            ("INGEST_BODY_TIMEOUT_MS", "500"),
        ]))
        .unwrap();
        assert_eq!(settings.body_timeout, Duration::from_millis(500));
        let error = Settings::from_env(&env(&[
            ("STRIPE_WEBHOOK_SECRET", "whsec_a"),
            ("INGEST_BODY_TIMEOUT_MS", "60001"),
        ]))
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid INGEST_BODY_TIMEOUT_MS: expected a whole number from 100 to 60000, found \"60001\""
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (variable, value) in [
            ("INGEST_LISTEN", "localhost"),
            ("EXPECTED_LIVEMODE", "yes"),
            ("INGEST_PUBLISH_TIMEOUT_MS", "0"),
            ("AMQP_PREFIX", "a b"),
            ("AMQP_URL", "http://nope"),
            ("INGEST_MAX_BODY_BYTES", "67108864"),
            ("INGEST_BODY_TIMEOUT_MS", "99"),
            ("INGEST_BODY_TIMEOUT_MS", "60001"),
            ("INGEST_BODY_TIMEOUT_MS", "10s"),
            ("INGEST_HEAD_TIMEOUT_MS", "99"),
            ("INGEST_MAX_CONNECTIONS", "0"),
            ("INGEST_MAX_CONNECTIONS", "65537"),
            ("INGEST_PUBLISH_CHANNELS", "0"),
            ("INGEST_PUBLISH_CHANNELS", "257"),
            ("INGEST_BODY_BUDGET_BYTES", "1048575"),
            ("INGEST_BODY_BUDGET_BYTES", "4294967297"),
            ("INGEST_SHUTDOWN_DELAY_MS", "60001"),
            ("INGEST_ALLOW_TEST_SECRET", "yes"),
        ] {
            let error = Settings::from_env(&env(&[
                ("STRIPE_WEBHOOK_SECRET", "whsec_a"),
                (variable, value),
            ]))
            .unwrap_err();
            assert_eq!(error.variable, variable);
        }
    }

    #[test]
    fn the_body_budget_holds_at_least_the_largest_body() {
        let with = |pairs: &[(&str, &str)]| {
            let mut all = vec![("STRIPE_WEBHOOK_SECRET", "whsec_a")];
            all.extend_from_slice(pairs);
            Settings::from_env(&env(&all))
        };
        let error = with(&[
            ("INGEST_MAX_BODY_BYTES", "4194304"),
            ("INGEST_BODY_BUDGET_BYTES", "2097152"),
        ])
        .unwrap_err();
        assert_eq!(error.variable, "INGEST_BODY_BUDGET_BYTES");
        assert!(
            error
                .to_string()
                .contains("INGEST_MAX_BODY_BYTES (4194304)"),
            "{error}"
        );
        let settings = with(&[
            ("INGEST_MAX_BODY_BYTES", "4194304"),
            ("INGEST_BODY_BUDGET_BYTES", "4194304"),
        ])
        .unwrap();
        assert_eq!(settings.body_budget_bytes, 4 * 1024 * 1024);
        // The default budget is checked against the limit too.
        let settings = with(&[("INGEST_MAX_BODY_BYTES", "16777216")]).unwrap();
        assert_eq!(settings.body_budget_bytes, 64 * 1024 * 1024);
        let settings = with(&[("INGEST_BODY_BUDGET_BYTES", "4294967296")]).unwrap();
        assert_eq!(settings.body_budget_bytes, 4 * 1024 * 1024 * 1024);
    }

    #[test]
    fn the_published_test_secret_is_refused_unless_loopback_only_or_allowed() {
        let with = |pairs: &[(&str, &str)]| {
            let mut all = vec![("STRIPE_WEBHOOK_SECRET", "whsec_real,whsec_test_secret")];
            all.extend_from_slice(pairs);
            Settings::from_env(&env(&all))
        };
        for public in ["0.0.0.0:4242", "[::]:4242", "192.0.2.1:4242"] {
            let error = with(&[("INGEST_LISTEN", public)]).unwrap_err();
            assert_eq!(error.variable, "STRIPE_WEBHOOK_SECRET", "{public}");
            let text = error.to_string();
            assert!(text.contains("INGEST_ALLOW_TEST_SECRET=true"), "{text}");
            assert!(!text.contains("whsec_real"), "{text}");
        }
        // The default listener is public.
        assert!(with(&[]).is_err());
        for loopback in ["127.0.0.1:4242", "127.0.0.2:0", "[::1]:4242"] {
            assert!(with(&[("INGEST_LISTEN", loopback)]).is_ok(), "{loopback}");
        }
        assert!(with(&[("INGEST_ALLOW_TEST_SECRET", "true")]).is_ok());
        assert!(with(&[("INGEST_ALLOW_TEST_SECRET", "false")]).is_err());
        // Any other secret may listen anywhere.
        assert!(Settings::from_env(&env(&[("STRIPE_WEBHOOK_SECRET", "whsec_real")])).is_ok());
    }
}
