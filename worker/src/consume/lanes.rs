//! One consumer, `WORKER_CONSUMERS` lanes. The consumer parses each
//! delivery and puts it on a board of pending deliveries; each lane takes a
//! batch from the board (up to `WORKER_BATCH_SIZE`, waiting at most
//! `WORKER_BATCH_LINGER_MS` for it to fill), processes it ([`batch`]) and
//! repeats. A delivery's key is its subject (else its session): while a
//! lane has a key in hand, the other lanes leave that key's deliveries on
//! the board, so the events naming one key are applied by one lane at a
//! time. The key is the one the event names, not the subject its session
//! is finally mapped to (a redacted copy is keyed by its session id; a
//! session whose events name different keys has several), so two lanes
//! can still meet on one session's or subject's rows, one waiting for the
//! other's row lock: rare, and only time lost. (With one AMQP consumer per lane, the broker spread a person's events
//! round-robin over the lanes, whose transactions then queued behind each
//! other on the same rows.) Any free lane takes any other key: routing is
//! only an optimisation, correctness still rests on the row locks.
//!
//! One person held up (their row locked elsewhere, a slow batch) must not
//! idle the worker. The lanes share the prefetch window (`WORKER_PREFETCH`
//! × lanes), and before this board each lane had an unbounded queue fed by
//! subject hash: a stuck lane soaked up the whole window, its person's
//! events and those of everyone hashed with it, while the other lanes sat
//! idle. Now a lane holds its batch, and the board holds for the keys it
//! has in hand at most `WORKER_PREFETCH − WORKER_BATCH_SIZE` deliveries:
//! one lane's share of the window in all. Beyond that share such a
//! delivery is deferred ([`defer`]: a copy waits in a retry queue, 1 s
//! growing with its deferrals, the original is acked), so the rest of the window always goes to people
//! a free lane can apply now. Waiting instead (the consumer stops reading)
//! would stall everyone behind the stuck person's next delivery, and a
//! requeue would count a delivery toward `x-delivery-limit` on RabbitMQ
//! 3.x, sending a busy person's events to the DLQ within moments.
//!
//! A deferral the broker does not take (a retry queue full or missing)
//! does not end the link, which would return the whole window with one
//! delivery counted each: the delivery stays on the board over the share,
//! `idv_worker_defer_failures_total` counts it, and deferrals pause with
//! backoff (1 s up to 30 s), the board taking what it would have deferred.
//!
//! One lane fills a batch at a time: the others wait their turn to fill
//! (processing meanwhile is as parallel as ever). The lanes are polled in
//! index order, and before this any idle lane took what it could: a lower
//! lane that finished its batch while a higher one lingered started a
//! batch of its own with the next delivery, so a steady stream went out in
//! more, smaller transactions, and a transaction costs PostgreSQL several
//! times what one more event in it does. With one filler, the deliveries
//! that arrive during one linger go into one batch; a backlog still fills
//! each batch at once.
//!
//! On shutdown the dispatcher cancels the consumer at once, so the broker
//! stops filling the window, and the lanes stop taking batches (those in
//! hand are finished and acked); what the board holds is requeued by the
//! broker when the link closes, one delivery counted each.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use futures_util::future::try_join_all;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::BasicCancelOptions;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::batch::{self, Parsed};
use super::{Context, LinkError, connect, defer};

/// A parsed delivery waiting for a lane.
#[derive(Debug)]
struct Pending {
    parsed: Parsed,
    arrived: Instant,
    /// Subject, else session; `None` for a body that could not be read.
    key: Option<String>,
}

/// Deliveries waiting for a lane, and the keys each lane has in hand.
#[derive(Debug, Default)]
struct Board {
    pending: VecDeque<Pending>,
    /// Key → the lane whose batch holds it.
    in_hand: HashMap<String, usize>,
    /// Pending deliveries per key.
    pending_per_key: HashMap<String, usize>,
}

