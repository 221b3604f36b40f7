//! The worker's settings: defaults, then environment variables, checked at
//! load time (including that concurrency, prefetch and the pool agree). A bad
//! value names its variable and what was expected.

use std::net::SocketAddr;
use std::str::FromStr as _;
use std::time::Duration;

use secrecy::SecretString;
use shared::amqp_addresses::AmqpAddresses;
use shared::config::{ConfigError, Env, invalid};
use shared::telemetry::LogFormat;
use shared::topology::{RETRY_DELAYS, Topology};

use crate::policy::Policy;
use crate::subject_key::SubjectKeyPrecedence;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/idv";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Everything `idv-worker` reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DATABASE_URL`: may carry a password.
    pub database_url: SecretString,
    /// `DATABASE_POOL_SIZE`: at least one connection per consumer.
    pub pool_size: usize,
    /// `AMQP_URL`: the broker's address, or its cluster nodes' to fail
    /// over between; may carry passwords.
    pub amqp_url: AmqpAddresses,
    /// `AMQP_PREFIX`: names of the exchanges and queues.
    pub topology: Topology,
    /// `WORKER_CONSUMERS`: lanes fed by the worker's one consumer (by the
    /// key an event names, so lanes seldom wait on each other's rows), each processing
    /// one batch (one pooled connection) at a time.
    pub consumers: usize,
    /// `WORKER_BATCH_SIZE`: deliveries applied in one transaction.
    pub batch_size: usize,
    /// `WORKER_BATCH_LINGER_MS`: how long a batch waits to fill once started.
    pub batch_linger: Duration,
    /// `WORKER_PREFETCH`: unacked deliveries per lane (≥ batch size, so the
    /// next batch is on its way while one commits); the channel's prefetch
    /// is this times `WORKER_CONSUMERS`.
    pub prefetch: u16,
    /// `WORKER_RETRY_DELAYS`: delay of each retry of a failing message; one
    /// retry queue each, each at most that queue's TTL. Then the DLQ.
    pub retry_delays: Vec<Duration>,
    /// `WORKER_ADMIN_LISTEN`: `/healthz`, `/readyz`, `/metrics`.
    pub admin_listen: SocketAddr,
    /// `WORKER_DLQ_DRAIN` (`on`, the default, or `off`): a consuming
    /// worker drains the DLQ into the `dead_letters` table (see
    /// [`crate::dead_letter`]); `off` leaves dead letters in the queue.
    pub dlq_drain: bool,
    /// `IDV_MAX_FAILED_ATTEMPTS`: failed submissions before manual review.
    pub max_failed_attempts: i32,
    /// `IDV_SUBJECT_KEY`: where the subject key comes from.
    pub subject_key: SubjectKeyPrecedence,
    /// `IDV_CODE_POLICY`: overrides of the code policy table.
    pub policy: Policy,
    /// The dispatcher, and the actions this deployment performs.
    pub dispatch: crate::dispatch::DispatchSettings,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        // Defaults, measured with `bench_worker` on two cores: a batch costs
        // five round trips and one commit whatever its size, so 64 events
        // a batch amortise them (bursts fill batches to ~40-50 events per
        // commit); a 2 ms linger caps what waiting for a batch adds at low
        // rates, where each lane applies what it has at once. Four lanes
        // keep PostgreSQL busy while each waits on its round trips; 2 or 4
        // lanes measured alike within the noise of a shared machine.
        let consumers = to_usize(env.number_or("WORKER_CONSUMERS", 4, 1..=256)?);
        let pool_size = to_usize(env.number_or(
            "DATABASE_POOL_SIZE",
            u64::try_from(consumers).unwrap_or(u64::MAX),
            1..=1024,
        )?);
        if pool_size < consumers {
            return Err(invalid(
                "DATABASE_POOL_SIZE",
                &format!(
                    "at least WORKER_CONSUMERS ({consumers}): each consumer holds one connection"
                ),
                Some(&pool_size.to_string()),
            ));
        }
        let batch_size = to_usize(env.number_or("WORKER_BATCH_SIZE", 64, 1..=1000)?);
        let default_prefetch = u64::try_from(batch_size * 2).unwrap_or(u64::MAX);
        let prefetch = env.number_or("WORKER_PREFETCH", default_prefetch, 1..=65_535)?;
        let prefetch = u16::try_from(prefetch).unwrap_or(u16::MAX);
        if usize::from(prefetch) < batch_size {
            return Err(invalid(
                "WORKER_PREFETCH",
                &format!("at least WORKER_BATCH_SIZE ({batch_size})"),
                Some(&prefetch.to_string()),
            ));
        }
        shared::telemetry::check_filter(env)?;
        Ok(Self {
            database_url: database_url(env)?,
            pool_size,
            amqp_url: shared::config::amqp_addresses(env, DEFAULT_AMQP_URL)?,
            topology: Topology::from_env(env)?,
            consumers,
            batch_size,
            batch_linger: env.millis_or("WORKER_BATCH_LINGER_MS", 2, 0..=1000)?,
            prefetch,
            retry_delays: retry_delays(env.optional("WORKER_RETRY_DELAYS"))?,
            admin_listen: env.parse_or(
                "WORKER_ADMIN_LISTEN",
                SocketAddr::from(([127, 0, 0, 1], 9465)),
                "a socket address such as 127.0.0.1:9465",
            )?,
            dlq_drain: match env.optional("WORKER_DLQ_DRAIN") {
                None | Some("on") => true,
                Some("off") => false,
                Some(other) => {
                    return Err(invalid("WORKER_DLQ_DRAIN", "`on` or `off`", Some(other)));
                }
            },
            max_failed_attempts: i32::try_from(env.number_or(
                "IDV_MAX_FAILED_ATTEMPTS",
                3,
                1..=1000,
            )?)
            .unwrap_or(i32::MAX),
            subject_key: SubjectKeyPrecedence::parse(
                "IDV_SUBJECT_KEY",
                env.optional("IDV_SUBJECT_KEY"),
            )?,
            policy: Policy::with_overrides("IDV_CODE_POLICY", env.optional("IDV_CODE_POLICY"))?,
            dispatch: crate::dispatch::DispatchSettings::from_env(env)?,
            log_format: LogFormat::from_env(env)?,
        })
    }
}

