//! One confirm channel and the rules for using it from many threads.
//!
//! lapin takes a publish's delivery tag (`register_pending`) and queues its
//! frames (`push_frames`) in two steps under two different locks. Two HTTP
//! worker threads publishing on one channel can interleave them: A takes tag
//! N, B takes N+1, B's frames reach the wire first, and the broker's ack for
//! B's message then answers A. A [`PublishSlot`] makes "take the tag and
//! queue the frames" one step: a publish holds the slot's turn for exactly
//! `basic_publish(..).await` (which completes once its last frame is
//! written) and releases it before waiting for its confirm, so confirms
//! still pipeline.
//!
//! The slot also keeps the per-channel accounting that says when the channel
//! should be replaced: a run of nacks (RabbitMQ 3.10 keeps refusing on a
//! channel once a quorum queue refused it, even after its limit is lifted),
//! or too many confirms that nobody waits for any more (lapin keeps each one,
//! and any returned body it carries, until the channel closes).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::sync::Mutex;

/// Nacks in a row on one channel before it is replaced.
pub(super) const NACKS_BEFORE_REPLACE: u32 = 3;
/// Confirms given up on (timeout, client gone) on one channel before it is
/// replaced: closing it is the only way to make lapin let go of them.
pub(super) const ABANDONED_BEFORE_REPLACE: u32 = 64;

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
/// one publish at a time may write to.
#[derive(Debug)]
pub(super) struct PublishSlot<C> {
    channel: C,
    /// Held by a publish from taking its tag until its frames are queued.
    turn: Mutex<()>,
    /// Set (under `turn`) when the slot is taken out of service: a publish
    /// that gets the turn afterwards must pick another slot.
    retired: AtomicBool,
    /// Nacks in a row; reset by any ack.
    nacks_in_a_row: AtomicU32,
    /// Confirms dropped before they resolved, over the channel's life.
    abandoned: AtomicU32,
    /// Set once a replacement has been asked for, so it is asked once.
    replace_asked: AtomicBool,
}

impl<C> PublishSlot<C> {
    pub(super) fn new(channel: C) -> Self {
        Self {
            channel,
            turn: Mutex::new(()),
            retired: AtomicBool::new(false),
            nacks_in_a_row: AtomicU32::new(0),
            abandoned: AtomicU32::new(0),
            replace_asked: AtomicBool::new(false),
        }
    }

    /// The channel, for what is not a publish (status, close).
    pub(super) fn channel(&self) -> &C {
        &self.channel
    }

