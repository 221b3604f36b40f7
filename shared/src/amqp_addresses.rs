//! `AMQP_URL` as a list of broker addresses to fail over between: the
//! nodes of one RabbitMQ cluster, any of which serves every queue (quorum
//! queues are reached through whichever node a client is connected to).
//!
//! `AMQP_URL=amqp://u:p@node1:5672/%2f,amqp://u:p@node2:5672/%2f,…`; one
//! URL is a list of one and behaves as before. A comma inside a password
//! is written `%2C`, as any reserved character in a URL.
//!
//! [`AmqpAddresses::connect`] tries the addresses in turn, each attempt
//! bounded, and returns the first connection that opens. It starts at the
//! address that opened the last connection (the first in the list at
//! first), so every connection of a process lands on one node while it
//! lives, and moves on past an address that failed: once a node is lost,
//! the next connects start at the one after it instead of trying the dead
//! node first every time. Processes spread over the nodes by being given
//! the list in different orders (the cluster test rotates it per process).
//!
//! Each attempt is given up whole when it fails or times out: lapin's
//! io-loop thread and the socket of that attempt go with it (see
//! `attempt`), so a reconnect loop against a node that accepts TCP and
//! then says nothing does not pile up threads and descriptors.
//!
//! The URLs hold passwords: this type never prints them. Its `Debug` and
//! `Display` and its errors show `host:port` only.

mod attempt;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use secrecy::SecretString;

/// How long one address gets to open a connection (TCP, TLS, AMQP
/// handshake) before the next is tried. A refused connection fails at
/// once; this bounds a node that accepts TCP and then says nothing.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// The broker addresses of `AMQP_URL`, in the order given. Cloning shares
/// the place to start from, so a process's connections agree on it.
#[derive(Clone)]
pub struct AmqpAddresses {
    inner: Arc<Inner>,
}

struct Inner {
    /// The URLs as written, credentials included.
    urls: Vec<SecretString>,
    /// The same, parsed once (credentials included: never printed).
    uris: Vec<AMQPUri>,
    /// `host:port` of each URL, for logs and errors.
    hosts: Vec<String>,
    /// The index the next connect starts at.
    start: AtomicUsize,
    /// Bound on one address's attempt.
    attempt_timeout: Duration,
}

/// Why `AMQP_URL` is not a list of AMQP URLs. Never holds the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("item {position} is empty")]
    Empty { position: usize },
    #[error(
        "item {position} is not an amqp:// or amqps:// URL; a comma inside a password is written %2C"
    )]
    NotAnAmqpUrl { position: usize },
}

/// No address opened a connection: each one's `host:port` and why.
#[derive(Debug, thiserror::Error)]
pub struct ConnectError {
    pub failures: Vec<(String, AttemptError)>,
}

/// Why one address did not open a connection.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Broker(#[from] lapin::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no broker address in AMQP_URL opened a connection: ")?;
        for (i, (host, error)) in self.failures.iter().enumerate() {
            let separator = if i == 0 { "" } else { "; " };
            write!(f, "{separator}{host}: {error}")?;
        }
        Ok(())
    }
}

impl AmqpAddresses {
    /// Parses a comma-separated list of amqp(s):// URLs (blanks around
    /// items ignored).
    pub fn parse(raw: &str) -> Result<Self, AddressError> {
        let mut urls = Vec::new();
        let mut uris = Vec::new();
        let mut hosts = Vec::new();
        for (index, item) in raw.split(',').enumerate() {
            let position = index + 1;
            let item = item.trim();
            if item.is_empty() {
                return Err(AddressError::Empty { position });
            }
            let uri: lapin::uri::AMQPUri = item
                .parse()
                .map_err(|_| AddressError::NotAnAmqpUrl { position })?;
            hosts.push(format!("{}:{}", uri.authority.host, uri.authority.port));
            urls.push(SecretString::from(item.to_owned()));
            uris.push(uri);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                urls,
                uris,
                hosts,
                start: AtomicUsize::new(0),
                attempt_timeout: ATTEMPT_TIMEOUT,
            }),
        })
    }

    /// The same list with another bound on each attempt (a fresh start).
    pub fn with_attempt_timeout(&self, attempt_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                urls: self.inner.urls.clone(),
                uris: self.inner.uris.clone(),
                hosts: self.inner.hosts.clone(),
                start: AtomicUsize::new(0),
                attempt_timeout,
            }),
        }
    }

    /// `host:port` of each address, in the order given.
    pub fn hosts(&self) -> &[String] {
        &self.inner.hosts
    }

    /// The URLs, credentials included, for a driver that takes one.
    pub fn urls(&self) -> &[SecretString] {
        &self.inner.urls
    }

    /// Opens a connection to the first address that accepts one, trying
    /// each at most once, from where the last successful connect was made.
    pub async fn connect(
        &self,
        properties: ConnectionProperties,
    ) -> Result<Connection, ConnectError> {
        let inner = &self.inner;
        let count = inner.urls.len();
        let start = inner.start.load(Ordering::Relaxed) % count;
        let mut failures = Vec::new();
        for index in (start..count).chain(0..start) {
            let uri = inner.uris[index].clone();
            let attempt = attempt::connect(uri, properties.clone(), inner.attempt_timeout);
            let error = match attempt.await {
                Ok(connection) => {
                    inner.start.store(index, Ordering::Relaxed);
                    if failures.is_empty() {
                        // Which node a process is on, for operators (and
                        // the cluster test): a connect whose attempt before
                        // timed out starts here with no failure to report.
                        tracing::info!(
                            connected_to = %inner.hosts[index],
                            "connected to a broker address",
                        );
                    } else {
                        tracing::warn!(
                            connected_to = %inner.hosts[index],
                            failed = %ConnectError { failures },
                            "connected to another broker address",
                        );
                    }
                    return Ok(connection);
                }
                Err(error) => error,
            };
            failures.push((inner.hosts[index].clone(), error));
            // Past this one: a later connect does not begin at a dead node.
            inner.start.store((index + 1) % count, Ordering::Relaxed);
        }
        Err(ConnectError { failures })
    }
}

