//! One live broker connection with its confirm channels, the check of the
//! topology chain, and how to open it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties, PublisherConfirm};
use shared::amqp_addresses::ConnectError;
use shared::topology::Topology;
use tokio::sync::Notify;

use super::BrokerConfig;
use super::chain::ChainChecker;
use super::slot::{PublishSlot, Turn};

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
/// Bound on one check of the chain (a redeclare gets [`OPEN_TIMEOUT`]).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the chain may be seen missing before ingest declares the
/// topology again itself. Until then (and until the declare succeeds) it
/// answers 503: long enough for the refusal to be seen and counted, short
/// enough that a lost queue is not an outage.
const REDECLARE_AFTER: Duration = Duration::from_secs(5);

/// A confirm channel and its turn.
pub(super) type Slot = PublishSlot<Channel, PublisherConfirm>;

/// A live connection and its confirm channels.
pub(super) struct Link {
    connection: Connection,
    /// The confirm channels; each can be replaced while the link lives.
    slots: Vec<RwLock<Arc<Slot>>>,
    /// Round-robin position over `slots`.
    next: AtomicUsize,
    /// Unconfirmed publishes in a row (timeouts); reset by any confirm.
    timeouts_in_a_row: AtomicU32,
    /// Woken when a publish saw this link fail. Per link, so that a failure
    /// seen on an old link can never tear down its replacement.
    pub(super) failed: Notify,
    /// Woken when a slot asked for a new channel.
    pub(super) renew: Notify,
    /// False while some link of the chain is known to be missing.
    chain_ok: AtomicBool,
    /// A redeclare was started and has not yet returned Ok: the chain
    /// stays missing even when every piece is there again, since one cut
    /// short can leave the queues without their bindings.
    redeclare_pending: AtomicBool,
    /// Since when the chain has been seen missing.
    chain_missing_since: std::sync::Mutex<Option<Instant>>,
    /// The non-confirm channel the chain checks run on.
    checker: tokio::sync::Mutex<ChainChecker>,
    pub(super) opened_at: Instant,
}

impl Link {
    /// A turn on one of the channels: a free one when there is one (looked
    /// for round-robin), else the next in turn once it is free. `None` when
    /// every slot waited for was retired meanwhile.
    pub(super) async fn take_turn(&self) -> Option<Turn<Channel, PublisherConfirm>> {
        let count = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..count {
            if let Some(turn) = read(&self.slots[(start + i) % count]).try_turn() {
                return Some(turn);
            }
        }
        // Every channel busy. A slot retired while this waited is skipped:
        // with every slot renewed at once, each is tried once.
        for i in 0..count {
            if let Some(turn) = read(&self.slots[(start + i) % count]).turn().await {
                return Some(turn);
            }
        }
        None
    }

    /// Connection and every channel open, the broker not blocking us, and
    /// the chain to a queue there.
    pub(super) fn is_up(&self) -> bool {
        !self.is_broken() && !self.connection_blocked() && self.chain_ok()
    }

    /// The broker is blocking publishers (a resource alarm).
    pub(super) fn connection_blocked(&self) -> bool {
        self.connection.status().blocked()
    }

    pub(super) fn chain_ok(&self) -> bool {
        self.chain_ok.load(Ordering::SeqCst)
    }

    /// The connection is open and the broker not blocking us: what a
    /// publish checks before it takes a channel (then it checks the one it
    /// took); [`Link::is_broken`] scans every channel, for the supervisor's
    /// tick and `/readyz`.
    pub(super) fn connection_usable(&self) -> bool {
        let status = self.connection.status();
        status.connected() && !status.blocked()
    }

    /// Connection or a channel closed: only a new link helps. (A blocked
    /// connection is not broken: the broker will unblock it.)
    pub(super) fn is_broken(&self) -> bool {
        !self.connection.status().connected()
            || self
                .slots
                .iter()
                .any(|slot| !read(slot).channel().status().connected())
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

    /// A message came back: with an alternate exchange that can only happen
    /// while the chain is broken. Refuse until a check finds it whole.
    pub(super) fn chain_broken(&self) {
        self.chain_ok.store(false, Ordering::SeqCst);
    }

    /// Connection-level events (errors, blocked, …).
    pub(super) fn connection_events(
        &self,
    ) -> impl futures_util::Stream<Item = lapin::Event> + Send + 'static {
        self.connection.events_listener()
    }

    /// Checks the chain (passive declares) and records the answer; declares
    /// the topology again once it has been missing for [`REDECLARE_AFTER`].
    pub(super) async fn check_chain(&self, topology: &Topology) {
        let mut checker = self.checker.lock().await;
        let missing =
            tokio::time::timeout(CHECK_TIMEOUT, checker.missing(&self.connection, topology)).await;
        let missing = match missing {
            Ok(Ok(missing)) => missing,
            // The check could not run: the link itself is failing, which
            // the supervisor sees on its own.
            Ok(Err(error)) => {
                tracing::debug!(error = %error, "chain check could not run");
                return;
            }
            Err(_) => return,
        };
        let Some(name) = missing else {
            if self.redeclare_pending.load(Ordering::SeqCst)
                && !self.redeclare(&mut checker, topology).await
            {
                return;
            }
            let was_missing = self.missing_since(|since| since.take()).is_some();
            if was_missing || !self.chain_ok() {
                tracing::info!("broker topology chain complete again; publishing");
            }
            self.chain_ok.store(true, Ordering::SeqCst);
            return;
        };
        self.chain_ok.store(false, Ordering::SeqCst);
        let first_seen = self.missing_since(|since| *since.get_or_insert_with(Instant::now));
        tracing::warn!(
            missing = %name,
            "broker topology chain incomplete; answering 503"
        );
        if first_seen.elapsed() >= REDECLARE_AFTER {
            self.redeclare(&mut checker, topology).await;
        }
    }

