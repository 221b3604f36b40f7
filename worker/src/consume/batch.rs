//! One batch of deliveries: parse each, apply the parsed ones in one
//! transaction (retrying with backoff while PostgreSQL is unavailable,
//! holding the deliveries unacked so consumption pauses and no attempt is
//! spent; should the worker die or its link close meanwhile, the broker
//! returns them with one delivery counted each, once per outage, since the
//! next link waits for the database before consuming), forward message
//! failures to a retry queue or the DLQ, then ack everything together
//! after the commit.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable};
use futures_util::future::join_all;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use tracing::{Instrument, info_span, warn};

use super::Context;
use super::failure::{self, Disposition};
use crate::incoming::{self, Incoming, MessageFailure};
use crate::store::{Applied, EventOutcome, Unavailable};

/// Why a batch was not finished.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The broker link failed: the unacked deliveries will be redelivered.
    #[error("broker link failed")]
    Broker(#[from] super::LinkError),
    /// Shutdown arrived while waiting for the database.
    #[error("shutting down while the database is unavailable")]
    ShuttingDown,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Backoff while PostgreSQL is unavailable: from 100 ms to 5 s, forever
/// (until shutdown): an outage never spends a message's attempts.
pub(super) fn database_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}

/// A delivery and what its body parsed to.
#[derive(Debug)]
pub struct Parsed {
    pub delivery: Delivery,
    pub event: Result<Incoming, MessageFailure>,
}

/// Parses `delivery`'s body (with its receive time from ingest's header,
/// and whether `idvctl events replay` sent it from the inbox).
pub fn parse(ctx: &Context, delivery: Delivery) -> Parsed {
    let event =
        incoming::parse_delivery(&delivery.data, &delivery.properties, &ctx.settings, now_ms);
    Parsed { delivery, event }
}

/// Processes `batch` (parsed deliveries with the instant each arrived).
pub async fn process(
    ctx: &Context,
    publisher: &Channel,
    batch: Vec<(Parsed, Instant)>,
) -> Result<(), BatchError> {
    ctx.metrics.batch_size.observe(batch.len() as f64);
    let mut parsed: Vec<(Delivery, Instant, Incoming)> = Vec::with_capacity(batch.len());
    let mut failed: Vec<(Delivery, Instant, Option<String>, MessageFailure)> = Vec::new();
    for (Parsed { delivery, event }, arrived) in batch {
        match event {
            Ok(event) => parsed.push((delivery, arrived, event)),
            // No type label: an unreadable body's type is not to be trusted.
            Err(failure) => failed.push((delivery, arrived, None, failure)),
        }
    }

    let events: Vec<&Incoming> = parsed.iter().map(|(_, _, e)| e).collect();
    let outcomes = if events.is_empty() {
        Vec::new()
    } else {
        apply_until_available(ctx, &events).await?
    };
    if !outcomes.is_empty() {
        crate::fail_point::after_commit(outcomes.len());
    }
    let newest = parsed.iter().map(|(_, _, e)| e.created).max();

    let mut acks: Vec<(Delivery, Instant)> = Vec::with_capacity(parsed.len());
    for ((delivery, arrived, event), outcome) in parsed.into_iter().zip(outcomes) {
        match outcome {
            Ok(outcome) => {
                let span = info_span!("delivery", delivery_tag = delivery.delivery_tag,
                    event_id = %event.event_id, event_type = %event.event_type,
                    session_id = %event.session_id);
                span.in_scope(|| record(ctx, &event, &outcome));
                acks.push((delivery, arrived));
            }
            Err(failure) => failed.push((delivery, arrived, Some(event.event_type), failure)),
        }
    }
    // Ack what is committed before forwarding failures, so a failed forward
    // cannot send committed deliveries back for a (harmless but wasted) redo.
    ack_all(&acks).await?;
    for (delivery, arrived, event_type, failure) in failed {
        let span = info_span!(
            "delivery",
            delivery_tag = delivery.delivery_tag,
            failure = failure.kind()
        );
        forward_failure(ctx, publisher, &delivery, event_type.as_deref(), &failure)
            .instrument(span)
            .await?;
        // Right after its copy is confirmed: a later failure cannot forward it twice.
        acks.push((delivery, arrived));
        ack_all(&acks[acks.len() - 1..]).await?;
    }
    for (_, arrived) in &acks {
        ctx.metrics
            .processing_seconds
            .observe(arrived.elapsed().as_secs_f64());
    }
    if let Some(newest) = newest {
        let lag = now_ms() as f64 / 1000.0 - newest as f64;
        ctx.metrics.consumer_lag_seconds.set(lag);
    }
    Ok(())
}

