use lapin::types::{FieldArray, LongString};

use super::*;

const WORK_QUEUE: &str = "p.idv.events";
const NOW_MS: i64 = 1_800_000_000_000;
const VERIFIED: &str = "identity.verification_session.verified";

fn context() -> Context<'static> {
    Context {
        work_queue: WORK_QUEUE,
        now_ms: NOW_MS,
    }
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn table(pairs: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in pairs {
        table.insert(name.into(), value);
    }
    table
}

fn death(queue: &str, reason: &str, exchange: &str, key: &str, seconds: u64) -> AMQPValue {
    AMQPValue::FieldTable(table(vec![
        ("count", AMQPValue::LongLongInt(1)),
        ("exchange", text(exchange)),
        ("queue", text(queue)),
        ("reason", text(reason)),
        (
            "routing-keys",
            AMQPValue::FieldArray(FieldArray::from(vec![text(key)])),
        ),
        ("time", AMQPValue::Timestamp(seconds)),
    ]))
}

fn properties(headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_type(VERIFIED.into())
        .with_headers(headers)
}

/// As RabbitMQ 3.10.8 delivers a message the worker dead-lettered after
/// three retries (see the module's doc).
fn after_the_workers_retries() -> BasicProperties {
    let retry = |label: &str| format!("p.idv.events.retry.{label}");
    properties(table(vec![
        (
            "x-death",
            AMQPValue::FieldArray(FieldArray::from(vec![
                death(&retry("5m"), "expired", "", &retry("5m"), 1_700_000_003),
                death(&retry("5s"), "expired", "", &retry("5s"), 1_700_000_001),
                death(&retry("30s"), "expired", "", &retry("30s"), 1_700_000_002),
            ])),
        ),
        ("x-delivery-count", AMQPValue::LongLongInt(0)),
        ("x-first-death-queue", text(&retry("5s"))),
        ("x-first-death-reason", text("expired")),
        ("x-idv-attempts", AMQPValue::LongLongInt(4)),
        ("x-idv-failure-kind", text("unparseable")),
        (
            "x-idv-failure-reason",
            text("not a Stripe Identity event: invalid JSON at line 1 column 2"),
        ),
        (
            "x-idv-first-failure-at-ms",
            AMQPValue::LongLongInt(1_700_000_000_500),
        ),
        (
            "x-idv-last-failure-at-ms",
            AMQPValue::LongLongInt(1_700_000_003_100),
        ),
        (
            "x-received-at-ms",
            AMQPValue::LongLongInt(1_700_000_000_400),
        ),
    ]))
}

#[test]
fn the_workers_dead_letter_keeps_its_headers_and_the_type_as_key() {
    let row = read(
        b"{not json",
        WORK_QUEUE,
        &after_the_workers_retries(),
        context(),
    );
    assert_eq!(row.kind, Kind::Worker("unparseable"));
    assert_eq!(
        row.reason,
        "not a Stripe Identity event: invalid JSON at line 1 column 2"
    );
    assert_eq!(row.attempts, 4);
    assert_eq!(row.first_failure_at_ms, 1_700_000_000_500);
    assert_eq!(row.last_failure_at_ms, 1_700_000_003_100);
    assert_eq!(row.routing_key, VERIFIED, "not the work queue's name");
    assert_eq!(row.payload, b"{not json");
    assert_eq!(
        (
            row.event_id,
            row.event_type,
            row.session_id,
            row.event_created
        ),
        (None, None, None, None)
    );
}

#[test]
fn a_delivery_limit_dead_letter_is_the_brokers() {
    let headers = table(vec![
        (
            "x-death",
            AMQPValue::FieldArray(FieldArray::from(vec![death(
                WORK_QUEUE,
                "delivery_limit",
                "p.stripe.events",
                VERIFIED,
                1_700_000_009,
            )])),
        ),
        ("x-delivery-count", AMQPValue::LongLongInt(2)),
        ("x-first-death-reason", text("delivery_limit")),
        (
            "x-received-at-ms",
            AMQPValue::LongLongInt(1_700_000_000_400),
        ),
    ]);
    // No type property: the key comes from the death.
    let properties = BasicProperties::default().with_headers(headers);
    let row = read(b"{}", "other.key", &properties, context());
    assert_eq!(row.kind, Kind::DeliveryLimit);
    assert!(row.reason.contains("x-delivery-limit"), "{}", row.reason);
    assert_eq!(row.attempts, 21);
    assert_eq!(row.first_failure_at_ms, 1_700_000_009_000);
    assert_eq!(row.last_failure_at_ms, 1_700_000_009_000);
    assert_eq!(row.routing_key, VERIFIED);
}

