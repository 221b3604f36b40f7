//! The consume loop. The worker's consumer owns a connection and a channel
//! and feeds `WORKER_CONSUMERS` lanes ([`lanes`]), each applying batches
//! of deliveries ([`batch`]) on its own pooled connection. A lost broker
//! link is reopened with backoff; shutdown stops taking deliveries, lets
//! the batches in hand finish and ack, then closes.

mod batch;
mod connect;
pub mod failure;
mod lanes;

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use lapin::options::BasicCancelOptions;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::health::Health;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::Store;

pub use batch::now_ms;

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

/// Runs the worker's consumer (number `index`) until shutdown.
pub async fn run_consumer(ctx: Arc<Context>, index: usize) {
    let tag = format!("idv-worker-{}-{index}", uuid::Uuid::new_v4().simple());
    let span = info_span!("consumer", consumer = index);
    async move {
        while !ctx.shutdown.is_cancelled() {
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
                    close(&link, &tag).await;
                    break;
                }
                Err(error) => warn!(%error, "broker link lost; reconnecting"),
            }
        }
        info!("consumer stopped");
    }
    .instrument(span)
    .await;
}

/// Takes and processes batches until shutdown (`Ok`) or a broker error.
async fn consume(ctx: &Context, link: &mut connect::Link) -> Result<(), String> {
    lanes::run(ctx, link).await
}

/// Stops the consumer, then closes the channels and the connection: the
/// broker requeues whatever was prefetched and not acked.
async fn close(link: &connect::Link, tag: &str) {
    let _ = link
        .channel
        .basic_cancel(
            tag.into(),
            BasicCancelOptions {
                nowait: false, // wait for cancel-ok: no delivery after this
            },
        )
        .await;
    let _ = link.publisher.close(200, "shutdown".into()).await;
    let _ = link.channel.close(200, "shutdown".into()).await;
    let _ = link.connection.close(200, "shutdown".into()).await;
}
