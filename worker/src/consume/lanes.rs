//! One consumer, `WORKER_CONSUMERS` lanes. The consumer parses each
//! delivery and hands it to a lane chosen by its subject (else its
//! session), so the events of one person are applied by one lane, one
//! batch after another: the lanes of a worker never wait on each other's
//! row locks. (With one AMQP consumer per lane, the broker spread a
//! person's events round-robin over the lanes, whose transactions then
//! queued behind each other on the same rows: a convoy that cost both
//! throughput and latency.) Routing is only an optimisation: correctness
//! still rests on the row locks, as between workers.
//!
//! Each lane takes a batch (up to `WORKER_BATCH_SIZE`, waiting at most
//! `WORKER_BATCH_LINGER_MS` for it to fill), processes it ([`batch`]) and
//! repeats; on shutdown it stops taking batches (what it holds unstarted
//! is requeued by the broker when the link closes).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::future::try_join_all;
use lapin::Channel;
use lapin::message::Delivery;
use tokio::sync::mpsc;

use super::batch::{self, Parsed};
use super::{Context, connect};

/// Consumes `link` until shutdown (`Ok`) or a broker error.
pub async fn run(ctx: &Context, link: &mut connect::Link) -> Result<(), String> {
    let lanes = ctx.settings.consumers.max(1);
    // Unbounded, yet bounded by the prefetch window: the broker sends no
    // more than that many unacked deliveries. A full lane never stalls the
    // others behind the consumer.
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..lanes).map(|_| mpsc::unbounded_channel()).unzip();
    let publisher = &link.publisher;
    let dispatch = dispatch(ctx, &mut link.consumer, senders);
    let lanes = try_join_all(
        receivers
            .into_iter()
            .map(|receiver| lane(ctx, publisher, receiver)),
    );
    tokio::try_join!(dispatch, lanes).map(|_| ())
}

/// Parses deliveries and routes them to the lanes, until shutdown.
async fn dispatch(
    ctx: &Context,
    consumer: &mut lapin::Consumer,
    lanes: Vec<mpsc::UnboundedSender<(Parsed, Instant)>>,
) -> Result<(), String> {
    loop {
        let next = tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => return Ok(()),
            next = consumer.next() => next,
        };
        let delivery: Delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => return Err(error.to_string()),
            None => return Err("the broker cancelled the consumer".to_owned()),
        };
        let arrived = Instant::now();
        let parsed = batch::parse(ctx, delivery);
        let mut hasher = DefaultHasher::new();
        match &parsed.event {
            Ok(event) => event
                .subject_key
                .as_deref()
                .unwrap_or(&event.session_id)
                .hash(&mut hasher),
            Err(_) => parsed.delivery.delivery_tag.hash(&mut hasher),
        }
        let index = usize::try_from(hasher.finish() % lanes.len() as u64).unwrap_or(0);
        if let Some(lane) = lanes.get(index) {
            // A lane only stops after shutdown or a broker error, both of
            // which end this loop too; the delivery is then requeued.
            let _ = lane.send((parsed, arrived));
        }
    }
}

/// Takes batches from `receiver` and processes them, until shutdown or
/// until the consumer stops routing.
async fn lane(
    ctx: &Context,
    publisher: &Channel,
    mut receiver: mpsc::UnboundedReceiver<(Parsed, Instant)>,
) -> Result<(), String> {
    loop {
        let first = tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => return Ok(()),
            first = receiver.recv() => first,
        };
        let Some(first) = first else { return Ok(()) };
        let mut deliveries = vec![first];
        let deadline = tokio::time::Instant::now() + ctx.settings.batch_linger;
        while deliveries.len() < ctx.settings.batch_size {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(next)) => deliveries.push(next),
                Ok(None) | Err(_) => break,
            }
        }
        match batch::process(ctx, publisher, deliveries).await {
            Ok(()) => {}
            Err(batch::BatchError::ShuttingDown) => return Ok(()),
            Err(batch::BatchError::Broker(error)) => return Err(error),
        }
    }
}
