//! Helpers for the end-to-end tests and the load generator: an isolated
//! broker namespace and database per test, signed fixtures, and waiting for a
//! condition with a deadline.
#![allow(clippy::expect_used)] // test support: a failed set-up should stop the test loudly

pub mod bench;
pub mod broker;
pub mod database;
pub mod fixtures;
pub mod ingest_app;
pub mod proxy;
pub mod wait;

/// Where the tests find RabbitMQ (`IDV_TEST_AMQP_URL`).
pub fn amqp_url() -> String {
    std::env::var("IDV_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// RabbitMQ's host and port from [`amqp_url`], for proxies in front of it.
pub fn amqp_addr() -> std::net::SocketAddr {
    let url = amqp_url();
    let authority = url
        .split_once("://")
        .map_or(url.as_str(), |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5672")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .expect("IDV_TEST_AMQP_URL names a reachable host:port")
}

/// Where the tests find PostgreSQL, without a database (`IDV_TEST_POSTGRES_URL`).
pub fn postgres_url() -> String {
    std::env::var("IDV_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A short random suffix for names a test owns.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// This test run's tag (`IDV_TEST_RUN`, set by `deploy/test.sh`), part of
/// every name a test creates, so that `deploy/clean-test-debris.sh TAG`
/// removes what a killed run left and nothing of another run's.
pub fn run_tag() -> String {
    let tag: String = std::env::var("IDV_TEST_RUN")
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase();
    if tag.is_empty() {
        "local".to_owned()
    } else {
        tag
    }
}

/// Runs `cleanup` to completion on its own runtime, from `Drop`, even when
/// the test's runtime is shutting down or the test panicked.
pub(crate) fn run_blocking_cleanup<F>(cleanup: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let handle = std::thread::spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(cleanup),
            Err(error) => eprintln!("test cleanup could not start a runtime: {error}"),
        }
    });
    let _ = handle.join();
}