/// `DATABASE_URL`, checked now so a typo stops start-up with exit code 2
/// (for `idvctl` too). The value may hold a password, so it is never echoed.
pub fn database_url(env: &Env) -> Result<SecretString, ConfigError> {
    const VAR: &str = "DATABASE_URL";
    let raw = env.string_or(VAR, DEFAULT_DATABASE_URL);
    match tokio_postgres::Config::from_str(&raw) {
        Ok(_) => Ok(raw.into()),
        Err(_) => Err(invalid(
            VAR,
            "a PostgreSQL URL such as postgres://user:password@host:5432/idv",
            None,
        )),
    }
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

const RETRY_DELAYS_VAR: &str = "WORKER_RETRY_DELAYS";

/// Parses `5s,30s,5m`-style delays: at most one per retry queue, each within
/// its queue's TTL (the per-message expiration can only shorten it).
fn retry_delays(raw: Option<&str>) -> Result<Vec<Duration>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(RETRY_DELAYS.to_vec());
    };
    let expected = format!(
        "up to {} comma-separated durations (e.g. 5s,30s,5m or 200ms), each at most {:?}",
        RETRY_DELAYS.len(),
        RETRY_DELAYS
    );
    let delays = raw
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            parse_duration(part).ok_or_else(|| invalid(RETRY_DELAYS_VAR, &expected, Some(part)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let within_ttl = delays.len() <= RETRY_DELAYS.len()
        && delays
            .iter()
            .zip(RETRY_DELAYS)
            .all(|(delay, ttl)| *delay <= ttl);
    if within_ttl {
        Ok(delays)
    } else {
        Err(invalid(RETRY_DELAYS_VAR, &expected, Some(raw)))
    }
}

/// `250ms`, `5s`, `5m`.
fn parse_duration(raw: &str) -> Option<Duration> {
    let (number, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit())?);
    let number: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(number)),
        "s" => Some(Duration::from_secs(number)),
        "m" => Some(Duration::from_secs(number.checked_mul(60)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_agree_with_each_other() {
        let settings = Settings::from_env(&Env::default()).unwrap();
        assert_eq!(settings.consumers, 4);
        assert_eq!(settings.pool_size, 4);
        assert_eq!(settings.prefetch, 128);
        assert_eq!(settings.retry_delays, RETRY_DELAYS.to_vec());
        assert_eq!(settings.max_failed_attempts, 3);
        assert_eq!(settings.admin_listen.port(), 9465);
        assert!(settings.dlq_drain);
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (variable, value) in [
            ("WORKER_CONSUMERS", "0"),
            ("DATABASE_POOL_SIZE", "2"),
            ("WORKER_PREFETCH", "10"),
            ("WORKER_RETRY_DELAYS", "10m"),
            ("WORKER_RETRY_DELAYS", "1s,1s,1s,1s"),
            ("WORKER_RETRY_DELAYS", "soon"),
            ("WORKER_ADMIN_LISTEN", "localhost"),
            ("WORKER_DLQ_DRAIN", "yes"),
            ("IDV_MAX_FAILED_ATTEMPTS", "0"),
            ("IDV_EXPECTED_MATCHING", "yes"),
            ("AMQP_PREFIX", "a b"),
            ("DATABASE_URL", "postgres://u@host:port/idv"),
            ("DATABASE_URL", "mysql://u@host/idv"),
            ("AMQP_URL", "http://guest@host"),
            ("RUST_LOG", "info,lapin=loud"),
        ] {
            let env = Env::from_pairs([(variable, value)]);
            let error = Settings::from_env(&env).unwrap_err();
            assert_eq!(error.variable, variable, "{value}");
        }
    }

    #[test]
    fn urls_are_checked_but_never_echoed() {
        for (variable, value) in [
            ("DATABASE_URL", "postgres://u:hunter2@host:port/idv"),
            ("AMQP_URL", "amqp://u:hunter2@host:port/%2f"),
        ] {
            let error = Settings::from_env(&Env::from_pairs([(variable, value)])).unwrap_err();
            assert_eq!(error.variable, variable);
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn retry_delays_may_be_shortened_for_tests() {
        let env = Env::from_pairs([("WORKER_RETRY_DELAYS", "200ms, 1s")]);
        let settings = Settings::from_env(&env).unwrap();
        assert_eq!(
            settings.retry_delays,
            [Duration::from_millis(200), Duration::from_secs(1)]
        );
    }
}
