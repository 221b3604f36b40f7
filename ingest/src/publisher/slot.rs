//! One confirm channel and the rules for using it from many threads.
//!
//! A channel carries at most one unconfirmed publish at a time. A publish
//! takes the slot's turn, publishes, and holds the turn until its confirm
//! arrives (the publish timeout bounds the whole request). Two reasons:
//!
//! - lapin takes a publish's delivery tag (`register_pending`) and queues
//!   its frames (`push_frames`) in two steps under two different locks. Two
//!   HTTP worker threads on one channel could interleave them: A takes tag
//!   N, B takes N+1, B's frames reach the wire first, and the broker's ack
//!   for B's message then answers A.
//! - lapin attaches a `basic.return` to whichever confirm it completes next,
//!   and completes a multiple ack's confirms in `HashMap` order: with two
//!   publishes unconfirmed on a channel, one's return can ride on the
//!   other's confirm, and a dropped event be answered 200. With one, the
//!   broker's return (always sent before the ack) can only be its own.
//!
//! A publish cut short while waiting for its confirm (a timeout, a client
//! that hung up) leaves that confirm in the slot: the next publish waits for
//! it before publishing, so the rule holds even then. Concurrency comes from
//! the number of channels (`INGEST_PUBLISH_CHANNELS`).
//!
//! The slot also keeps the per-channel accounting that says when the channel
//! should be replaced: a run of nacks (RabbitMQ 3.10 keeps refusing on a
//! channel once a quorum queue refused it, even after its limit is lifted),
//! or too many confirms that nobody waited for to the end.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard};

/// Nacks in a row on one channel before it is replaced.
pub(super) const NACKS_BEFORE_REPLACE: u32 = 3;
/// Confirms given up on (timeout, client gone) on one channel before it is
/// replaced.
pub(super) const ABANDONED_BEFORE_REPLACE: u32 = 64;
/// Least time between two replacements asked for by one slot: a queue that
/// is genuinely full nacks every channel, and a new one does not help.
pub(super) const MIN_REPLACE_INTERVAL: Duration = Duration::from_secs(1);

/// Why a channel is to be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplaceReason {
    Nacks,
    AbandonedConfirms,
}

impl ReplaceReason {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Nacks => "nacks",
            Self::AbandonedConfirms => "abandoned_confirms",
        }
    }
}

/// A channel `C` (a lapin `Channel` in service; a fake in unit tests) that
/// one publish at a time may use, from its frames to its confirm `P` (a
/// lapin `PublisherConfirm` in service).
#[derive(Debug)]
pub(super) struct PublishSlot<C, P> {
    channel: C,
    /// Held by a publish from taking its tag until its confirm arrives.
    turn: Arc<Mutex<()>>,
    /// The confirm of a publish cut short while waiting for it; the next
    /// turn waits for it first.
    leftover: std::sync::Mutex<Option<P>>,
    /// A publish was cut short before its confirm was in hand (while its
    /// frames were being written): the next turn waits for every confirm
    /// due on the channel first.
    interrupted: AtomicBool,
    /// Set (under `turn`) when the slot is taken out of service: a publish
    /// that gets the turn afterwards must pick another slot.
    retired: AtomicBool,
    /// Nacks in a row; reset by any ack.
    nacks_in_a_row: AtomicU32,
    /// Confirms dropped before they resolved, over the channel's life.
    abandoned: AtomicU32,
    /// Set once a replacement has been asked for, so it is asked once.
    replace_asked: AtomicBool,
    /// When this slot's channel was opened, for [`MIN_REPLACE_INTERVAL`].
    opened_at: Instant,
}

/// One publish's turn on a slot: while it lives, no other publish uses the
/// channel. Dropped with a confirm still due, it leaves the confirm to the
/// slot.
pub(super) struct Turn<C, P> {
    slot: Arc<PublishSlot<C, P>>,
    /// The confirm this turn waits for (its own, or a leftover).
    pending: Option<P>,
    /// Between taking a tag and having the confirm in hand.
    publishing: bool,
    /// Released after `pending` is handed back (fields drop after `drop`).
    _guard: OwnedMutexGuard<()>,
}

