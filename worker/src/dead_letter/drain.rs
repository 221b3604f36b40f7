//! The drain: consumes the DLQ on a connection and channel of its own and
//! records each message in `dead_letters`, acking only after the insert
//! committed (one `multiple` ack per batch: the channel's deliveries are
//! recorded in the order they arrive, so every tag up to the batch's last
//! is committed).
//!
//! It consumes only while the worker's consumer is attached (which needs
//! PostgreSQL to answer), at start and after every lost link, so a
//! database outage finds it holding nothing; an outage that
//! starts while it holds a batch holds the batch unacked, retrying with
//! backoff (a requeue would only bring the same message back, and on a
//! broker that limits the DLQ's deliveries, spend them). The same DLQ
//! message delivered again, because the link or the process died between
//! commit and ack, has the same fingerprint: no second row.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::{FutureExt as _, StreamExt as _};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use tokio_postgres::IsolationLevel;
use tracing::{Instrument, info, info_span, warn};

use super::Tasks;
use super::record::{self, DeadLetter};
use crate::consume::{LinkError, OPEN_TIMEOUT, now_ms};
use crate::store::{StoreError, error_chain};

/// Deliveries recorded in one transaction, at most.
const BATCH: usize = 64;
/// Unacked deliveries the broker may push: the next batch is on its way
/// while one commits.
const PREFETCH: u16 = 128;
/// How often the drain looks whether the consumer is attached.
const ATTACHED_POLL: Duration = Duration::from_millis(100);

/// 200 ms to 10 s, until shutdown (the consumer's, for the broker).
fn broker_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
}

/// 100 ms to 5 s, until shutdown (the batches', for PostgreSQL).
fn database_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}

/// The drain's link to the broker.
#[derive(Debug)]
struct Link {
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
}

/// Drains the DLQ until shutdown.
pub async fn run(tasks: Arc<Tasks>) {
    let tag = format!("idv-worker-dlq-{}", uuid::Uuid::new_v4().simple());
    let queue = tasks.topology.dead_letter_queue();
    let span = info_span!("dead_letter_drain", %queue);
    async move {
        while !tasks.shutdown.is_cancelled() {
            if !consumer_attached(&tasks).await {
                break;
            }
            let open = (|| open(&tasks, &queue, &tag))
                .retry(broker_backoff())
                .notify(|error, delay| {
                    warn!(error = %error_chain(error), retry_in = ?delay, "dead-letter queue unavailable");
                });
            let link = tokio::select! {
                link = open => link,
                () = tasks.shutdown.cancelled() => break,
            };
            let Ok(mut link) = link else { continue };
            info!(prefetch = PREFETCH, batch = BATCH, "draining the dead-letter queue");
            let result = drain(&tasks, &mut link).await;
            close(&link).await;
            match result {
                Ok(()) => break,
                Err(error) => warn!(
                    error = format!("{:#}", anyhow::Error::new(error)),
                    "dead-letter queue link lost; reconnecting"
                ),
            }
        }
        info!("dead-letter drain stopped");
    }
    .instrument(span)
    .await;
}

/// Waits until the worker's consumer is attached to the work queue;
/// `false` on shutdown. The consumer attaches only once PostgreSQL
/// answered (see [`crate::consume`]), so the drain holds nothing through
/// an outage that began before it consumed, and probes nothing of its own:
/// no extra connection while the database hangs. A flag read every
/// [`ATTACHED_POLL`]: the wait is at start and after a lost link only.
async fn consumer_attached(tasks: &Tasks) -> bool {
    loop {
        if tasks.health.consumers() > 0 {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(ATTACHED_POLL) => {}
            () = tasks.shutdown.cancelled() => return false,
        }
    }
}

/// Connects and starts consuming the DLQ, within [`OPEN_TIMEOUT`]. The
/// topology is not declared here (the worker declared it at start): a
/// DLQ deleted under a running worker is waited for, not recreated.
async fn open(tasks: &Tasks, queue: &str, tag: &str) -> Result<Link, LinkError> {
    let open = async {
        let connection = tasks
            .amqp_url
            .connect(ConnectionProperties::default())
            .await?;
        match consume(&connection, queue, tag).await {
            Ok((channel, consumer)) => Ok(Link {
                connection,
                channel,
                consumer,
            }),
            Err(error) => {
                let _ = connection.close(200, "could not consume".into()).await;
                Err(LinkError::from(error))
            }
        }
    };
    tokio::time::timeout(OPEN_TIMEOUT, open)
        .await
        .map_err(|_| LinkError::OpenTimeout(OPEN_TIMEOUT))?
}

