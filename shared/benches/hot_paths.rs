//! Criterion benchmarks of what ingest does to every request before it
//! publishes: verify the `Stripe-Signature` over the raw body, and parse
//! the event's envelope. `cargo bench -p idv-shared`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shared::{EventEnvelope, SignatureVerifier, StripeEvent, WebhookSecret, sign_test_header};

const SECRET: &str = "whsec_bench_secret";
const NOW: i64 = 1_764_000_000;

/// A real fixture event, padded in its metadata to about `bytes`.
fn event_of_size(bytes: usize) -> Vec<u8> {
    let fixture = include_str!("../fixtures/evt_verified.json");
    let mut event: serde_json::Value = match serde_json::from_str(fixture) {
        Ok(event) => event,
        Err(error) => panic!("the fixture is JSON: {error}"),
    };
    let padding = bytes.saturating_sub(fixture.len());
    event["data"]["object"]["metadata"]["padding"] = serde_json::Value::String("x".repeat(padding));
    match serde_json::to_vec(&event) {
        Ok(body) => body,
        Err(error) => panic!("an event serialises: {error}"),
    }
}

fn secret() -> WebhookSecret {
    match WebhookSecret::parse(SECRET) {
        Ok(secret) => secret,
        Err(expected) => panic!("{expected}"),
    }
}

fn signature(c: &mut Criterion) {
    let verifier = SignatureVerifier::new(vec![secret()], Duration::from_secs(300));
    let mut group = c.benchmark_group("signature_verify");
    for size in [1024, 64 * 1024] {
        let body = event_of_size(size);
        let header = sign_test_header(&secret(), &body, NOW);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{}KB", size / 1024)),
            &body,
            |b, body| b.iter(|| verifier.verify(Some(black_box(&header)), black_box(body), NOW)),
        );
    }
    // What a forged request costs: the same work, then a refusal.
    let body = event_of_size(1024);
    group.throughput(Throughput::Bytes(body.len() as u64));
    let forged = format!("t={NOW},v1={}", "0".repeat(64));
    group.bench_function("1KB_forged", |b| {
        b.iter(|| verifier.verify(Some(black_box(&forged)), black_box(&body), NOW))
    });
    group.finish();
}

fn envelope(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope_parse");
    for size in [2 * 1024, 64 * 1024] {
        let body = event_of_size(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("ingest_envelope", format!("{}KB", size / 1024)),
            &body,
            |b, body| b.iter(|| EventEnvelope::parse(black_box(body))),
        );
        group.bench_with_input(
            BenchmarkId::new("whole_event", format!("{}KB", size / 1024)),
            &body,
            |b, body| b.iter(|| StripeEvent::parse(black_box(body))),
        );
    }
    group.finish();
}

criterion_group!(benches, signature, envelope);
criterion_main!(benches);