impl<C, P> PublishSlot<C, P> {
    pub(super) fn new(channel: C) -> Self {
        Self {
            channel,
            turn: Arc::new(Mutex::new(())),
            leftover: std::sync::Mutex::new(None),
            interrupted: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            nacks_in_a_row: AtomicU32::new(0),
            abandoned: AtomicU32::new(0),
            replace_asked: AtomicBool::new(false),
            opened_at: Instant::now(),
        }
    }

    /// A slot whose channel was opened long enough ago to be replaced.
    #[cfg(test)]
    fn aged(channel: C) -> Self {
        let mut slot = Self::new(channel);
        slot.opened_at = Instant::now()
            .checked_sub(MIN_REPLACE_INTERVAL)
            .unwrap_or(slot.opened_at);
        slot
    }

    /// The channel, for what is not a publish (status, close).
    pub(super) fn channel(&self) -> &C {
        &self.channel
    }

    /// Waits for this slot's turn. `None` when the slot was retired before
    /// the turn came.
    pub(super) async fn turn(self: &Arc<Self>) -> Option<Turn<C, P>> {
        let guard = self.turn.clone().lock_owned().await;
        self.open_turn(guard)
    }

    /// The turn if nobody holds it now (and the slot is in service).
    pub(super) fn try_turn(self: &Arc<Self>) -> Option<Turn<C, P>> {
        let guard = self.turn.clone().try_lock_owned().ok()?;
        self.open_turn(guard)
    }

    fn open_turn(self: &Arc<Self>, guard: OwnedMutexGuard<()>) -> Option<Turn<C, P>> {
        if self.retired.load(Ordering::SeqCst) {
            return None;
        }
        let pending = lock(&self.leftover).take();
        Some(Turn {
            slot: self.clone(),
            pending,
            publishing: false,
            _guard: guard,
        })
    }

    /// Takes the slot out of service: once this returns, no publish can
    /// start on its channel (one under way finishes, or is dropped, first).
    pub(super) async fn retire(&self) {
        let _guard = self.turn.lock().await;
        self.retired.store(true, Ordering::SeqCst);
    }

    /// An ack: the channel takes messages.
    pub(super) fn acked(&self) {
        self.nacks_in_a_row.store(0, Ordering::Relaxed);
    }

    /// A nack; says whether the channel should now be replaced (once, and
    /// not sooner than [`MIN_REPLACE_INTERVAL`] after it was opened).
    pub(super) fn nacked(&self) -> Option<ReplaceReason> {
        let in_a_row = self.nacks_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        (in_a_row >= NACKS_BEFORE_REPLACE && self.opened_at.elapsed() >= MIN_REPLACE_INTERVAL)
            .then_some(ReplaceReason::Nacks)
            .filter(|_| self.ask_replace())
    }

    /// A confirm given up on; says whether the channel should now be
    /// replaced (once).
    pub(super) fn abandoned(&self) -> Option<ReplaceReason> {
        let count = self.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
        (count >= ABANDONED_BEFORE_REPLACE && self.opened_at.elapsed() >= MIN_REPLACE_INTERVAL)
            .then_some(ReplaceReason::AbandonedConfirms)
            .filter(|_| self.ask_replace())
    }

    /// Confirms given up on so far on this channel.
    #[cfg(test)]
    pub(super) fn abandoned_count(&self) -> u32 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// A replacement was asked for.
    pub(super) fn wants_replacing(&self) -> bool {
        self.replace_asked.load(Ordering::SeqCst)
    }

    /// True the first time only.
    fn ask_replace(&self) -> bool {
        !self.replace_asked.swap(true, Ordering::SeqCst)
    }
}

impl<C, P: Future + Unpin> Turn<C, P> {
    /// The slot this turn is on.
    pub(super) fn slot(&self) -> &Arc<PublishSlot<C, P>> {
        &self.slot
    }

