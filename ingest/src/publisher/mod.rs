//! Publishes raw events to RabbitMQ and waits for the broker's confirm.
//!
//! One connection with a few confirm-mode channels is shared by every
//! request, so confirms pipeline: a request publishes, then waits for its own
//! confirm while others publish on the same channel. A supervisor task owns
//! the connection: when it is lost, publishing fails fast (the caller answers
//! 503) while the supervisor reconnects with backoff.

mod link;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation};
use secrecy::SecretString;
use shared::topology::Topology;
use tokio_util::sync::CancellationToken;

use link::Link;
pub use link::OpenError;

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;
/// How often the supervisor checks that the connection and channels are up.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(1);
/// A link that lived at least this long was healthy: the next outage starts
/// its backoff afresh. One that died sooner keeps backing off, so a broker
/// that accepts connections and then drops them is not hammered.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// What is published for one webhook request. The body is the request's raw
/// bytes, unchanged.
pub struct OutgoingEvent<'a> {
    pub body: &'a [u8],
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
            Self::Broker(_) => "broker_error",
        }
    }
}

/// How to reach the broker and what to declare there.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub url: SecretString,
    pub topology: Topology,
    pub channels: usize,
    pub publish_timeout: Duration,
}

struct Inner {
    config: BrokerConfig,
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
    pub async fn connect(config: BrokerConfig) -> Result<Self, OpenError> {
        let link = link::open(&config).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                exchange: config.topology.events_exchange(),
                config,
                link: RwLock::new(Some(Arc::new(link))),
            }),
        })
    }

    /// True while a connection and every confirm channel are up.
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
    /// `Returned` relies on lapin pairing a `basic.return` with its confirm;
    /// with pipelined confirms that pairing is not exact, so the real
    /// guarantee that nothing is returned is the alternate exchange on
    /// `stripe.events`, which routes every message somewhere.
    pub async fn publish(&self, event: &OutgoingEvent<'_>) -> Result<(), PublishError> {
        let link = self
            .current()
            .filter(|link| link.is_up())
            .ok_or(PublishError::Unavailable)?;
        let timeout = self.inner.config.publish_timeout;
        let confirmed = tokio::time::timeout(timeout, async {
            link.pick()
                .basic_publish(
                    self.inner.exchange.as_str().into(),
                    event.event_type.into(),
                    BasicPublishOptions {
                        mandatory: true,  // an unroutable message comes back instead of vanishing
                        immediate: false, // RabbitMQ does not support `immediate`
                    },
                    event.body,
                    properties(event),
                )
                .await?
                .await
        })
        .await;
        match confirmed {
            Err(_) => {
                link.timed_out();
                Err(PublishError::Timeout(timeout))
            }
            Ok(Err(error)) => {
                link.failed.notify_one();
                Err(PublishError::Broker(error))
            }
            Ok(Ok(confirmation)) => {
                link.confirmed();
                match confirmation {
                    Confirmation::Ack(None) => Ok(()),
                    Confirmation::Ack(Some(_)) => Err(PublishError::Returned),
                    Confirmation::Nack(_) | Confirmation::NotRequested => Err(PublishError::Nacked),
                }
            }
        }
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
                cause = watch(&link) => cause,
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

/// Completes, saying why, when `link` is no longer usable.
async fn watch(link: &Link) -> &'static str {
    let mut events = link.connection_events();
    let mut tick = tokio::time::interval(HEALTH_CHECK_EVERY);
    loop {
        tokio::select! {
            () = link.failed.notified() => return "publishes on it failed",
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
            }
        }
    }
}

fn properties(event: &OutgoingEvent<'_>) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-request-id".into(),
        AMQPValue::LongString(LongString::from(event.request_id)),
    );
    headers.insert(
        "x-received-at-ms".into(),
        AMQPValue::LongLongInt(event.received_at_ms),
    );
    BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/json".into())
        .with_message_id(event.event_id.into())
        .with_type(event.event_type.into())
        .with_timestamp(u64::try_from(event.created).unwrap_or(0))
        .with_headers(headers)
}