impl fmt::Display for AmqpAddresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.hosts.join(","))
    }
}

impl fmt::Debug for AmqpAddresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // host:port only: the URLs carry passwords.
        f.debug_tuple("AmqpAddresses")
            .field(&self.inner.hosts)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn one_url_is_a_list_of_one() {
        let addresses = AmqpAddresses::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(addresses.hosts(), ["127.0.0.1:5672"]);
        assert_eq!(
            addresses.urls()[0].expose_secret(),
            "amqp://guest:guest@127.0.0.1:5672/%2f"
        );
    }

    #[test]
    fn a_list_keeps_its_order_and_ignores_blanks_around_items() {
        let addresses = AmqpAddresses::parse(
            " amqp://u:p@a.example:5681/%2f , amqps://u:p@b.example/vh,amqp://c.example:5683",
        )
        .unwrap();
        assert_eq!(
            addresses.hosts(),
            ["a.example:5681", "b.example:5671", "c.example:5683"]
        );
        assert_eq!(
            addresses.urls()[1].expose_secret(),
            "amqps://u:p@b.example/vh"
        );
    }

    #[test]
    fn a_bad_item_is_named_by_position_never_echoed() {
        for (raw, expected) in [
            (
                "amqp://u:hunter2@a:1/%2f,,amqp://u:hunter2@b:2/%2f",
                AddressError::Empty { position: 2 },
            ),
            (
                "amqp://u:hunter2@a:1/%2f,",
                AddressError::Empty { position: 2 },
            ),
            (
                "amqp://u:hunter2@a:1/%2f,http://u:hunter2@b",
                AddressError::NotAnAmqpUrl { position: 2 },
            ),
            (
                "amqp://u:hunter2@a:port/%2f",
                AddressError::NotAnAmqpUrl { position: 1 },
            ),
        ] {
            let error = AmqpAddresses::parse(raw).unwrap_err();
            assert_eq!(error, expected, "{raw}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn debug_and_display_show_hosts_not_passwords() {
        let addresses =
            AmqpAddresses::parse("amqp://u:hunter2@a:1/%2f,amqp://u:hunter2@b:2/%2f").unwrap();
        assert_eq!(addresses.to_string(), "a:1,b:2");
        let debug = format!("{addresses:?}");
        assert!(
            debug.contains("a:1") && !debug.contains("hunter2"),
            "{debug}"
        );
    }

    #[test]
    fn a_connect_error_names_every_address_tried() {
        let error = ConnectError {
            failures: vec![
                ("a:1".into(), AttemptError::Timeout(Duration::from_secs(3))),
                ("b:2".into(), AttemptError::Timeout(Duration::from_secs(3))),
            ],
        };
        assert_eq!(
            error.to_string(),
            "no broker address in AMQP_URL opened a connection: \
             a:1: no connection within 3s; b:2: no connection within 3s"
        );
    }

    /// Two ports on loopback that refuse connections (bound, then closed).
    fn refused_ports() -> (u16, u16) {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        )
    }

    #[tokio::test]
    async fn every_address_failing_names_each_one_and_moves_the_start_on() {
        let (a, b) = refused_ports();
        let addresses = AmqpAddresses::parse(&format!(
            "amqp://u:hunter2@127.0.0.1:{a}/%2f,amqp://u:hunter2@127.0.0.1:{b}/%2f"
        ))
        .unwrap();
        let error = addresses
            .connect(ConnectionProperties::default())
            .await
            .unwrap_err();
        let hosts: Vec<_> = error.failures.iter().map(|(h, _)| h.clone()).collect();
        assert_eq!(hosts, [format!("127.0.0.1:{a}"), format!("127.0.0.1:{b}")]);
        assert!(!error.to_string().contains("hunter2"), "{error}");
        // Both failed, the last being the second: the next try starts at
        // the first again, not at the second it just saw fail.
        assert_eq!(addresses.inner.start.load(Ordering::Relaxed), 0);
    }
}