impl Board {
    /// Pending deliveries whose key lane `lane` has in hand.
    fn blocked_behind(&self, lane: usize) -> usize {
        self.in_hand
            .iter()
            .filter(|(_, held_by)| **held_by == lane)
            .map(|(key, _)| self.pending_per_key.get(key).copied().unwrap_or(0))
            .sum()
    }

    /// Moves up to `room` deliveries `lane` may take into `batch`, in
    /// arrival order, marking their keys in hand.
    fn take(&mut self, lane: usize, room: usize, batch: &mut Vec<(Parsed, Instant)>) {
        let mut index = 0;
        let mut taken = 0;
        while taken < room && index < self.pending.len() {
            let free = self.pending[index]
                .key
                .as_ref()
                .is_none_or(|key| self.in_hand.get(key).is_none_or(|held| *held == lane));
            if !free {
                index += 1;
                continue;
            }
            let Some(pending) = self.pending.remove(index) else {
                break;
            };
            if let Some(key) = pending.key {
                if let Some(count) = self.pending_per_key.get_mut(&key) {
                    *count -= 1;
                    if *count == 0 {
                        self.pending_per_key.remove(&key);
                    }
                }
                self.in_hand.insert(key, lane);
            }
            batch.push((pending.parsed, pending.arrived));
            taken += 1;
        }
    }

    /// Puts `pending` at the end of the board.
    fn push(&mut self, pending: Pending) {
        if let Some(key) = &pending.key {
            *self.pending_per_key.entry(key.clone()).or_insert(0) += 1;
        }
        self.pending.push_back(pending);
    }

    /// Lane `lane` finished its batch: its keys are free again.
    fn release(&mut self, lane: usize) {
        self.in_hand.retain(|_, held_by| *held_by != lane);
    }
}

/// The board, a signal bumped at every change of it, and the turn to
/// fill a batch.
struct Shared {
    board: std::sync::Mutex<Board>,
    changed: watch::Sender<u64>,
    /// Held by the lane filling a batch, from waiting for its first
    /// delivery until the batch is closed (full or lingered).
    filling: tokio::sync::Mutex<()>,
}

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut Board) -> T) -> T {
        let mut board = match self.board.lock() {
            Ok(board) => board,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut board)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Consumes `link` until shutdown (`Ok`) or a broker error.
pub async fn run(ctx: &Context, link: &mut connect::Link) -> Result<(), LinkError> {
    let lanes = ctx.settings.consumers.max(1);
    let shared = Shared {
        board: std::sync::Mutex::new(Board::default()),
        changed: watch::Sender::new(0),
        filling: tokio::sync::Mutex::new(()),
    };
    let publisher = &link.publisher;
    let dispatch = dispatch(ctx, &link.channel, &mut link.consumer, publisher, &shared);
    let lanes = try_join_all((0..lanes).map(|index| lane(ctx, publisher, &shared, index)));
    tokio::try_join!(dispatch, lanes).map(|_| ())
}

/// The key a delivery is applied under.
fn key_of(parsed: &Parsed) -> Option<String> {
    let event = parsed.event.as_ref().ok()?;
    Some(
        event
            .subject_key
            .as_deref()
            .unwrap_or(&event.session_id)
            .to_owned(),
    )
}

/// Parses deliveries onto the board (or defers them), until shutdown.
async fn dispatch(
    ctx: &Context,
    channel: &Channel,
    consumer: &mut lapin::Consumer,
    publisher: &Channel,
    shared: &Shared,
) -> Result<(), LinkError> {
    // What the board may hold behind one lane's keys in hand, beyond the
    // lane's batch: the lane's share of the window.
    let share = usize::from(ctx.settings.prefetch).saturating_sub(ctx.settings.batch_size);
    let mut defer_backoff = defer_backoff_builder().build();
    let mut defer_paused_until = tokio::time::Instant::now();
    loop {
        let next = tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => {
                cancel(channel, consumer).await;
                return Ok(());
            }
            next = consumer.next() => next,
        };
        let delivery: Delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => return Err(error.into()),
            None => return Err(LinkError::ConsumerCancelled),
        };
        let arrived = Instant::now();
        let parsed = batch::parse(ctx, delivery);
        let key = key_of(&parsed);
        let pending = Pending {
            parsed,
            arrived,
            key,
        };
        let refused = shared.with(|board| {
            if let Some(key) = &pending.key
                && let Some(lane) = board.in_hand.get(key).copied()
                && board.blocked_behind(lane) >= share
            {
                return Some(pending);
            }
            board.push(pending);
            None
        });
        let Some(pending) = refused else {
            shared.bump();
            continue;
        };
        if tokio::time::Instant::now() < defer_paused_until {
            // A deferral failed a moment ago: keep it over the share.
            shared.with(|board| board.push(pending));
            shared.bump();
            continue;
        }
        match defer::defer(publisher, &ctx.settings.topology, &pending.parsed.delivery).await {
            Ok(()) => {
                debug!("lane's share of the window full; delivery deferred");
                ctx.metrics.deferred.inc();
                defer_backoff = defer_backoff_builder().build();
            }
            Err(error) => {
                // Not the link's end: the delivery stays on the board, over
                // its share, and the next deferrals wait (until then the
                // board takes them over the share too). Were the link gone,
                // the consumer's stream or the next ack says so.
                ctx.metrics.defer_failures.inc();
                let delay = defer_backoff.next().unwrap_or(DEFER_BACKOFF_MAX);
                defer_paused_until = tokio::time::Instant::now() + delay;
                warn!(
                    error = format!("{:#}", anyhow::Error::new(error)),
                    retry_in = ?delay,
                    "a deferral failed; the delivery is kept on the board"
                );
                shared.with(|board| board.push(pending));
                shared.bump();
            }
        }
    }
}

