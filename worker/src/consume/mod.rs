//! The consume loop. The worker's consumer owns a connection and a channel
//! and feeds `WORKER_CONSUMERS` lanes ([`lanes`]), each applying batches
//! of deliveries ([`batch`]) on its own pooled connection. It consumes only
//! once PostgreSQL answers ([`database_answers`]), at start and whenever
//! the link is reopened. A lost broker link is reopened with backoff;
//! shutdown cancels the consumer at once (the broker stops filling the
//! window), lets the batches in hand finish and ack, then closes.

mod batch;
mod connect;
mod defer;
mod error;
pub mod failure;
mod lanes;

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::health::Health;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::Store;

pub use batch::now_ms;
pub use connect::OPEN_TIMEOUT;
pub use error::LinkError;

/// What every consumer shares.
#[derive(Debug)]
pub struct Context {
    pub settings: Settings,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
}

/// Backoff while the broker is unreachable: 200 ms to 10 s, until shutdown.
fn broker_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
}

/// Bound on one check that PostgreSQL answers before consuming: a database
/// that accepts connections but does not answer is as good as gone.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Waits until PostgreSQL answers a `SELECT 1` (bounded by
/// [`DATABASE_PROBE_TIMEOUT`]), retrying with the batches' backoff; `false`
/// on shutdown.
///
/// Why before every consume: on RabbitMQ before 4.0 each return of a
/// delivery to a quorum queue counts toward `x-delivery-limit`, whatever
/// returned it (a killed worker, a closed channel, the consumer timeout).
/// A worker that took its window while PostgreSQL could not apply it gave
/// the window back, one more delivery counted, at every restart by its
/// supervisor and every lost link; a few dozen such restarts during one
/// outage sent healthy events to the DLQ. A worker waiting here holds no
/// delivery, so its death returns nothing. Once consuming, an outage holds
/// what the worker has (see [`batch`]): a requeue would count exactly like
/// a death, so letting go early would spend an attempt on every outage,
/// even one that ends before anything restarts; held, the window is
/// counted once at most, when the worker dies or its link closes, after
/// which it waits here.
async fn database_answers(ctx: &Context) -> bool {
    let mut backoff = batch::database_backoff().build();
    loop {
        // A connection that did not answer in time is dropped from the
        // pool, not given back to the lanes ([`crate::store::answers_within`]).
        let probe = ctx.store.answers_within(DATABASE_PROBE_TIMEOUT);
        let answered = tokio::select! {
            answered = probe => answered,
            () = ctx.shutdown.cancelled() => return false,
        };
        ctx.health.set_database_up(answered);
        if answered {
            return true;
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(5));
        warn!(retry_in = ?delay, "database unavailable; not consuming until it answers");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = ctx.shutdown.cancelled() => return false,
        }
    }
}

/// Runs the worker's consumer (number `index`) until shutdown.
pub async fn run_consumer(ctx: Arc<Context>, index: usize) {
    let tag = format!("idv-worker-{}-{index}", uuid::Uuid::new_v4().simple());
    let span = info_span!("consumer", consumer = index);
    async move {
        while !ctx.shutdown.is_cancelled() {
            if !database_answers(&ctx).await {
                break;
            }
            let open = (|| connect::open(&ctx.settings, &tag))
                .retry(broker_backoff())
                .notify(|error, delay| warn!(%error, retry_in = ?delay, "broker unavailable"));
            let link = tokio::select! {
                link = open => link,
                () = ctx.shutdown.cancelled() => break,
            };
            let Ok(mut link) = link else { continue };
            let attached = ctx.health.attached();
            info!(
                lanes = ctx.settings.consumers,
                prefetch = ctx.settings.prefetch,
                batch = ctx.settings.batch_size,
                "consuming"
            );
            let result = consume(&ctx, &mut link).await;
            drop(attached);
            match result {
                Ok(()) => {
                    close(&link).await;
                    break;
                }
                Err(error) => warn!(
                    error = format!("{:#}", anyhow::Error::new(error)),
                    "broker link lost; reconnecting"
                ),
            }
        }
        info!("consumer stopped");
    }
    .instrument(span)
    .await;
}

/// Takes and processes batches until shutdown (`Ok`) or a broker error.
async fn consume(ctx: &Context, link: &mut connect::Link) -> Result<(), LinkError> {
    lanes::run(ctx, link).await
}

/// Closes the channels and the connection (the consumer was cancelled when
/// shutdown started, see [`lanes`]): the broker requeues whatever was
/// prefetched and not acked.
async fn close(link: &connect::Link) {
    let _ = link.publisher.close(200, "shutdown".into()).await;
    let _ = link.channel.close(200, "shutdown".into()).await;
    let _ = link.connection.close(200, "shutdown".into()).await;
}
