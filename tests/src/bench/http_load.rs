//! An HTTP load generator for `POST /webhook`: distinct, freshly signed
//! events over keep-alive connections, either as fast as the server answers
//! (closed loop) or at a fixed rate (open loop, latency measured from each
//! request's scheduled time so a stall is not hidden).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shared::{WebhookSecret, sign_test_header};

use super::http1;
use super::stats::{PhaseResult, Tally, run_phase};
use crate::fixtures::now_unix;

/// What to send and how hard.
#[derive(Debug, Clone)]
pub struct Load {
    pub url: String,
    pub secret: WebhookSecret,
    /// Concurrent connections, each with one request in flight.
    pub connections: usize,
    pub duration: Duration,
    /// `None`: as fast as possible; `Some(r)`: `r` requests/s in total.
    pub rate: Option<f64>,
    /// Approximate body size in bytes.
    pub body_bytes: usize,
}

/// Width of the sequence number in bench event ids (`evt_bench{16 digits}`).
const SEQUENCE_DIGITS: usize = 16;
const ID_PREFIX: &[u8] = b"\"id\":\"evt_bench";

/// A realistic `requires_input` event of about `size` bytes with a unique id.
pub fn event_body(sequence: u64, size: usize) -> Vec<u8> {
    let mut event = serde_json::json!({
        "id": format!("evt_bench{sequence:0width$}", width = SEQUENCE_DIGITS),
        "object": "event",
        "api_version": "2026-07-29.dahlia",
        "created": now_unix(),
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": "identity.verification_session.requires_input",
        "data": {"object": {
            "id": format!("vs_bench{:08}", sequence % 50_000),
            "object": "identity.verification_session",
            "client_reference_id": format!("user_{:08}", sequence % 50_000),
            "created": now_unix() - 60,
            "last_error": {"code": "document_expired", "reason": "The provided identity document has expired."},
            "livemode": false,
            "metadata": {"flow": "onboarding", "padding": ""},
            "options": {"document": {"allowed_types": ["driving_license", "id_card", "passport"],
                "require_id_number": false, "require_live_capture": true, "require_matching_selfie": true}},
            "status": "requires_input",
            "type": "document",
        }},
    });
    let base = serde_json::to_vec(&event).map(|b| b.len()).unwrap_or(0);
    event["data"]["object"]["metadata"]["padding"] =
        serde_json::Value::String("x".repeat(size.saturating_sub(base)));
    serde_json::to_vec(&event).unwrap_or_default()
}

/// Bodies for a run: one template, re-numbered per request in place, so the
/// load generator spends its CPU on sending rather than on building JSON.
#[derive(Debug, Clone)]
struct BodyTemplate {
    bytes: Vec<u8>,
    /// Where the id's digits start in `bytes`.
    digits_at: usize,
}

impl BodyTemplate {
    fn new(size: usize) -> anyhow::Result<Self> {
        let bytes = event_body(0, size);
        let digits_at = bytes
            .windows(ID_PREFIX.len())
            .position(|window| window == ID_PREFIX)
            .map(|at| at + ID_PREFIX.len())
            .ok_or_else(|| anyhow::anyhow!("the bench event has no id"))?;
        Ok(Self { bytes, digits_at })
    }

    fn numbered(&self, sequence: u64) -> Vec<u8> {
        let mut body = self.bytes.clone();
        let digits = format!("{sequence:0width$}", width = SEQUENCE_DIGITS);
        let digits = &digits.as_bytes()[digits.len() - SEQUENCE_DIGITS..];
        body[self.digits_at..self.digits_at + SEQUENCE_DIGITS].copy_from_slice(digits);
        body
    }
}

/// Runs `load` and returns what it measured.
pub async fn run(name: &str, load: &Load) -> anyhow::Result<PhaseResult> {
    let target = http1::Target::parse(&load.url)?;
    let template = Arc::new(BodyTemplate::new(load.body_bytes)?);
    let sequence = Arc::new(AtomicU64::new(rand::random::<u32>().into()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    // Each connection's share of an open-loop rate.
    let period = load
        .rate
        .map(|rate| Duration::from_secs_f64(load.connections as f64 / rate));
    let mut tasks = Vec::with_capacity(load.connections);
    for n in 0..load.connections {
        let mut connection = http1::Connection::new(target.clone());
        let (load, sequence, stop, template) = (
            load.clone(),
            Arc::clone(&sequence),
            Arc::clone(&stop),
            Arc::clone(&template),
        );
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            // Stagger open-loop senders evenly over one period.
            let mut next = started
                + period.map_or(Duration::ZERO, |p| {
                    p.mul_f64(n as f64 / load.connections as f64)
                });
            while !stop.load(Ordering::Relaxed) {
                if period.is_some() {
                    tokio::time::sleep_until(next.into()).await;
                }
                let scheduled = if period.is_some() {
                    next
                } else {
                    Instant::now()
                };
                let body = template.numbered(sequence.fetch_add(1, Ordering::Relaxed));
                let signature = sign_test_header(&load.secret, &body, now_unix());
                match connection.post(&signature, &body).await {
                    Ok(200) => tally.success(scheduled.elapsed()),
                    _ => tally.failure(),
                }
                if let Some(period) = period {
                    next += period;
                }
            }
            tally
        }));
    }
    run_phase(name, started, load.duration, &stop, tasks).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_bodies_are_events_with_distinct_ids_and_the_asked_size() {
        let template = BodyTemplate::new(2048).unwrap();
        let a = shared::EventEnvelope::parse(&template.numbered(7)).unwrap();
        let b = shared::EventEnvelope::parse(&template.numbered(123_456)).unwrap();
        assert_eq!(a.id.as_str(), "evt_bench0000000000000007");
        assert_eq!(b.id.as_str(), "evt_bench0000000000123456");
        assert!((2000..=2100).contains(&template.bytes.len()));
    }
}
