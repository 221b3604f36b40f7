//! Criterion benchmarks of the worker's CPU work per delivery, apart from
//! the database: parsing a delivery into an [`Incoming`], and planning a
//! batch (dedupe, order, counting, side effects) over the rows it locked.
//! `cargo bench -p idv-worker`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shared::config::Env;
use worker::domain::Rules;
use worker::domain::outbox::Sinks;
use worker::domain::plan::plan;
use worker::domain::state::{Locked, SessionState, SubjectState};
use worker::incoming::{self, Incoming};
use worker::settings::Settings;

const FIXTURES: [(&str, &[u8]); 4] = [
    (
        "processing",
        include_bytes!("../../shared/fixtures/evt_processing.json"),
    ),
    (
        "requires_input",
        include_bytes!("../../shared/fixtures/evt_requires_input_document_expired.json"),
    ),
    (
        "verified",
        include_bytes!("../../shared/fixtures/evt_verified.json"),
    ),
    (
        "redacted",
        include_bytes!("../../shared/fixtures/evt_redacted.json"),
    ),
];

fn settings() -> Settings {
    match Settings::from_env(&Env::default()) {
        Ok(settings) => settings,
        Err(error) => panic!("the default settings are valid: {error}"),
    }
}

fn parsed(settings: &Settings, body: &[u8]) -> Incoming {
    match incoming::parse(body, 0, settings) {
        Ok(incoming) => incoming,
        Err(error) => panic!("a fixture parses: {error:?}"),
    }
}

fn parse(c: &mut Criterion) {
    let settings = settings();
    let mut group = c.benchmark_group("delivery_parse");
    for (name, body) in FIXTURES {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| incoming::parse(black_box(body), 0, &settings))
        });
    }
    group.finish();
}

/// `subjects` people with one session each and a story of four events:
/// processing, two failed submissions, verified; as a worker's batch of
/// `4 × subjects` deliveries, and the fresh rows it would have locked.
fn batch(settings: &Settings, subjects: usize) -> (Vec<Incoming>, Locked) {
    let processing = parsed(settings, FIXTURES[0].1);
    let failed = parsed(settings, FIXTURES[1].1);
    let verified = parsed(settings, FIXTURES[2].1);
    let mut events = Vec::with_capacity(subjects * 4);
    let mut locked = Locked::default();
    for n in 0..subjects {
        let (session, subject) = (format!("vs_bench_{n}"), format!("user_{n}"));
        let story = [&processing, &failed, &failed, &verified];
        for (step, template) in story.into_iter().enumerate() {
            let mut event = template.clone();
            event.event_id = format!("evt_bench_{n}_{step}");
            event.session_id.clone_from(&session);
            event.subject_key = Some(subject.clone());
            event.created = 1_764_000_000 + step as i64;
            events.push(event);
        }
        locked.sessions.insert(session, SessionState::default());
        locked.subjects.insert(subject, fresh_subject());
    }
    (events, locked)
}

fn fresh_subject() -> SubjectState {
    SubjectState {
        status: "pending".to_owned(),
        decided_by: None,
        failed_attempts: 0,
        blocked: false,
        last_error_code: None,
        last_error_created: None,
        last_error_event_id: None,
        mismatch_session: None,
    }
}

fn batch_plan(c: &mut Criterion) {
    let settings = settings();
    // Every sink on, so a batch writes every kind of outbox row.
    let rules = Rules {
        sinks: Sinks {
            webhook: true,
            email: true,
            stripe_cancel: true,
            expected_matching: false,
        },
        ..Rules::from_settings(&settings)
    };
    let mut group = c.benchmark_group("batch_plan");
    for subjects in [1, 16, 64] {
        let (events, locked) = batch(&settings, subjects);
        let refs: Vec<&Incoming> = events.iter().collect();
        group.throughput(Throughput::Elements(events.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("events", events.len()),
            &refs,
            |b, refs| {
                b.iter_batched(
                    || locked.clone(),
                    |locked| plan(&rules, black_box(refs), locked),
                    criterion::BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, parse, batch_plan);
criterion_main!(benches);