    /// Runs `step` (take a tag, queue the frames) during this slot's turn and
    /// returns what it returned: the confirm to wait for, outside the turn.
    /// `None` when the slot was retired before the turn came.
    pub(super) async fn publish<'a, F, Fut, T>(&'a self, step: F) -> Option<T>
    where
        F: FnOnce(&'a C) -> Fut,
        Fut: Future<Output = T> + 'a,
    {
        let turn = self.turn.lock().await;
        if self.retired.load(Ordering::SeqCst) {
            return None;
        }
        let out = step(&self.channel).await;
        drop(turn);
        Some(out)
    }

    /// Takes the slot out of service: once this returns, no publish can
    /// start on its channel (one in its step finishes first).
    pub(super) async fn retire(&self) {
        let _guard = self.turn.lock().await;
        self.retired.store(true, Ordering::SeqCst);
    }

    /// An ack: the channel takes messages.
    pub(super) fn acked(&self) {
        self.nacks_in_a_row.store(0, Ordering::Relaxed);
    }

    /// A nack; says whether the channel should now be replaced (once).
    pub(super) fn nacked(&self) -> Option<ReplaceReason> {
        let in_a_row = self.nacks_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        (in_a_row >= NACKS_BEFORE_REPLACE)
            .then_some(ReplaceReason::Nacks)
            .filter(|_| self.ask_replace())
    }

    /// A confirm given up on; says whether the channel should now be
    /// replaced (once).
    pub(super) fn abandoned(&self) -> Option<ReplaceReason> {
        let count = self.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
        (count >= ABANDONED_BEFORE_REPLACE)
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

/// Counts a confirm as abandoned unless it is settled first: created just
/// before the publish step, so a publish dropped anywhere after it (timeout,
/// a client that hung up) is counted.
pub(super) struct ConfirmWatch<'a, C> {
    slot: &'a PublishSlot<C>,
    settled: bool,
    /// Told of the abandonment, with the reason when it also asks for the
    /// channel's replacement.
    on_abandoned: Option<Box<dyn FnOnce(Option<ReplaceReason>) + Send + 'a>>,
}

impl<'a, C> ConfirmWatch<'a, C> {
    pub(super) fn new(
        slot: &'a PublishSlot<C>,
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

impl<C> Drop for ConfirmWatch<'_, C> {
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
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use super::*;

    /// A channel as lapin has it: a tag counter and the wire, behind two
    /// separate locks.
    #[derive(Default)]
    struct FakeChannel {
        next_tag: AtomicU64,
        wire: std::sync::Mutex<Vec<u64>>,
    }

    /// The publish step with a pause between its two phases, as a second
    /// thread's step can fall between `register_pending` and `push_frames`.
    /// The first tag pauses longest, so unserialised steps always cross.
    async fn step(channel: &FakeChannel) -> u64 {
        let tag = channel.next_tag.fetch_add(1, Ordering::SeqCst) + 1;
        let pause = if tag == 1 { 100 } else { 0 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        channel.wire.lock().unwrap().push(tag);
        tag
    }

    /// Two threads, each with its own runtime (as actix's HTTP workers), run
    /// `publish` at once; returns the wire's order.
    fn race(publish: fn(Arc<PublishSlot<FakeChannel>>) -> Option<u64>) -> Vec<u64> {
        let slot = Arc::new(PublishSlot::new(FakeChannel::default()));
        let start = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let slot = slot.clone();
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    // The second thread starts once the first has its tag.
                    if i == 1 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    publish(slot)
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        slot.channel().wire.lock().unwrap().clone()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn tags_reach_the_wire_in_the_order_they_were_taken() {
        let wire = race(|slot| runtime().block_on(slot.publish(step)));
        assert_eq!(wire, [1, 2]);
    }

    #[test]
    fn without_the_slot_the_steps_cross() {
        // What the publisher did before: the step straight on the channel.
        // This is the crossing the slot exists to prevent.
        let wire = race(|slot| Some(runtime().block_on(step(slot.channel()))));
        assert_eq!(wire, [2, 1]);
    }

    #[test]
    fn a_retired_slot_takes_no_publish() {
        let slot = PublishSlot::new(FakeChannel::default());
        runtime().block_on(async {
            assert_eq!(slot.publish(step).await, Some(1));
            slot.retire().await;
            assert_eq!(slot.publish(step).await, None);
        });
        assert_eq!(*slot.channel().wire.lock().unwrap(), [1]);
    }

    #[test]
    fn a_run_of_nacks_asks_for_a_new_channel_once() {
        let slot = PublishSlot::new(());
        assert_eq!(slot.nacked(), None);
        slot.acked();
        for _ in 1..NACKS_BEFORE_REPLACE {
            assert_eq!(slot.nacked(), None);
        }
        assert_eq!(slot.nacked(), Some(ReplaceReason::Nacks));
        assert_eq!(slot.nacked(), None, "asked once");
    }

    #[test]
    fn dropped_confirm_watches_are_counted_and_past_the_bound_ask_for_a_new_channel() {
        let slot = PublishSlot::new(());
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
        let slot = PublishSlot::new(FakeChannel::default());
        runtime().block_on(async {
            let publish = async {
                let watch = ConfirmWatch::new(&slot, |_| {});
                slot.publish(step).await;
                // The confirm never comes.
                std::future::pending::<()>().await;
                watch.settle();
            };
            let timed_out = tokio::time::timeout(Duration::from_millis(200), publish).await;
            assert!(timed_out.is_err());
        });
        assert_eq!(slot.abandoned_count(), 1);
    }
}