#[test]
fn the_brokers_dead_lettering_wins_over_earlier_worker_failures() {
    let mut headers = after_the_workers_retries()
        .headers()
        .clone()
        .unwrap_or_default();
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death").cloned() else {
        panic!("x-death");
    };
    let mut deaths = deaths.as_slice().to_vec();
    deaths.insert(
        0,
        death(WORK_QUEUE, "delivery_limit", "", WORK_QUEUE, 1_700_000_009),
    );
    headers.insert("x-death".into(), AMQPValue::FieldArray(deaths.into()));
    let row = read(b"{}", WORK_QUEUE, &properties(headers), context());
    assert_eq!(row.kind, Kind::DeliveryLimit);
    assert_eq!(
        row.first_failure_at_ms, 1_700_000_000_500,
        "the worker's first"
    );
    assert_eq!(row.last_failure_at_ms, 1_700_000_009_000);
    assert_eq!(row.routing_key, VERIFIED);
}

#[test]
fn the_body_gives_only_valid_fields() {
    let good = br#"{"id":"evt_1A","object":"event","type":"identity.verification_session.verified",
        "created":1700000000,"data":{"object":{"id":"vs_9Z","status":"processing"}}}"#;
    let row = read(good, VERIFIED, &BasicProperties::default(), context());
    assert_eq!(row.event_id.as_deref(), Some("evt_1A"));
    assert_eq!(row.event_type.as_deref(), Some(VERIFIED));
    assert_eq!(row.session_id.as_deref(), Some("vs_9Z"));
    assert_eq!(row.event_created, Some(1_700_000_000));
    let bad = br#"{"id":"jane@example.com","type":"Jane Doe","created":"soon",
        "data":{"object":{"id":"123-45-6789"}}}"#;
    let row = read(bad, VERIFIED, &BasicProperties::default(), context());
    assert_eq!(
        (
            row.event_id,
            row.event_type,
            row.session_id,
            row.event_created
        ),
        (None, None, None, None)
    );
}

#[test]
fn headers_of_any_shape_give_a_storable_row() {
    let headers = table(vec![
        ("x-death", text("not an array")),
        ("x-idv-failure-kind", text("something_new")),
        ("x-idv-failure-reason", text("a\0b\nc")),
        ("x-idv-attempts", text("four")),
        (
            "x-idv-first-failure-at-ms",
            AMQPValue::LongLongInt(i64::MAX),
        ),
        ("x-idv-last-failure-at-ms", AMQPValue::LongLongInt(-5)),
    ]);
    let properties = BasicProperties::default()
        .with_type("Not A Type".into())
        .with_headers(headers);
    let row = read(b"", "k\0ey", &properties, context());
    assert_eq!(row.kind, Kind::Unknown);
    assert_eq!(row.reason, "abc");
    assert_eq!(row.attempts, 1);
    assert_eq!(row.first_failure_at_ms, MAX_MS);
    assert_eq!(row.last_failure_at_ms, MAX_MS, "never before the first");
    assert_eq!(row.routing_key, "key");

    let row = read(b"", "k", &BasicProperties::default(), context());
    assert_eq!(row.kind, Kind::Unknown);
    assert_eq!(
        (row.first_failure_at_ms, row.last_failure_at_ms),
        (NOW_MS, NOW_MS)
    );
    assert_eq!(row.routing_key, "k");
}

#[test]
fn every_failure_kind_of_the_worker_is_known() {
    let settings = crate::settings::Settings::from_env(&shared::config::Env::default())
        .expect("default settings");
    let unparseable = crate::incoming::parse(b"{", 0, &settings).expect_err("a failure");
    for failure in [
        unparseable,
        crate::incoming::MessageFailure::UnknownType,
        crate::incoming::MessageFailure::StatusMismatch {
            event_type: "t",
            status: "s",
        },
        crate::incoming::MessageFailure::Refused("SQLSTATE 23505".to_owned()),
    ] {
        assert!(WORKER_KINDS.contains(&failure.kind()), "{}", failure.kind());
    }
}

#[test]
fn debug_never_shows_the_payload() {
    let row = read(
        b"{\"secret\":\"4111\"}",
        VERIFIED,
        &BasicProperties::default(),
        context(),
    );
    assert!(!format!("{row:?}").contains("4111"));
}
