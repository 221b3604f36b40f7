//! One live broker connection with its confirm channels, and how to open it.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};
use secrecy::ExposeSecret;
use shared::topology;
use tokio::sync::Notify;

use super::BrokerConfig;

/// Bound on connecting, opening the channels and declaring the topology: a
/// proxy that accepts TCP while the broker behind it is down would otherwise
/// hold a connect forever (lapin has no handshake timeout).
pub(super) const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Publishes in a row that got no confirm in time before the link is
/// treated as dead (a half-open TCP connection is only noticed by missed
/// heartbeats, after minutes).
const TIMEOUTS_BEFORE_SUSPECT: u32 = 3;
/// Bound on closing politely; a dead peer never answers close-ok.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A live connection and its confirm channels.
pub(super) struct Link {
    connection: Connection,
    channels: Vec<Channel>,
    /// Round-robin position over `channels`.
    next: AtomicUsize,
    /// Unconfirmed publishes in a row (timeouts); reset by any confirm.
    timeouts_in_a_row: AtomicU32,
    /// Woken when a publish saw this link fail. Per link, so that a failure
    /// seen on an old link can never tear down its replacement.
    pub(super) failed: Notify,
    pub(super) opened_at: Instant,
}

impl Link {
    pub(super) fn pick(&self) -> &Channel {
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        &self.channels[at]
    }

    /// Connection and every channel open, and the broker not blocking us.
    pub(super) fn is_up(&self) -> bool {
        !self.is_broken() && !self.connection.status().blocked()
    }

    /// Connection or a channel closed: only a new link helps. (A blocked
    /// connection is not broken: the broker will unblock it.)
    pub(super) fn is_broken(&self) -> bool {
        !self.connection.status().connected()
            || self.channels.iter().any(|c| !c.status().connected())
    }

    pub(super) fn confirmed(&self) {
        self.timeouts_in_a_row.store(0, Ordering::Relaxed);
    }

    pub(super) fn timed_out(&self) {
        let in_a_row = self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row >= TIMEOUTS_BEFORE_SUSPECT && !self.connection.status().blocked() {
            self.failed.notify_one();
        }
    }

    /// Connection-level events (errors, blocked, …).
    pub(super) fn connection_events(
        &self,
    ) -> impl futures_util::Stream<Item = lapin::Event> + Send + 'static {
        self.connection.events_listener()
    }

    pub(super) async fn close(&self) {
        let polite = async {
            for channel in &self.channels {
                let _ = channel.close(200, "ingest stopping".into()).await;
            }
            let _ = self.connection.close(200, "ingest stopping".into()).await;
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, polite).await;
    }
}

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the broker did not complete the connection within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Broker(#[from] lapin::Error),
}

/// Connects, opens the confirm channels and declares the topology, within
/// [`OPEN_TIMEOUT`].
pub(super) async fn open(config: &BrokerConfig) -> Result<Link, OpenError> {
    tokio::time::timeout(OPEN_TIMEOUT, open_unbounded(config))
        .await
        .map_err(|_| OpenError::Timeout(OPEN_TIMEOUT))?
}

async fn open_unbounded(config: &BrokerConfig) -> Result<Link, OpenError> {
    let properties = ConnectionProperties::default().with_connection_name("idv-ingest".into());
    let connection = Connection::connect(config.url.expose_secret(), properties).await?;
    let mut channels = Vec::with_capacity(config.channels);
    for _ in 0..config.channels {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions { nowait: false })
            .await?;
        channels.push(channel);
    }
    if let Some(first) = channels.first() {
        topology::declare(first, &config.topology).await?;
    }
    Ok(Link {
        connection,
        channels,
        next: AtomicUsize::new(0),
        timeouts_in_a_row: AtomicU32::new(0),
        failed: Notify::new(),
        opened_at: Instant::now(),
    })
}