/// Longest pause of deferrals after one failed.
const DEFER_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Pauses of deferrals after a failed one: 1 s up to 30 s.
fn defer_backoff_builder() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(DEFER_BACKOFF_MAX)
        .with_jitter()
        .without_max_times()
}

/// Cancels the consumer, so the broker stops filling the window, once
/// shutdown starts (the batches in hand are still finished and acked).
async fn cancel(channel: &Channel, consumer: &lapin::Consumer) {
    let cancelled = channel
        .basic_cancel(
            consumer.tag(),
            BasicCancelOptions {
                nowait: false, // wait for cancel-ok: no delivery after this
            },
        )
        .await;
    if let Err(error) = cancelled {
        warn!(%error, "cancelling the consumer at shutdown");
    }
}

/// Takes batches from the board and processes them, until shutdown.
async fn lane(
    ctx: &Context,
    publisher: &Channel,
    shared: &Shared,
    index: usize,
) -> Result<(), LinkError> {
    let mut changes = shared.changed.subscribe();
    loop {
        let mut deliveries = Vec::new();
        // This lane's turn to fill (the lock is fair: lanes fill in turn).
        let filling = tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => return Ok(()),
            filling = shared.filling.lock() => filling,
        };
        // The first delivery: wait for one this lane may take.
        loop {
            if ctx.shutdown.is_cancelled() {
                return Ok(());
            }
            changes.borrow_and_update();
            shared.with(|board| board.take(index, ctx.settings.batch_size, &mut deliveries));
            if !deliveries.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => return Ok(()),
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
            }
        }
        // Then let the batch fill for up to the linger.
        let deadline = tokio::time::Instant::now() + ctx.settings.batch_linger;
        while deliveries.len() < ctx.settings.batch_size {
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {
                    changes.borrow_and_update();
                    let room = ctx.settings.batch_size - deliveries.len();
                    shared.with(|board| board.take(index, room, &mut deliveries));
                }
                Ok(Err(_)) | Err(_) => break,
            }
        }
        drop(filling);
        let result = batch::process(ctx, publisher, deliveries).await;
        shared.with(|board| board.release(index));
        shared.bump();
        match result {
            Ok(()) => {}
            Err(batch::BatchError::ShuttingDown) => return Ok(()),
            Err(batch::BatchError::Broker(error)) => return Err(error),
        }
    }
}
