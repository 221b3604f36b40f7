//! Prometheus metrics of the worker, served as text on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The Stripe event type (`unknown` when the body could not be read).
    pub event_type: String,
    /// applied | stale | duplicate | replayed | redacted | retried | dead_lettered
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// unparseable | unknown_type | status_mismatch | refused
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// The outbox row's kind (`outcome_message`, `notify_user_retry`, …).
    pub kind: String,
    /// sent | superseded | skipped | failed | retried | waiting
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionKindLabels {
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// The queue's real name, prefix included (`idv.events`, `idv.events.dlq`).
    pub queue: String,
}

/// Every metric the worker exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub events: Family<EventLabels, Counter>,
    pub duplicates: Counter,
    pub stale: Counter,
    pub failed_attempts: Family<CodeLabels, Counter>,
    pub attempt_limit_reached: Counter,
    /// From delivery to ack, per event.
    pub processing_seconds: Histogram,
    pub batch_size: Histogram,
    pub message_retries: Family<KindLabels, Counter>,
    pub dead_letters: Family<KindLabels, Counter>,
    /// Retries of a batch because PostgreSQL was unavailable (the
    /// dead-letter drain's batches included).
    pub infrastructure_retries: Counter,
    /// Deliveries sent to wait a second because their subject was held up
    /// in a lane whose share of the window was full.
    pub deferred: Counter,
    /// Deferrals the broker did not take (a retry queue full or missing):
    /// the delivery stayed on the board instead.
    pub defer_failures: Counter,
    /// now − the event's `created`, for the last batch.
    pub consumer_lag_seconds: Gauge<f64, AtomicU64>,
    /// Outbox rows the dispatcher handled, by kind and result.
    pub outbox_actions: Family<ActionLabels, Counter>,
    /// How long handling one row took (judging, performing), by kind.
    pub outbox_action_seconds: Family<ActionKindLabels, Histogram>,
    /// Age of the oldest pending row that is due (not waiting for an event).
    pub outbox_oldest_pending_seconds: Gauge<f64, AtomicU64>,
    /// DLQ messages the drain recorded in `dead_letters` and acked
    /// (a redelivered one found there already included).
    pub dead_letters_drained: Counter,
    /// Rows of `dead_letters` not replayed yet (see `dead_letter::gauges`).
    pub dead_letters_waiting: Gauge,
    /// Age of the oldest of them, 0 if none.
    pub dead_letter_oldest_age_seconds: Gauge<f64, AtomicU64>,
    /// Ready messages in the work queue and the DLQ (passive declare).
    pub queue_messages: Family<QueueLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("idv_worker");
        let events = Family::default();
        registry.register(
            "events",
            "Events processed, by type and outcome",
            events.clone(),
        );
        let duplicates = Counter::default();
        registry.register(
            "duplicates",
            "Events already in the inbox",
            duplicates.clone(),
        );
        let stale = Counter::default();
        registry.register(
            "stale_events",
            "Events older than their session's state",
            stale.clone(),
        );
        let failed_attempts = Family::default();
        registry.register(
            "failed_attempts",
            "Failed submissions counted, by code",
            failed_attempts.clone(),
        );
        let attempt_limit_reached = Counter::default();
        registry.register(
            "subjects_manual_review",
            "Subjects that reached the attempt limit or a non-retryable code",
            attempt_limit_reached.clone(),
        );
        let processing_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "processing_seconds",
            "Time from delivery to ack",
            processing_seconds.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "batch_size",
            "Deliveries per transaction",
            batch_size.clone(),
        );
        let message_retries = Family::default();
        registry.register(
            "message_retries",
            "Messages sent to a retry queue",
            message_retries.clone(),
        );
        let dead_letters = Family::default();
        registry.register(
            "dead_letters",
            "Messages sent to the dead-letter queue",
            dead_letters.clone(),
        );
        let infrastructure_retries = Counter::default();
        registry.register(
            "infrastructure_retries",
            "Batch retries while PostgreSQL was unavailable",
            infrastructure_retries.clone(),
        );
        let deferred = Counter::default();
        registry.register(
            "deferred",
            "Deliveries deferred (1 s, growing with each deferral of the same delivery): their subject was held up in a lane whose share of the window was full",
            deferred.clone(),
        );
        let defer_failures = Counter::default();
        registry.register(
            "defer_failures",
            "Deferrals the broker did not take; the delivery was kept on the board instead",
            defer_failures.clone(),
        );
        let consumer_lag_seconds = Gauge::default();
        registry.register(
            "consumer_lag_seconds",
            "Now minus the newest processed event's created",
            consumer_lag_seconds.clone(),
        );
        let outbox_actions = Family::default();
        registry.register(
            "outbox_actions",
            "Outbox rows handled by the dispatcher, by kind and result (sent, superseded, skipped, failed, retried, waiting)",
            outbox_actions.clone(),
        );
        let outbox_action_seconds =
            Family::<ActionKindLabels, Histogram>::new_with_constructor(action_buckets);
        registry.register(
            "outbox_action_seconds",
            "Time to handle one outbox row, by kind",
            outbox_action_seconds.clone(),
        );
        let outbox_oldest_pending_seconds = Gauge::default();
        registry.register(
            "outbox_oldest_pending_seconds",
            "Age of the oldest pending outbox row that is due",
            outbox_oldest_pending_seconds.clone(),
        );
        let dead_letters_drained = Counter::default();
        registry.register(
            "dead_letters_drained",
            "Messages taken from the dead-letter queue into the dead_letters table (acked once committed)",
            dead_letters_drained.clone(),
        );
        let dead_letters_waiting = Gauge::default();
        registry.register(
            "dead_letters_waiting",
            "Dead letters in the dead_letters table not replayed yet",
            dead_letters_waiting.clone(),
        );
        let dead_letter_oldest_age_seconds = Gauge::default();
        registry.register(
            "dead_letter_oldest_age_seconds",
            "Age of the oldest dead letter not replayed yet (0 if none)",
            dead_letter_oldest_age_seconds.clone(),
        );
        let queue_messages = Family::default();
        registry.register(
            "queue_messages",
            "Messages ready in the work queue and the dead-letter queue",
            queue_messages.clone(),
        );
        Self {
            registry,
            events,
            duplicates,
            stale,
            failed_attempts,
            attempt_limit_reached,
            processing_seconds,
            batch_size,
            message_retries,
            dead_letters,
            infrastructure_retries,
            deferred,
            defer_failures,
            consumer_lag_seconds,
            outbox_actions,
            outbox_action_seconds,
            outbox_oldest_pending_seconds,
            dead_letters_drained,
            dead_letters_waiting,
            dead_letter_oldest_age_seconds,
            queue_messages,
        }
    }
}

fn action_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    pub fn event(&self, event_type: &str, outcome: &str) {
        self.events
            .get_or_create(&EventLabels {
                event_type: event_type.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// One outbox row handled.
    pub fn outbox_action(&self, kind: &str, result: &str, took: std::time::Duration) {
        self.outbox_actions
            .get_or_create(&ActionLabels {
                kind: kind.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.outbox_action_seconds
            .get_or_create(&ActionKindLabels {
                kind: kind.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
