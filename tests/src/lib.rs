//! Helpers for the end-to-end tests and the load generator: an isolated
//! broker namespace and database per test, signed fixtures, and waiting for a
//! condition with a deadline.
#![allow(clippy::expect_used)] // test support: a failed set-up should stop the test loudly

pub mod bench;
pub mod broker;
pub mod cluster;
pub mod ctl_binary;
pub mod dashboard;
pub mod database;
pub mod dead_letters;
pub mod dispatch_world;
pub mod fault;
pub mod fixtures;
pub mod hostile;
pub mod ingest_app;
pub mod listen_queue;
pub mod prometheus;
pub mod proxy;
pub mod rehearsal;
pub mod service_process;
pub mod smtp;
pub mod wait;
pub mod worker_world;

/// Where the tests find RabbitMQ (`IDV_TEST_AMQP_URL`).
pub fn amqp_url() -> String {
    std::env::var("IDV_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// RabbitMQ's host and port from [`amqp_url`], for proxies in front of it.
pub fn amqp_addr() -> std::net::SocketAddr {
    server_addr(&amqp_url(), 5672, "IDV_TEST_AMQP_URL")
}

/// The `host:port` part of a URL's authority, as written (after any
/// `user:password@`), with the byte range it occupies in `url`.
fn host_port(url: &str) -> (std::ops::Range<usize>, &str) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    (start..end, &url[start..end])
}

/// The socket address a URL names (`default_port` when it names none).
pub fn server_addr(url: &str, default_port: u16, variable: &str) -> std::net::SocketAddr {
    let (_, host_port) = host_port(url);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("{variable} names a reachable host:port"))
}

/// `url` with its `host:port` replaced by `addr` (to go through a proxy).
pub fn url_via(url: &str, addr: std::net::SocketAddr) -> String {
    let (range, _) = host_port(url);
    format!("{}{addr}{}", &url[..range.start], &url[range.end..])
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
/// removes what a killed run left and nothing of another run's. One rule
/// for all three, `normalise_run_tag` in `deploy/services.sh`: lowercased,
/// only ASCII letters and digits kept, then the first 16 of them. `local`
/// when nothing is left.
pub fn run_tag() -> String {
    let tag: String = std::env::var("IDV_TEST_RUN")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(16)
        .collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_pointed_at_a_proxy_keeping_credentials_and_path() {
        let proxy: std::net::SocketAddr = "127.0.0.1:40001".parse().expect("addr");
        assert_eq!(
            url_via("postgres://u:p@db.local:5433/idv_x?sslmode=disable", proxy),
            "postgres://u:p@127.0.0.1:40001/idv_x?sslmode=disable"
        );
        assert_eq!(
            url_via("postgres://postgres@127.0.0.1/idv", proxy),
            "postgres://postgres@127.0.0.1:40001/idv"
        );
        assert_eq!(
            server_addr("amqp://guest:guest@127.0.0.1/%2f", 5672, "X").port(),
            5672
        );
    }
}
