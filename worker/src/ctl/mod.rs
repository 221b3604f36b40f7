//! `idvctl`: the operator's commands, apart from argument parsing so they
//! can be tested. Each returns the text to print or an error to report.

use anyhow::Context as _;
use secrecy::SecretString;
use shared::config::{ConfigError, Env};
use shared::topology::Topology;
use tokio_postgres::NoTls;

pub mod dlq;
pub mod events;
mod outbox;
pub mod prune;
pub mod rate;
mod record;
pub mod register;
pub mod republish;
pub mod resync;
pub mod scenario;
pub mod since;
pub mod stripe_api;
pub mod terminal;
pub mod test_event;
pub mod text;

pub use outbox::{
    MAX_LIST_LIMIT, RetryTarget, allowed_kinds, allowed_statuses, outbox_list, outbox_retry,
};
pub use record::{session_show, subject_show};

use crate::settings::{DEFAULT_AMQP_URL, database_url};

/// The settings `idvctl` reads (a subset of the worker's), all checked at
/// load whatever the command, so a bad one is exit code 2 and names itself.
#[derive(Debug, Clone)]
pub struct CtlSettings {
    /// `DATABASE_URL`: may carry a password.
    pub database_url: SecretString,
    /// `AMQP_URL`: the broker's address, or its cluster nodes'; may carry
    /// passwords.
    pub amqp_url: shared::amqp_addresses::AmqpAddresses,
    /// `AMQP_PREFIX`: the names `idvctl topology` declares.
    pub topology: Topology,
    /// `IDV_MAX_FAILED_ATTEMPTS`: shown as `max_attempts` beside a subject.
    pub max_failed_attempts: i32,
}

impl CtlSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        shared::telemetry::check_filter(env)?;
        Ok(Self {
            database_url: database_url(env)?,
            amqp_url: shared::config::amqp_addresses(env, DEFAULT_AMQP_URL)?,
            topology: Topology::from_env(env)?,
            max_failed_attempts: i32::try_from(env.number_or(
                "IDV_MAX_FAILED_ATTEMPTS",
                3,
                1..=1000,
            )?)
            .unwrap_or(i32::MAX),
        })
    }
}

/// A problem with what the operator asked for (exit code 2), as opposed to
/// a failure to do it (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub async fn migrate(settings: &CtlSettings) -> anyhow::Result<String> {
    let applied = crate::migrate::migrate(&settings.database_url).await?;
    Ok(if applied.is_empty() {
        "schema up to date; no migration applied".to_owned()
    } else {
        format!("applied: {}", applied.join(", "))
    })
}

pub async fn topology(settings: &CtlSettings) -> anyhow::Result<String> {
    shared::topology::declare_at(&settings.amqp_url, &settings.topology)
        .await
        .context("connecting to the broker (AMQP_URL) and declaring the topology")?;
    let t = &settings.topology;
    Ok(format!(
        "declared exchange {} (alternate {}), queues {}, {}, {}, and the retry queues",
        t.events_exchange(),
        t.unrouted_exchange(),
        t.events_queue(),
        t.dead_letter_queue(),
        t.unrouted_queue()
    ))
}

pub(crate) async fn client(settings: &CtlSettings) -> anyhow::Result<tokio_postgres::Client> {
    let config = crate::store::pg_config(&settings.database_url)?;
    let (client, connection) = config
        .connect(NoTls)
        .await
        .context("connecting to the database (DATABASE_URL)")?;
    tokio::spawn(connection);
    Ok(client)
}