    /// Waits for the confirm an earlier publish cut short left on the
    /// channel. True when one was cut short before its confirm was in hand:
    /// then wait for every confirm due on the channel too, and say so with
    /// [`Turn::settled_all`], before publishing.
    pub(super) async fn settle_earlier(&mut self) -> bool {
        if let Some(pending) = self.pending.as_mut() {
            let _ = pending.await;
            self.pending = None;
        }
        self.slot.interrupted.load(Ordering::SeqCst)
    }

    /// Every confirm due on the channel has arrived.
    pub(super) fn settled_all(&self) {
        self.slot.interrupted.store(false, Ordering::SeqCst);
    }

    /// Runs `publish` (take a tag, write the frames) on the channel, then
    /// waits for its confirm, all within this turn.
    pub(super) async fn publish<'a, F, Fut, E>(&'a mut self, publish: F) -> Result<P::Output, E>
    where
        F: FnOnce(&'a C) -> Fut,
        Fut: Future<Output = Result<P, E>> + 'a,
    {
        let Self {
            slot,
            pending,
            publishing,
            ..
        } = self;
        *publishing = true;
        let published = publish(&slot.channel).await;
        *publishing = false;
        let confirm = pending.insert(published?);
        let confirmation = confirm.await;
        *pending = None;
        Ok(confirmation)
    }
}

impl<C, P> Drop for Turn<C, P> {
    fn drop(&mut self) {
        if self.publishing {
            self.slot.interrupted.store(true, Ordering::SeqCst);
        }
        if let Some(pending) = self.pending.take() {
            *lock(&self.slot.leftover) = Some(pending);
        }
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Counts a confirm as abandoned unless it is settled first: created just
/// before the publish step, so a publish dropped anywhere after it (timeout,
/// a client that hung up) is counted.
pub(super) struct ConfirmWatch<'a, C, P> {
    slot: &'a PublishSlot<C, P>,
    settled: bool,
    /// Told of the abandonment, with the reason when it also asks for the
    /// channel's replacement.
    on_abandoned: Option<Box<dyn FnOnce(Option<ReplaceReason>) + Send + 'a>>,
}

impl<'a, C, P> ConfirmWatch<'a, C, P> {
    pub(super) fn new(
        slot: &'a PublishSlot<C, P>,
        on_abandoned: impl FnOnce(Option<ReplaceReason>) + Send + 'a,
    ) -> Self {
        Self {
            slot,
            settled: false,
            on_abandoned: Some(Box::new(on_abandoned)),
        }
    }

