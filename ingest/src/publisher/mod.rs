//! Publishes raw events to RabbitMQ and waits for the broker's confirm.
//!
//! One connection with confirm-mode channels is shared by every request. A
//! request takes a channel, publishes and holds it until its confirm
//! arrives: one unconfirmed publish per channel ([`slot`]), so a confirm
//! and any return always answer the request whose message they concern,
//! and the channels are the concurrency. A supervisor task owns the
//! connection: when it is lost, publishing fails fast (the caller answers
//! 503) while the supervisor reconnects with backoff; it also checks the
//! topology chain ([`chain`]) and replaces channels that keep refusing or
//! hold abandoned confirms.

mod chain;
mod link;
mod slot;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::web::Bytes;
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use shared::amqp_addresses::AmqpAddresses;
use shared::topology::Topology;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::metrics::ReasonLabel;
use link::Link;
pub use link::OpenError;
use slot::{ConfirmWatch, ReplaceReason};

/// How often the supervisor checks that the connection and channels are up.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(1);
/// A link that lived at least this long was healthy: the next outage starts
/// its backoff afresh. One that died sooner keeps backing off, so a broker
/// that accepts connections and then drops them is not hammered.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// What is published for one webhook request. The body is the request's raw
/// bytes, unchanged; owned, as it moves to the publish's own task.
pub struct OutgoingEvent<'a> {
    pub body: Bytes,
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// Stripe's `created`, unix seconds.
    pub created: i64,
    pub request_id: &'a str,
    /// When ingest received the request, unix milliseconds.
    pub received_at_ms: i64,
}

impl std::fmt::Debug for OutgoingEvent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body is personal data: never printed.
        f.debug_struct("OutgoingEvent")
            .field("event_id", &self.event_id)
            .field("event_type", &self.event_type)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

/// Why an event is not (known to be) durably in the broker.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("no connection to the broker")]
    Unavailable,
    #[error("the broker did not confirm within {0:?}")]
    Timeout(Duration),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the broker returned the message as unroutable")]
    Returned,
    #[error("the exchange, alternate exchange or queues an event needs are missing")]
    ChainMissing,
    #[error("broker error")]
    Broker(#[source] lapin::Error),
}

impl PublishError {
    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Timeout(_) => "timeout",
            Self::Nacked => "nack",
            Self::Returned => "returned",
            Self::ChainMissing => "chain_missing",
            Self::Broker(_) => "broker_error",
        }
    }
}

/// How to reach the broker and what to declare there.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `AMQP_URL`: the broker, or its cluster nodes to fail over between.
    pub url: AmqpAddresses,
    pub topology: Topology,
    pub channels: usize,
    pub publish_timeout: Duration,
}

/// What the publisher counts, registered with the ingest metrics.
#[derive(Debug, Clone, Default)]
pub struct PublisherMetrics {
    /// Confirms given up on: the publish timed out or its client went away.
    pub abandoned_confirms: Counter,
    /// Confirm channels replaced on a live link, by reason.
    pub channel_replacements: Family<ReasonLabel, Counter>,
}

struct Inner {
    config: BrokerConfig,
    metrics: PublisherMetrics,
    /// `config.topology.events_exchange()`, computed once.
    exchange: String,
    /// The current link; `None` while reconnecting.
    link: RwLock<Option<Arc<Link>>>,
}

/// A handle shared by every request; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("ready", &self.is_ready())
            .finish()
    }
}

fn reconnect_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}