/// Applies `events`, retrying while the database is unavailable.
async fn apply_until_available(
    ctx: &Context,
    events: &[&Incoming],
) -> Result<Vec<Result<EventOutcome, MessageFailure>>, BatchError> {
    // The first attempt always runs to completion, even during shutdown:
    // in-flight work is finished, not abandoned.
    let first = ctx.store.apply(events).await;
    let error = match first {
        Ok(outcomes) => {
            ctx.health.set_database_up(true);
            return Ok(outcomes);
        }
        Err(error) => error,
    };
    on_unavailable(ctx, &error, Duration::ZERO);
    let retried = (|| ctx.store.apply(events))
        .retry(database_backoff())
        .notify(|error: &Unavailable, delay| on_unavailable(ctx, error, delay));
    tokio::select! {
        outcomes = retried => {
            ctx.health.set_database_up(true);
            tracing::info!(events = events.len(), "database available again; batch applied");
            outcomes.map_err(|_| BatchError::ShuttingDown)
        }
        () = ctx.shutdown.cancelled() => Err(BatchError::ShuttingDown),
    }
}

fn on_unavailable(ctx: &Context, error: &Unavailable, delay: Duration) {
    ctx.health.set_database_up(false);
    ctx.metrics.infrastructure_retries.inc();
    warn!(error = %crate::store::error_chain(error), retry_in = ?delay, "database unavailable; holding the batch unacked");
}

fn record(ctx: &Context, event: &Incoming, outcome: &EventOutcome) {
    let metrics = &ctx.metrics;
    metrics.event(&event.event_type, outcome.applied.as_str());
    match outcome.applied {
        Applied::Duplicate => {
            metrics.duplicates.inc();
        }
        Applied::Stale => {
            metrics.stale.inc();
        }
        // Counted by the `events` family (outcome `replayed`) only: not a
        // duplicate, though it changed no state.
        Applied::Applied | Applied::Redacted | Applied::Replayed => {}
    }
    if let Some(code) = &outcome.counted_failure {
        metrics
            .failed_attempts
            .get_or_create(&crate::metrics::CodeLabels {
                code: crate::policy::code_label(code).to_owned(),
            })
            .inc();
    }
    if let Some(failure) = event.failure.as_ref().filter(|f| !f.known) {
        let code = crate::policy::code_label(&failure.code);
        warn!(code, "unknown last_error code, treated as retryable");
    }
    if outcome.reached_manual_review {
        metrics.attempt_limit_reached.inc();
        tracing::info!("subject sent to manual review");
    }
    tracing::debug!(outcome = outcome.applied.as_str(), "event processed");
}

async fn forward_failure(
    ctx: &Context,
    publisher: &Channel,
    delivery: &Delivery,
    event_type: Option<&str>,
    failure: &MessageFailure,
) -> Result<(), BatchError> {
    let disposition = failure::forward(
        publisher,
        &ctx.settings.topology,
        &ctx.settings.retry_delays,
        delivery,
        failure,
        now_ms(),
    )
    .await
    .map_err(|e| BatchError::Broker(e.into()))?;
    let labels = crate::metrics::KindLabels {
        kind: failure.kind().to_owned(),
    };
    let event_type = event_type.unwrap_or("unknown");
    match disposition {
        Disposition::Retried { attempt } => {
            ctx.metrics.message_retries.get_or_create(&labels).inc();
            ctx.metrics.event(event_type, "retried");
            warn!(attempt, "message failure; sent to a retry queue");
        }
        Disposition::DeadLettered { attempts } => {
            ctx.metrics.dead_letters.get_or_create(&labels).inc();
            ctx.metrics.event(event_type, "dead_lettered");
            warn!(attempts, "message failure; dead-lettered");
        }
    }
    Ok(())
}

/// Acks each delivery on its own (`multiple: false`: exact, whatever else
/// the channel has in flight).
async fn ack_all(deliveries: &[(Delivery, Instant)]) -> Result<(), BatchError> {
    let results = join_all(
        deliveries
            .iter()
            .map(|(delivery, _)| delivery.acker.ack(BasicAckOptions { multiple: false })),
    )
    .await;
    for result in results {
        result.map_err(|e| BatchError::Broker(e.into()))?;
    }
    Ok(())
}