    /// The confirm arrived (or the publish failed outright): not abandoned.
    pub(super) fn settle(mut self) {
        self.settled = true;
    }
}

impl<C, P> Drop for ConfirmWatch<'_, C, P> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let replace = self.slot.abandoned();
        if let Some(on_abandoned) = self.on_abandoned.take() {
            on_abandoned(replace);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::mpsc;
    use std::time::Duration;

    use futures_util::FutureExt;
    use tokio::sync::oneshot;

    use super::*;

    /// A channel as lapin has it: a tag counter and the wire, behind two
    /// separate locks.
    #[derive(Default)]
    struct FakeChannel {
        next_tag: AtomicU64,
        wire: std::sync::Mutex<Vec<u64>>,
    }

    impl FakeChannel {
        fn wire(&self) -> Vec<u64> {
            self.wire.lock().unwrap().clone()
        }
    }

    /// A confirm that has already arrived.
    type Ready = std::future::Ready<u64>;

    /// The publish step. Tag 1 tells `has_tag` once it holds its tag, then
    /// writes its frames only once tag 2 is on the wire, or after `hold`:
    /// unserialised steps always cross, whatever the machine's load, and
    /// serialised ones never can.
    async fn step(
        channel: &FakeChannel,
        has_tag: &mpsc::Sender<()>,
        hold: Duration,
    ) -> Result<Ready, ()> {
        let tag = channel.next_tag.fetch_add(1, Ordering::SeqCst) + 1;
        if tag == 1 {
            has_tag.send(()).unwrap();
            let until = Instant::now() + hold;
            while !channel.wire().contains(&2) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        channel.wire.lock().unwrap().push(tag);
        Ok(std::future::ready(tag))
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    type Slot = PublishSlot<FakeChannel, Ready>;

    /// Two threads, each with its own runtime (as actix's HTTP workers), run
    /// `publish`; the second starts once the first holds its tag. Returns
    /// the wire's order.
    fn race(
        publish: impl Fn(Arc<Slot>, mpsc::Sender<()>) -> Option<u64> + Send + Sync + 'static,
    ) -> Vec<u64> {
        let slot = Arc::new(Slot::new(FakeChannel::default()));
        let publish = Arc::new(publish);
        let (has_tag, first_has_tag) = mpsc::channel();
        let first = {
            let (slot, publish, has_tag) = (slot.clone(), publish.clone(), has_tag.clone());
            std::thread::spawn(move || publish(slot, has_tag))
        };
        first_has_tag.recv().unwrap();
        let second = {
            let slot = slot.clone();
            std::thread::spawn(move || publish(slot, has_tag))
        };
        first.join().unwrap();
        second.join().unwrap();
        slot.channel().wire()
    }

    #[test]
    fn tags_reach_the_wire_in_the_order_they_were_taken() {
        let wire = race(|slot, has_tag| {
            runtime().block_on(async {
                let mut turn = slot.turn().await?;
                turn.publish(|channel| step(channel, &has_tag, Duration::from_millis(300)))
                    .await
                    .ok()
            })
        });
        assert_eq!(wire, [1, 2]);
    }

    #[test]
    fn without_the_slot_the_steps_cross() {
        // What the publisher once did: the step straight on the channel.
        // This is the crossing the slot exists to prevent.
        let wire = race(|slot, has_tag| {
            runtime().block_on(async {
                let confirm = step(slot.channel(), &has_tag, Duration::from_secs(60)).await;
                Some(confirm.ok()?.await)
            })
        });
        assert_eq!(wire, [2, 1]);
    }

    /// A fake publish that puts `tag` on the wire and hands back `confirm`.
    async fn publish_with<P>(channel: &FakeChannel, confirm: P) -> Result<P, ()> {
        let tag = channel.next_tag.fetch_add(1, Ordering::SeqCst) + 1;
        channel.wire.lock().unwrap().push(tag);
        Ok(confirm)
    }

    #[test]
    fn the_turn_is_held_until_the_confirm_arrives() {
        type Slot = PublishSlot<FakeChannel, oneshot::Receiver<u64>>;
        let slot = Arc::new(Slot::new(FakeChannel::default()));
        runtime().block_on(async {
            let (ack, confirm) = oneshot::channel();
            let mut turn = slot.turn().await.unwrap();
            let mut first = Box::pin(turn.publish(|channel| publish_with(channel, confirm)));
            assert!(first.as_mut().now_or_never().is_none(), "no confirm yet");
            assert_eq!(slot.channel().wire(), [1]);
            assert!(
                slot.try_turn().is_none(),
                "a second publish while the first is unconfirmed"
            );
            ack.send(7).unwrap();
            assert_eq!(first.await, Ok(Ok(7)));
            drop(turn);
            assert!(slot.try_turn().is_some(), "free once confirmed");
        });
    }

    #[test]
    fn a_confirm_given_up_on_is_waited_for_by_the_next_publish() {
        type Slot = PublishSlot<FakeChannel, oneshot::Receiver<u64>>;
        let slot = Arc::new(Slot::new(FakeChannel::default()));
        runtime().block_on(async {
            let (ack, confirm) = oneshot::channel();
            let mut turn = slot.turn().await.unwrap();
            let mut first = Box::pin(turn.publish(|channel| publish_with(channel, confirm)));
            assert!(first.as_mut().now_or_never().is_none());
            // The request gives up (a timeout, a client that hung up).
            drop(first);
            drop(turn);
            let mut next = slot.try_turn().expect("the turn is free");
            let mut settle = Box::pin(next.settle_earlier());
            assert!(
                settle.as_mut().now_or_never().is_none(),
                "published while an earlier confirm was due"
            );
            ack.send(7).unwrap();
            assert!(!settle.await, "nothing else is due");
            assert!(next.pending.is_none());
        });
    }

    #[test]
    fn a_publish_cut_short_in_its_frames_makes_the_next_wait_for_every_confirm() {
        let slot = Arc::new(Slot::new(FakeChannel::default()));
        runtime().block_on(async {
            let mut turn = slot.turn().await.unwrap();
            let mut first = Box::pin(turn.publish(|_| std::future::pending::<Result<Ready, ()>>()));
            assert!(first.as_mut().now_or_never().is_none());
            drop(first);
            drop(turn);
            let mut next = slot.turn().await.unwrap();
            assert!(
                next.settle_earlier().await,
                "every confirm due is waited for"
            );
            next.settled_all();
            // Settled: the one after does not wait again.
            drop(next);
            let mut after = slot.turn().await.unwrap();
            assert!(!after.settle_earlier().await);
        });
    }

    #[test]
    fn a_retired_slot_takes_no_publish() {
        let slot = Arc::new(Slot::new(FakeChannel::default()));
        runtime().block_on(async {
            let mut turn = slot.turn().await.unwrap();
            let confirm = turn
                .publish(|channel| publish_with(channel, std::future::ready(1)))
                .await;
            assert_eq!(confirm, Ok(1));
            drop(turn);
            slot.retire().await;
            assert!(slot.turn().await.is_none());
            assert!(slot.try_turn().is_none());
        });
        assert_eq!(slot.channel().wire(), [1]);
    }

    #[test]
    fn a_run_of_nacks_asks_for_a_new_channel_once() {
        let slot = PublishSlot::<(), ()>::aged(());
        assert_eq!(slot.nacked(), None);
        slot.acked();
        for _ in 1..NACKS_BEFORE_REPLACE {
            assert_eq!(slot.nacked(), None);
        }
        assert_eq!(slot.nacked(), Some(ReplaceReason::Nacks));
        assert_eq!(slot.nacked(), None, "asked once");
    }

    #[test]
    fn a_channel_younger_than_the_interval_is_not_replaced_yet() {
        let slot = PublishSlot::<(), ()>::new(());
        for _ in 0..NACKS_BEFORE_REPLACE * 3 {
            assert_eq!(slot.nacked(), None, "replaced a channel just opened");
        }
        assert!(!slot.wants_replacing());
    }

    #[test]
    fn dropped_confirm_watches_are_counted_and_past_the_bound_ask_for_a_new_channel() {
        let slot = PublishSlot::<(), ()>::aged(());
        let asked = AtomicU32::new(0);
        ConfirmWatch::new(&slot, |_| panic!("a settled confirm is not abandoned")).settle();
        assert_eq!(
            slot.abandoned_count(),
            0,
            "a settled confirm is not abandoned"
        );
        for _ in 0..ABANDONED_BEFORE_REPLACE + 5 {
            drop(ConfirmWatch::new(&slot, |reason| {
                if let Some(reason) = reason {
                    assert_eq!(reason, ReplaceReason::AbandonedConfirms);
                    asked.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        assert_eq!(slot.abandoned_count(), ABANDONED_BEFORE_REPLACE + 5);
        assert_eq!(asked.load(Ordering::SeqCst), 1, "asked once, at the bound");
    }

    #[test]
    fn a_publish_dropped_while_waiting_for_its_confirm_is_abandoned() {
        type Slot = PublishSlot<FakeChannel, oneshot::Receiver<u64>>;
        let slot = Arc::new(Slot::new(FakeChannel::default()));
        let (_ack, confirm) = oneshot::channel();
        runtime().block_on(async {
            let mut publish = Box::pin(async {
                let watch = ConfirmWatch::new(&slot, |_| {});
                let mut turn = slot.turn().await.unwrap();
                let _ = turn.publish(|channel| publish_with(channel, confirm)).await;
                watch.settle();
            });
            // The confirm never comes; the request is given up.
            assert!(publish.as_mut().now_or_never().is_none());
        });
        assert_eq!(slot.abandoned_count(), 1);
    }
}
