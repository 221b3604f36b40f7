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
    plan_each_execution(&mut config);
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

/// The server option that has PostgreSQL plan each execution of a prepared
/// statement for its parameters and the tables as they are then.
const CUSTOM_PLANS: &str = "-c plan_cache_mode=force_custom_plan";

/// Adds [`CUSTOM_PLANS`] to the connection's server options, unless
/// `DATABASE_URL`'s `options` set `plan_cache_mode` themselves.
///
/// Why: the worker prepares its statements once per connection, and
/// PostgreSQL switches a prepared statement to a generic plan on its sixth
/// execution, planned for the table sizes of that moment. On a new
/// database those are empty tables, and the generic plans were sequential
/// scans that test `= ANY($1)` row by row; they stayed until autovacuum's
/// next ANALYZE of each table (a minute or more away). Measured with
/// `bench_worker` on fresh databases: PostgreSQL's CPU per event in a
/// burst 150–185 µs with them, 81 µs with a plan per execution, and the
/// burst rate 6.4k → 10.4k events/s. A plan per execution costs a
/// statement's planning each time, a few per batch, not per event.
/// (Behind PgBouncer in transaction mode, which refuses unknown startup
/// options, set it on the role instead: `ALTER ROLE … SET plan_cache_mode
/// = force_custom_plan`.)
fn plan_each_execution(config: &mut tokio_postgres::Config) {
    let options = match config.get_options() {
        Some(options) if options.contains("plan_cache_mode") => return,
        Some(options) if !options.trim().is_empty() => format!("{options} {CUSTOM_PLANS}"),
        _ => CUSTOM_PLANS.to_owned(),
    };
    config.options(options);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn options_of(url: &str) -> Option<String> {
        let config = pg_config(&SecretString::from(url.to_owned())).unwrap();
        config.get_options().map(str::to_owned)
    }

    #[test]
    fn connections_plan_each_execution_unless_the_url_says_otherwise() {
        assert_eq!(
            options_of("postgres://u@h/db").as_deref(),
            Some(CUSTOM_PLANS)
        );
        assert_eq!(
            options_of("postgres://u@h/db?options=-c%20work_mem%3D8MB").as_deref(),
            Some("-c work_mem=8MB -c plan_cache_mode=force_custom_plan")
        );
        assert_eq!(
            options_of("postgres://u@h/db?options=-c%20plan_cache_mode%3Dauto").as_deref(),
            Some("-c plan_cache_mode=auto")
        );
    }
}
