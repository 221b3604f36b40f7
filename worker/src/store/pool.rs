//! The connection pool. Its size bounds the worker's concurrency; deadpool
//! never fails to create a pool, so [`connect_pool`] takes one connection to
//! fail fast at start-up.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::NoTls;

/// How long to wait for a free or a new connection before calling the
/// database unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// tokio-postgres's default keepalive idle time (the kernel's usual one).
const KERNEL_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);
/// Idle time before the first keepalive probe, the gap between probes, and
/// how many unanswered probes close the connection (30 + 3 × 10 s).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;

/// Parses `url` (checked, never logged) into a driver configuration.
pub fn pg_config(url: &SecretString) -> anyhow::Result<tokio_postgres::Config> {
    let mut config = tokio_postgres::Config::from_str(url.expose_secret()).map_err(|_| {
        anyhow::anyhow!("invalid DATABASE_URL: expected postgres://user@host:port/database")
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("idv-worker");
    // TCP keepalives, unless DATABASE_URL sets its own: a connection whose
    // peer vanished (a host gone, a NAT or firewall that dropped the flow)
    // fails within about a minute instead of the kernel's two hours, so a
    // batch waiting on it is retried as an infrastructure failure. A server
    // that is alive but does not answer still acknowledges the probes: that
    // case is bounded by the checks that drop a connection that timed out.
    if config.get_keepalives() && config.get_keepalives_idle() == KERNEL_KEEPALIVE_IDLE {
        config.keepalives_idle(KEEPALIVE_IDLE);
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(KEEPALIVE_INTERVAL);
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(KEEPALIVE_RETRIES);
        }
    }
    Ok(config)
}

/// A pool of `size` connections, with one taken and returned.
pub async fn connect_pool(url: &SecretString, size: usize) -> anyhow::Result<Pool> {
    let pool = lazy_pool(url, size)?;
    drop(
        pool.get()
            .await
            .context("connecting to the database (DATABASE_URL)")?,
    );
    Ok(pool)
}

/// A pool of `size` connections that connects on first use: for a task
/// that may never need one (the dead-letter drain of a worker that never
/// gets to consume), once [`connect_pool`] has checked `url`.
pub fn lazy_pool(url: &SecretString, size: usize) -> anyhow::Result<Pool> {
    let manager = Manager::from_config(
        pg_config(url)?,
        NoTls,
        ManagerConfig {
            // A quick `is_closed` check: a dead connection fails its next
            // query, which is retried as an infrastructure failure.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(CONNECT_TIMEOUT),
            create: Some(CONNECT_TIMEOUT),
            recycle: Some(CONNECT_TIMEOUT),
        })
        .build()
        .context("building the database pool")?;
    Ok(pool)
}