impl Publisher {
    /// Connects, declares the topology and opens the confirm channels; fails
    /// if the broker cannot be reached now, so a misconfigured service stops
    /// at start. Later losses are repaired by [`Publisher::supervise`].
    pub async fn connect(
        config: BrokerConfig,
        metrics: PublisherMetrics,
    ) -> Result<Self, OpenError> {
        let link = link::open(&config).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                exchange: config.topology.events_exchange(),
                config,
                metrics,
                link: RwLock::new(Some(Arc::new(link))),
            }),
        })
    }

    /// True while a connection and every confirm channel are up and the
    /// chain to a queue (exchange, alternate exchange, queues) exists.
    pub fn is_ready(&self) -> bool {
        self.current().is_some_and(|link| link.is_up())
    }

    fn current(&self) -> Option<Arc<Link>> {
        self.inner.link.read().ok().and_then(|link| link.clone())
    }

    fn replace(&self, link: Option<Arc<Link>>) -> Option<Arc<Link>> {
        match self.inner.link.write() {
            Ok(mut slot) => std::mem::replace(&mut *slot, link),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), link),
        }
    }

    /// Publishes `event` and waits for the broker's confirm.
    ///
    /// Nothing is published while the chain is known to be missing. A
    /// returned message answers 503 and marks the chain missing; see
    /// [`chain`].
    ///
    /// The publish runs on a task of its own on the calling thread's
    /// runtime: lapin wakes a publish when its frames are written and again
    /// at its confirm, and each wake-up of the request's own future would
    /// have actix's connection dispatcher poll (and decode) again; the
    /// caller is woken once, at the end. Dropping the returned future aborts
    /// the task, which drops the publish where it stands, as if it ran in
    /// the caller: its confirm is counted as abandoned and left to the slot.
    /// (actix drops a request's handler when its worker stops; a client
    /// that hangs up while the handler waits does not drop it, so such a
    /// publish runs to its confirm or its timeout, as it did inline.)
    pub async fn publish(&self, event: OutgoingEvent<'_>) -> Result<(), PublishError> {
        let message = Message {
            routing_key: event.event_type.into(),
            properties: properties(&event),
            body: event.body,
        };
        let publisher = self.clone();
        // The publish's state is large: boxed, the task's own future (moved
        // several times on the way into the runtime) stays small.
        let task = AbortOnDropHandle::new(tokio::spawn(async move {
            Box::pin(publisher.publish_bounded(message)).await
        }));
        match task.await {
            Ok(published) => published,
            // A panic in the publish is the caller's, as it would be inline.
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Cancelled: the runtime is shutting down under the request.
            Err(_) => Err(PublishError::Unavailable),
        }
    }

    /// [`Publisher::publish`]'s body, within the publish timeout.
    async fn publish_bounded(&self, message: Message) -> Result<(), PublishError> {
        let link = self
            .current()
            .filter(|link| link.connection_usable())
            .ok_or(PublishError::Unavailable)?;
        if !link.chain_ok() {
            return Err(PublishError::ChainMissing);
        }
        let timeout = self.inner.config.publish_timeout;
        let written = AtomicBool::new(false);
        match tokio::time::timeout(timeout, self.publish_on(&link, message, &written)).await {
            Err(_) => {
                // Only a confirm the broker owes is evidence against the
                // link, not time spent waiting for a channel's turn.
                if written.load(Ordering::SeqCst) {
                    link.timed_out();
                }
                Err(PublishError::Timeout(timeout))
            }
            Ok(published) => published,
        }
    }

    /// Publishes on one of `link`'s channels and waits for the confirm,
    /// holding the channel's turn throughout: at most one publish is
    /// unconfirmed on a channel, so a return can only ride on its own
    /// message's confirm ([`slot`]). `written` is set once the frames are.
    async fn publish_on(
        &self,
        link: &Link,
        message: Message,
        written: &AtomicBool,
    ) -> Result<(), PublishError> {
        let Message {
            body,
            routing_key,
            properties,
        } = message;
        let mut turn = link.take_turn().await.ok_or(PublishError::Unavailable)?;
        let slot = turn.slot().clone();
        // Only the channel taken is checked here (the connection was, before
        // the turn): scanning all of them on every publish cost about 2k
        // instructions a request with 32 channels. The supervisor's tick
        // checks them all and replaces the link when one is closed.
        if !slot.channel().status().connected() {
            return Err(PublishError::Unavailable);
        }
        // A confirm an earlier, abandoned publish left due on this channel.
        if turn.settle_earlier().await {
            // One was cut short in its frames: its confirm is not in hand.
            let _ = slot.channel().wait_for_confirms().await;
            turn.settled_all();
        }
        // From here on, a publish dropped (a timeout, a client that hung up)
        // leaves a confirm behind.
        let watch = ConfirmWatch::new(&slot, |replace| {
            self.inner.metrics.abandoned_confirms.inc();
            if let Some(reason) = replace {
                self.replace_channel(link, reason);
            }
        });
        let confirmation = turn
            .publish(|channel| {
                let publish = channel.basic_publish(
                    self.inner.exchange.as_str().into(),
                    routing_key,
                    BasicPublishOptions {
                        // Exact: one unconfirmed publish per channel.
                        mandatory: true,
                        immediate: false, // RabbitMQ does not support `immediate`
                    },
                    &body,
                    properties,
                );
                async move {
                    let confirm = publish.await;
                    written.store(confirm.is_ok(), Ordering::SeqCst);
                    confirm
                }
            })
            .await
            .and_then(|confirmation| confirmation);
        watch.settle();
        drop(turn);
        match confirmation {
            Err(error) => {
                // A channel being replaced is closed on purpose.
                if !slot.wants_replacing() {
                    link.failed.notify_one();
                }
                Err(PublishError::Broker(error))
            }
            Ok(confirmation) => {
                link.confirmed();
                match confirmation {
                    Confirmation::Ack(None) => {
                        slot.acked();
                        Ok(())
                    }
                    // This message's own return (the only one unconfirmed
                    // on the channel). The body is personal data: dropped,
                    // never logged.
                    Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
                        link.chain_broken();
                        Err(PublishError::Returned)
                    }
                    Confirmation::Nack(None) | Confirmation::NotRequested => {
                        if let Some(reason) = slot.nacked() {
                            self.replace_channel(link, reason);
                        }
                        Err(PublishError::Nacked)
                    }
                }
            }
        }
    }

    /// Has the supervisor replace a channel that asked for it, and counts it.
    fn replace_channel(&self, link: &Link, reason: ReplaceReason) {
        self.inner
            .metrics
            .channel_replacements
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
        link.renew.notify_one();
    }

    /// Keeps a link up until `shutdown`: watches for its loss and reconnects
    /// with exponential backoff. Run it as a task.
    pub async fn supervise(self, shutdown: CancellationToken) {
        // Delays between links that die young; reset once one proves stable.
        let mut flapping = reconnect_backoff().build();
        loop {
            let Some(link) = self.current() else {
                let reconnect = (|| link::open(&self.inner.config))
                    .retry(reconnect_backoff())
                    .notify(|error, delay| {
                        tracing::warn!(error = %error, retry_in = ?delay, "broker still unreachable");
                    });
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    link = reconnect => {
                        if let Ok(link) = link {
                            tracing::info!("broker connection restored");
                            self.replace(Some(Arc::new(link)));
                        }
                    }
                }
                continue;
            };
            let cause = tokio::select! {
                () = shutdown.cancelled() => return,
                cause = self.watch(&link) => cause,
            };
            tracing::warn!(cause, "broker link lost; answering 503 until it is back");
            self.replace(None);
            let lived = link.opened_at.elapsed();
            tokio::spawn(async move { link.close().await });
            if lived >= STABLE_AFTER {
                flapping = reconnect_backoff().build();
            } else if let Some(delay) = flapping.next() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    /// Closes the channels and the connection (after the last request).
    pub async fn close(&self) {
        if let Some(link) = self.replace(None) {
            link.close().await;
        }
    }
}

