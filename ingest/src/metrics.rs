//! Prometheus metrics of the ingest service, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::publisher::PublisherMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Every metric ingest exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by how they were answered.
    pub requests: Family<OutcomeLabel, Counter>,
    /// Signature failures by reason (`missing_header`, `no_matching_signature`…).
    pub signature_failures: Family<ReasonLabel, Counter>,
    /// Time from publish to broker confirm.
    pub publish_seconds: Histogram,
    /// Publishes that did not end in a confirm, by reason.
    pub publish_failures: Family<ReasonLabel, Counter>,
    /// Requests being handled right now.
    pub in_flight: Gauge,
    /// What the publisher counts (abandoned confirms, channel replacements).
    pub publisher: PublisherMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("idv_ingest");
        let requests = Family::<OutcomeLabel, Counter>::default();
        let signature_failures = Family::<ReasonLabel, Counter>::default();
        // 0.25 ms to ~4 s: a confirm from a local broker is about a millisecond.
        let publish_seconds = Histogram::new([
            0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.5,
            1.0, 2.0, 4.0,
        ]);
        let publish_failures = Family::<ReasonLabel, Counter>::default();
        let in_flight = Gauge::default();
        let publisher = PublisherMetrics::default();
        registry.register("requests", "Webhook requests by outcome", requests.clone());
        registry.register(
            "signature_failures",
            "Stripe-Signature verification failures by reason",
            signature_failures.clone(),
        );
        registry.register(
            "publish_duration_seconds",
            "Time from publish to broker confirm",
            publish_seconds.clone(),
        );
        registry.register(
            "publish_failures",
            "Publishes not confirmed by the broker, by reason",
            publish_failures.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Webhook requests in progress",
            in_flight.clone(),
        );
        registry.register(
            "abandoned_confirms",
            "Publisher confirms given up on: the publish timed out or its client went away",
            publisher.abandoned_confirms.clone(),
        );
        registry.register(
            "channel_replacements",
            "Confirm channels replaced on a live broker link, by reason",
            publisher.channel_replacements.clone(),
        );
        Self {
            registry,
            requests,
            signature_failures,
            publish_seconds,
            publish_failures,
            in_flight,
            publisher,
        }
    }

    pub fn count_outcome(&self, outcome: &'static str) {
        self.requests.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear(); // only fails if writing to a String fails, which it does not
        }
        text
    }
}

/// Counts a request in flight for as long as it lives, even if its future is
/// dropped before it finishes (a client that hangs up).
#[derive(Debug)]
pub struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    pub fn enter(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