    /// Declares the whole topology again, within [`OPEN_TIMEOUT`]; true
    /// once it returned Ok. Until then the chain is kept missing.
    async fn redeclare(&self, checker: &mut ChainChecker, topology: &Topology) -> bool {
        self.redeclare_pending.store(true, Ordering::SeqCst);
        let redeclared =
            tokio::time::timeout(OPEN_TIMEOUT, checker.redeclare(&self.connection, topology)).await;
        match redeclared {
            Ok(Ok(())) => {
                tracing::info!("broker topology declared again");
                self.redeclare_pending.store(false, Ordering::SeqCst);
                true
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "cannot declare the topology");
                false
            }
            Err(_) => {
                tracing::warn!("declaring the topology timed out");
                false
            }
        }
    }

    fn missing_since<T>(&self, f: impl FnOnce(&mut Option<Instant>) -> T) -> T {
        match self.chain_missing_since.lock() {
            Ok(mut since) => f(&mut since),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Replaces every channel whose slot asked for it. The old channel takes
    /// no new publish, is given `grace` for the confirms still due on it,
    /// then closed, which is also when lapin lets go of abandoned confirms.
    pub(super) async fn renew_channels(&self, grace: Duration) -> Result<(), RenewError> {
        for cell in &self.slots {
            let old = read(cell);
            if !old.wants_replacing() {
                continue;
            }
            // Bounded: this runs in the supervisor, which must keep watching.
            let channel = tokio::time::timeout(OPEN_TIMEOUT, confirm_channel(&self.connection))
                .await
                .map_err(|_| RenewError::Timeout(OPEN_TIMEOUT))??;
            let fresh = Arc::new(Slot::new(channel));
            match cell.write() {
                Ok(mut slot) => *slot = fresh,
                Err(poisoned) => *poisoned.into_inner() = fresh,
            }
            tracing::info!(channel = old.channel().id(), "confirm channel replaced");
            tokio::spawn(async move {
                old.retire().await;
                let _ = tokio::time::timeout(grace, old.channel().wait_for_confirms()).await;
                let _ = tokio::time::timeout(
                    CLOSE_TIMEOUT,
                    old.channel().close(200, "replaced".into()),
                )
                .await;
            });
        }
        Ok(())
    }

    pub(super) async fn close(&self) {
        let polite = async {
            self.checker.lock().await.close().await;
            for slot in &self.slots {
                let _ = read(slot)
                    .channel()
                    .close(200, "ingest stopping".into())
                    .await;
            }
            let _ = self.connection.close(200, "ingest stopping".into()).await;
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, polite).await;
    }
}

fn read(cell: &RwLock<Arc<Slot>>) -> Arc<Slot> {
    match cell.read() {
        Ok(slot) => slot.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// Why a confirm channel could not be replaced.
#[derive(Debug, thiserror::Error)]
pub(super) enum RenewError {
    #[error("the broker did not open a channel within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Broker(#[from] lapin::Error),
}

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the broker did not complete the connection within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{0} is missing after declaring the topology")]
    ChainMissing(String),
}

/// Connects, opens the confirm channels, declares the topology and checks
/// the chain, within [`OPEN_TIMEOUT`].
pub(super) async fn open(config: &BrokerConfig) -> Result<Link, OpenError> {
    tokio::time::timeout(OPEN_TIMEOUT, open_unbounded(config))
        .await
        .map_err(|_| OpenError::Timeout(OPEN_TIMEOUT))?
}

async fn confirm_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions { nowait: false })
        .await?;
    Ok(channel)
}

async fn open_unbounded(config: &BrokerConfig) -> Result<Link, OpenError> {
    let properties = ConnectionProperties::default().with_connection_name("idv-ingest".into());
    let connection = config.url.connect(properties).await?;
    let mut slots = Vec::with_capacity(config.channels);
    for _ in 0..config.channels {
        slots.push(RwLock::new(Arc::new(Slot::new(
            confirm_channel(&connection).await?,
        ))));
    }
    let mut checker = ChainChecker::default();
    checker.redeclare(&connection, &config.topology).await?;
    if let Some(missing) = checker.missing(&connection, &config.topology).await? {
        return Err(OpenError::ChainMissing(missing));
    }
    Ok(Link {
        connection,
        slots,
        next: AtomicUsize::new(0),
        timeouts_in_a_row: AtomicU32::new(0),
        failed: Notify::new(),
        renew: Notify::new(),
        chain_ok: AtomicBool::new(true),
        redeclare_pending: AtomicBool::new(false),
        chain_missing_since: std::sync::Mutex::new(None),
        checker: tokio::sync::Mutex::new(checker),
        opened_at: Instant::now(),
    })
}