async fn consume(
    connection: &Connection,
    queue: &str,
    tag: &str,
) -> Result<(Channel, Consumer), lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(
            PREFETCH, // unacked deliveries this consumer may hold
            BasicQosOptions {
                global: false, // per consumer
            },
        )
        .await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions {
                no_local: false,  // irrelevant to queues; RabbitMQ ignores it
                no_ack: false,    // manual acks: ack only after COMMIT
                exclusive: false, // every worker's drain consumes the DLQ
                nowait: false,    // wait for consume-ok so errors surface here
            },
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}

/// Records batches until shutdown (`Ok`) or a broker error.
async fn drain(tasks: &Tasks, link: &mut Link) -> Result<(), LinkError> {
    loop {
        let next = tokio::select! {
            biased;
            () = tasks.shutdown.cancelled() => return Ok(()),
            next = link.consumer.next() => next,
        };
        let mut batch = vec![delivered(next)?];
        // Whatever else has arrived already, up to a batch.
        let mut ended = None;
        while batch.len() < BATCH {
            match link.consumer.next().now_or_never() {
                Some(next) => match delivered(next) {
                    Ok(delivery) => batch.push(delivery),
                    Err(error) => {
                        ended = Some(error);
                        break;
                    }
                },
                None => break,
            }
        }
        if !record(tasks, &batch).await {
            // Shutdown while the database is unavailable: the broker
            // returns the batch when the link closes.
            return Ok(());
        }
        if let Some(last) = batch.last() {
            last.acker
                .ack(BasicAckOptions {
                    multiple: true, // every earlier delivery is committed too
                })
                .await?;
        }
        tasks
            .metrics
            .dead_letters_drained
            .inc_by(batch.len() as u64);
        if let Some(error) = ended {
            return Err(error);
        }
    }
}

/// A delivery from the consumer's stream, or why the stream ended.
fn delivered(next: Option<Result<Delivery, lapin::Error>>) -> Result<Delivery, LinkError> {
    match next {
        Some(Ok(delivery)) => Ok(delivery),
        Some(Err(error)) => Err(LinkError::Broker(error)),
        None => Err(LinkError::ConsumerCancelled),
    }
}

/// Records `batch`, retrying while the database is unavailable: `true`
/// once committed, `false` if shutdown came first. The first attempt runs
/// to completion even during shutdown (work in hand is finished).
pub async fn record(tasks: &Tasks, batch: &[Delivery]) -> bool {
    let work_queue = tasks.topology.events_queue();
    let context = record::Context {
        work_queue: &work_queue,
        now_ms: now_ms(),
    };
    let rows: Vec<DeadLetter> = batch
        .iter()
        .map(|d| record::read(&d.data, d.routing_key.as_str(), &d.properties, context))
        .collect();
    let inserted = match insert(tasks, &rows).await {
        Ok(inserted) => inserted,
        Err(error) => {
            on_unavailable(tasks, &error, Duration::ZERO);
            let retried = (|| insert(tasks, &rows))
                .retry(database_backoff())
                .notify(|error: &StoreError, delay| on_unavailable(tasks, error, delay));
            tokio::select! {
                inserted = retried => match inserted {
                    Ok(inserted) => inserted,
                    Err(_) => return false,
                },
                () = tasks.shutdown.cancelled() => return false,
            }
        }
    };
    for row in &rows {
        info!(
            event_id = row.event_id.as_deref().unwrap_or("-"),
            routing_key = %row.routing_key,
            kind = row.kind.as_str(),
            attempts = row.attempts,
            "dead letter recorded"
        );
    }
    if usize::try_from(inserted).ok() != Some(rows.len()) {
        info!(
            deliveries = rows.len(),
            new_rows = inserted,
            "some dead letters were recorded already (delivered again)"
        );
    }
    true
}

/// Inserts `rows` in one READ COMMITTED transaction.
async fn insert(tasks: &Tasks, rows: &[DeadLetter]) -> Result<u64, StoreError> {
    let mut client = tasks.pool.get().await?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await?;
    let inserted = crate::store::dead_letters::insert(&tx, rows).await?;
    tx.commit().await?;
    Ok(inserted)
}

/// Any failure is held and retried: the rows are made storable by
/// [`record::read`] (clean text, clamped numbers), so a refusal could only
/// be a schema an operator must fix, never a reason to drop a dead letter.
/// Counted with the batches' retries (`idv_worker_infrastructure_retries_total`).
fn on_unavailable(tasks: &Tasks, error: &StoreError, delay: Duration) {
    tasks.metrics.infrastructure_retries.inc();
    warn!(
        error = %error_chain(error),
        retry_in = ?delay,
        "database unavailable; holding the dead letters unacked"
    );
}

/// Closes the channel and the connection; the broker returns whatever was
/// delivered and not acked.
async fn close(link: &Link) {
    let _ = link.channel.close(200, "shutdown".into()).await;
    let _ = link.connection.close(200, "shutdown".into()).await;
}