impl Publisher {
    /// Completes, saying why, when `link` is no longer usable. Meanwhile
    /// checks the chain every [`HEALTH_CHECK_EVERY`] and replaces the
    /// channels that asked for it.
    async fn watch(&self, link: &Link) -> &'static str {
        let mut events = link.connection_events();
        let mut tick = tokio::time::interval(HEALTH_CHECK_EVERY);
        loop {
            tokio::select! {
                () = link.failed.notified() => return "publishes on it failed",
                () = link.renew.notified() => {
                    if let Err(error) = link.renew_channels(self.inner.config.publish_timeout).await {
                        tracing::warn!(error = %error, "cannot open a confirm channel");
                        return "cannot open a channel";
                    }
                }
                Some(event) = events.next() => {
                    if let lapin::Event::Error(error) = event {
                        tracing::warn!(error = %error, "broker connection error");
                        return "connection error";
                    }
                }
                _ = tick.tick() => {
                    if link.is_broken() {
                        return "connection or channel closed";
                    }
                    link.check_chain(&self.inner.config.topology).await;
                }
            }
        }
    }
}

/// One publish's message, owned by its task.
struct Message {
    body: Bytes,
    /// The event's type.
    routing_key: ShortString,
    properties: BasicProperties,
}

fn properties(event: &OutgoingEvent<'_>) -> BasicProperties {
    shared::envelope::Envelope {
        event_type: event.event_type,
        event_id: Some(event.event_id),
        created: Some(event.created),
        request_id: Some(event.request_id),
        received_at_ms: event.received_at_ms,
    }
    .properties()
}
