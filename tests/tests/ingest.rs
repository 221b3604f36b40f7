//! `idv-ingest` against the real RabbitMQ: what is accepted is durably in the
//! queue, byte for byte; what is refused changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use idv_tests::broker::TestBroker;
use idv_tests::fixtures::{TEST_SECRET, fixture, now_unix, padded_event, session_event, sign_now};
use idv_tests::ingest_app::TestIngest;
use idv_tests::listen_queue::accept_queue_length;
use idv_tests::proxy::TcpProxy;
use idv_tests::wait::eventually;
use lapin::types::AMQPValue;
use shared::{WebhookSecret, sign_test_header};

const DEADLINE: Duration = Duration::from_secs(10);

async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Asserts that only `expected` was published: after the refused requests,
/// the one message in the queue is the accepted one sent last.
async fn assert_only_published(broker: &TestBroker, expected: &[u8]) {
    let queue = broker.topology.events_queue();
    assert_eq!(broker.get(&queue, DEADLINE).await.body, expected);
    broker.assert_empty(&queue, "only the accepted event").await;
    broker
        .assert_empty(&broker.topology.unrouted_queue(), "nothing unrouted")
        .await;
}

#[tokio::test]
async fn a_signed_event_is_answered_200_and_published_unchanged_with_its_properties() {
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[]).await;
    let body = fixture("evt_verified.json");
    let signature = sign_now(TEST_SECRET, &body);
    let response = ingest
        .client
        .post(format!("{}/webhook", ingest.address))
        .header("Stripe-Signature", signature)
        .header("X-Request-Id", "req-test-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer, serde_json::json!({"received": true}));

    let message = broker.get(&broker.topology.events_queue(), DEADLINE).await;
    assert_eq!(message.body, body, "the raw bytes, unchanged");
    assert_eq!(
        message.routing_key,
        "identity.verification_session.verified"
    );
    let p = &message.properties;
    assert_eq!(p.delivery_mode(), &Some(2), "persistent");
    let envelope = shared::EventEnvelope::parse(&body).unwrap();
    assert_eq!(
        p.message_id().as_ref().unwrap().as_str(),
        envelope.id.as_str()
    );
    assert_eq!(
        p.kind().as_ref().unwrap().as_str(),
        "identity.verification_session.verified"
    );
    assert_eq!(
        p.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );

    assert_eq!(
        p.timestamp(),
        &Some(u64::try_from(envelope.created).unwrap())
    );
    let headers = p.headers().as_ref().unwrap().inner();
    assert_eq!(
        headers.get("x-request-id"),
        Some(&AMQPValue::LongString("req-test-1".into()))
    );
    match headers.get("x-received-at-ms") {
        Some(AMQPValue::LongLongInt(ms)) => assert!((now_unix() * 1000 - ms).abs() < 60_000),
        other => panic!("x-received-at-ms header missing: {other:?}"),
    }
    assert_eq!(
        ingest
            .metric("idv_ingest_requests_total{outcome=\"accepted\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn every_fixture_is_accepted() {
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[]).await;
    for name in idv_tests::fixtures::EVENT_FIXTURES {
        let response = ingest.post_signed(fixture(name)).await;
        assert_eq!(response.status(), 200, "{name}");
    }
    broker
        .wait_for_count(&broker.topology.events_queue(), 6, DEADLINE)
        .await;
}

#[tokio::test]
async fn each_bad_signature_is_400_with_its_reason_and_publishes_nothing() {
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[]).await;
    let body = fixture("evt_processing.json");
    let secret = WebhookSecret::parse(TEST_SECRET).unwrap();
    let now = now_unix();
    let good = sign_test_header(&secret, &body, now);
    let v1 = good.split_once("v1=").unwrap().1.to_owned();
    let other = WebhookSecret::parse("whsec_someone_else").unwrap();
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let cases: Vec<(Vec<u8>, Option<String>, &str)> = vec![
        (body.clone(), None, "missing Stripe-Signature header"),
        (
            body.clone(),
            Some("nonsense".into()),
            "malformed Stripe-Signature header",
        ),
        (
            body.clone(),
            Some(format!("t={now},v0={v1}")),
            "no v1 signature",
        ),
        (
            body.clone(),
            // Well outside the 300 s: ingest reads its clock for each
            // request, and a second may pass between this and the request.
            Some(sign_test_header(&secret, &body, now - 360)),
            "timestamp outside",
        ),
        (
            body.clone(),
            Some(sign_test_header(&secret, &body, now + 360)),
            "timestamp outside",
        ),
        (
            body.clone(),
            Some(sign_test_header(&other, &body, now)),
            "no signature matches",
        ),
        (tampered, Some(good.clone()), "no signature matches"),
    ];
    for (body, signature, reason) in cases {
        let (status, error) = error_of(ingest.post(body, signature.as_deref()).await).await;
        assert_eq!(status, 400, "{reason}");
        assert!(error.contains(reason), "{error:?} should say {reason:?}");
    }
    assert_eq!(ingest.post(body.clone(), Some(&good)).await.status(), 200);
    assert_only_published(&broker, &body).await;
    let stale = ingest
        .metric("idv_ingest_signature_failures_total{reason=\"timestamp_out_of_tolerance\"}")
        .await;
    assert_eq!(stale, 2.0);
}

#[tokio::test]
async fn during_rotation_either_secret_is_accepted() {
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(
        &broker,
        &[("STRIPE_WEBHOOK_SECRET", "whsec_old_one, whsec_new_one")],
    )
    .await;
    let body = fixture("evt_processing.json");
    for secret in ["whsec_old_one", "whsec_new_one"] {
        let response = ingest
            .post(body.clone(), Some(&sign_now(secret, &body)))
            .await;
        assert_eq!(response.status(), 200, "{secret}");
    }
    let (status, _) = error_of(ingest.post_signed(body.clone()).await).await;
    assert_eq!(status, 400, "the retired test secret is no longer valid");
    broker
        .wait_for_count(&broker.topology.events_queue(), 2, DEADLINE)
        .await;
}

#[tokio::test]
async fn an_oversized_body_is_413_and_not_published() {
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[("INGEST_MAX_BODY_BYTES", "4096")]).await;
    let padding = "x".repeat(5000);
    let big = session_event(
        "evt_big",
        "identity.verification_session.processing",
        now_unix(),
        serde_json::json!({"id": "vs_big", "status": "processing", "padding": padding}),
    );
    let (status, error) = error_of(ingest.post_signed(big).await).await;
    assert_eq!(status, 413);
    assert!(error.contains("4096"), "{error}");
    let body = fixture("evt_processing.json");
    assert_eq!(ingest.post_signed(body.clone()).await.status(), 200);
    assert_only_published(&broker, &body).await;
}

/// A signed, valid event of exactly `size` bytes (padded inside the session).
fn event_of_size(event_id: &str, size: usize) -> Vec<u8> {
    let padded = |padding: usize| {
        session_event(
            event_id,
            "identity.verification_session.processing",
            now_unix(),
            serde_json::json!({"id": "vs_padded", "status": "processing", "padding": "x".repeat(padding)}),
        )
    };
    let body = padded(size - padded(0).len());
    assert_eq!(body.len(), size);
    body
}

#[tokio::test]
async fn the_default_limit_is_one_mebibyte() {
    const MIB: usize = 1024 * 1024;
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[]).await;
    let (status, error) =
        error_of(ingest.post_signed(event_of_size("evt_over", MIB + 1)).await).await;
    assert_eq!(status, 413);
    assert!(error.contains("1048576"), "{error}");
    let exactly = event_of_size("evt_exactly", MIB);
    assert_eq!(ingest.post_signed(exactly.clone()).await.status(), 200);
    assert_only_published(&broker, &exactly).await;
}

#[tokio::test]
async fn a_signed_body_that_is_not_an_event_is_400() {
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[]).await;
    let cases: [(&[u8], &str); 4] = [
        (b"this is not json", "not a Stripe event (JSON"),
        (
            br#"{"id":"cus_1","object":"customer","type":"customer.created","created":1}"#,
            "not a Stripe event",
        ),
        (
            br#"{"id":"evt_1","object":"event","created":1}"#,
            "missing field `type`",
        ),
        (
            br#"{"id":"nope","object":"event","type":"a.b","created":1}"#,
            "event `id` is invalid",
        ),
    ];
    for (body, reason) in cases {
        let (status, error) = error_of(ingest.post_signed(body.to_vec()).await).await;
        assert_eq!(status, 400, "{reason}");
        assert!(error.contains(reason), "{error:?} should say {reason:?}");
    }
    let body = fixture("evt_processing.json");
    assert_eq!(ingest.post_signed(body.clone()).await.status(), 200);
    assert_only_published(&broker, &body).await;
}

/// serde skips the fields the envelope does not name without checking
/// them: before the shape check, each of these was answered 200 and
/// published, to fail only in the worker or in PostgreSQL's `jsonb` (the
/// escapes and the numbers were found by the `event_envelope` fuzz target).
#[tokio::test]
async fn a_signed_event_not_utf8_nested_deep_or_out_of_range_where_the_envelope_does_not_read_is_400()
 {
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[]).await;
    let event = |id: &str, extra: &[u8]| {
        let body = session_event(
            id,
            "identity.verification_session.processing",
            now_unix(),
            serde_json::json!({"id": "vs_shape", "status": "processing"}),
        );
        let mut body = body[..body.len() - 1].to_vec();
        body.extend_from_slice(b",\"extra\":");
        body.extend_from_slice(extra);
        body.push(b'}');
        body
    };
    let deep = format!("{}1{}", "[".repeat(1_000), "]".repeat(1_000));
    let cases = [
        (event("evt_not_utf8", b"\"caf\xe9\""), "not UTF-8"),
        (
            event("evt_too_deep", deep.as_bytes()),
            "nested deeper than 64",
        ),
        (
            event("evt_surrogate", br#""\ud800""#),
            "escape of no character",
        ),
        (event("evt_nul", br#""a\u0000""#), "escape of no character"),
        (event("evt_huge", b"[1, 71e7225600]"), "number out of range"),
        (event("evt_over_max", b"-2e308"), "number out of range"),
    ];
    for (body, reason) in cases {
        let (status, error) = error_of(ingest.post_signed(body).await).await;
        assert_eq!(status, 400, "{reason}: {error}");
        assert!(error.contains(reason), "{error:?} should say {reason:?}");
    }
    let body = fixture("evt_processing.json");
    assert_eq!(ingest.post_signed(body.clone()).await.status(), 200);
    assert_only_published(&broker, &body).await;
}

#[tokio::test]
async fn an_event_of_the_other_mode_is_refused_when_a_mode_is_expected() {
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[("EXPECTED_LIVEMODE", "true")]).await;
    let (status, error) = error_of(ingest.post_signed(fixture("evt_verified.json")).await).await;
    assert_eq!(status, 400);
    assert!(error.contains("livemode"), "{error}");
    let live = session_event(
        "evt_live1",
        "identity.verification_session.processing",
        now_unix(),
        serde_json::json!({"id": "vs_live1", "status": "processing"}),
    );
    let live = String::from_utf8(live)
        .unwrap()
        .replace("\"livemode\":false", "\"livemode\":true");
    assert_eq!(
        ingest.post_signed(live.clone().into_bytes()).await.status(),
        200
    );
    assert_only_published(&broker, live.as_bytes()).await;
}

#[tokio::test]
async fn an_event_type_nobody_consumes_is_kept_in_the_unrouted_queue() {
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[]).await;
    let body = session_event(
        "evt_cust1",
        "customer.created",
        now_unix(),
        serde_json::json!({}),
    );
    assert_eq!(ingest.post_signed(body.clone()).await.status(), 200);
    let message = broker
        .get(&broker.topology.unrouted_queue(), DEADLINE)
        .await;
    assert_eq!(message.body, body);
    assert_eq!(message.routing_key, "customer.created");
    broker
        .assert_empty(&broker.topology.events_queue(), "not routed as an event")
        .await;
}

/// Ingest reaching the broker through a proxy this test controls, with a
/// one-second publish timeout.
async fn ingest_behind_proxy(broker: &TestBroker) -> (TcpProxy, TestIngest) {
    let proxy = TcpProxy::start(idv_tests::amqp_addr()).await;
    let amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.addr());
    let ingest = TestIngest::spawn(
        broker,
        &[
            ("AMQP_URL", &amqp_url),
            ("INGEST_PUBLISH_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    (proxy, ingest)
}

#[tokio::test]
async fn broker_lost_is_503_within_the_bound_then_recovers_without_restart() {
    let broker = TestBroker::new().await;
    let (proxy, ingest) = ingest_behind_proxy(&broker).await;
    let body = fixture("evt_processing.json");
    assert_eq!(ingest.post_signed(body.clone()).await.status(), 200);
    assert_eq!(ingest.admin("/readyz").await.0, 200);

    proxy.cut();
    eventually(DEADLINE, "readyz to report the broker down", || async {
        ingest.admin("/readyz").await.0 == 503
    })
    .await;
    let started = Instant::now();
    let (status, error) = error_of(ingest.post_signed(body.clone()).await).await;
    assert_eq!(status, 503);
    assert!(error.contains("retry later"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered within the bound"
    );
    assert!(
        ingest
            .metric("idv_ingest_publish_failures_total{reason=\"unavailable\"}")
            .await
            >= 1.0
    );

    proxy.restore();
    until_accepted(&ingest, &body, Duration::from_secs(30)).await;
    assert_eq!(ingest.admin("/readyz").await.0, 200);
    let queue = broker.topology.events_queue();
    // The event before the cut and the one after recovery; the 503s published nothing.
    assert_eq!(broker.get(&queue, DEADLINE).await.body, body);
    assert_eq!(broker.get(&queue, DEADLINE).await.body, body);
    broker
        .assert_empty(&queue, "the 503s published nothing")
        .await;
}

#[tokio::test]
async fn health_and_metrics_are_served_on_the_admin_listener() {
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[]).await;
    assert_eq!(ingest.admin("/healthz").await.0, 200);
    assert_eq!(ingest.admin("/readyz").await.0, 200);
    ingest.post(b"{}".to_vec(), None).await;
    let (status, text) = ingest.admin("/metrics").await;
    assert_eq!(status, 200);
    for series in [
        "idv_ingest_requests_total{outcome=\"bad_signature\"} 1",
        "idv_ingest_signature_failures_total{reason=\"missing_header\"} 1",
        "idv_ingest_in_flight_requests 0",
        "idv_ingest_publish_duration_seconds_count",
    ] {
        assert!(text.contains(series), "metrics lack {series}:\n{text}");
    }
    // The webhook listener does not serve admin paths.
    let response = ingest
        .client
        .get(format!("{}/metrics", ingest.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn shutdown_finishes_an_in_flight_request() {
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[]).await;
    let body = fixture("evt_verified.json");
    let signature = sign_now(TEST_SECRET, &body);
    let (first, rest) = body.split_at(100);
    let (send_rest, receive_rest) = tokio::sync::oneshot::channel::<()>();
    let first = first.to_vec();
    let rest = rest.to_vec();
    // The body's second half is held back until the test has asked ingest to stop.
    let chunks = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
        futures_util::stream::once(async move {
            let _ = receive_rest.await;
            Ok(rest)
        }),
    );
    let request = ingest
        .client
        .post(format!("{}/webhook", ingest.address))
        .header("Stripe-Signature", signature)
        .header("Content-Length", body.len().to_string())
        .body(reqwest::Body::wrap_stream(chunks))
        .send();
    let request = tokio::spawn(request);
    eventually(DEADLINE, "the request to be in flight", || async {
        ingest.metric("idv_ingest_in_flight_requests").await == 1.0
    })
    .await;
    let stop = ingest.stop_token();
    stop.cancel();
    // Only once ingest has stopped accepting is the request really caught
    // in the middle of a shutdown.
    let listener = ingest.address.trim_start_matches("http://").to_owned();
    eventually(DEADLINE, "ingest to stop accepting connections", || async {
        tokio::net::TcpStream::connect(&listener).await.is_err()
    })
    .await;
    let _ = send_rest.send(());
    let response = request
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), 200);
    ingest.join().await.expect("ingest stops cleanly");
    let message = broker.get(&broker.topology.events_queue(), DEADLINE).await;
    assert_eq!(message.body, body);
}

#[tokio::test]
async fn a_hung_broker_is_503_after_the_publish_timeout_never_200_before_a_confirm() {
    let broker = TestBroker::new().await;
    let (proxy, ingest) = ingest_behind_proxy(&broker).await;
    let body = fixture("evt_processing.json");
    assert_eq!(ingest.post_signed(body.clone()).await.status(), 200);

    // The broker takes the bytes but never confirms.
    proxy.freeze();
    let started = Instant::now();
    let (status, _) = error_of(ingest.post_signed(body.clone()).await).await;
    let waited = started.elapsed();
    assert_eq!(status, 503);
    assert!(
        waited >= Duration::from_millis(950),
        "answered after {waited:?}, before the bound"
    );
    assert!(
        waited < Duration::from_secs(3),
        "answered after {waited:?}, well past the bound"
    );
    assert_eq!(
        ingest
            .metric("idv_ingest_publish_failures_total{reason=\"timeout\"}")
            .await,
        1.0
    );
    // The confirm given up on is counted: lapin keeps it until its channel
    // closes, and ingest replaces a channel past a bound of these.
    assert_eq!(
        ingest.metric("idv_ingest_abandoned_confirms_total").await,
        1.0
    );

    proxy.cut();
    proxy.restore();
    until_accepted(&ingest, &body, Duration::from_secs(30)).await;
}

/// A broker that hangs without closing anything is found by its silence:
/// after three publishes in a row got no confirm, ingest drops the link
/// and reconnects. The proxy lets new connections through again before the
/// third publish, without a cut, so the hung connection stays open and
/// silent: only that rule gets ingest out (no heartbeat would notice
/// within the deadline), and its reconnect is not itself caught frozen
/// (a connect taken while frozen is held until the 10 s open bound).
#[tokio::test]
async fn a_hung_link_is_dropped_after_three_silent_publishes_and_ingest_reconnects() {
    let broker = TestBroker::new().await;
    let (proxy, ingest) = ingest_behind_proxy(&broker).await;
    let body = fixture("evt_processing.json");
    assert_eq!(ingest.post_signed(body.clone()).await.status(), 200);

    proxy.freeze();
    for attempt in 0..3 {
        if attempt == 2 {
            // New connections go through; the hung one stays as it is.
            proxy.restore();
        }
        let (status, _) = error_of(ingest.post_signed(body.clone()).await).await;
        assert_eq!(status, 503, "publish {attempt} on the hung link");
    }
    assert!(
        ingest
            .metric("idv_ingest_publish_failures_total{reason=\"timeout\"}")
            .await
            >= 3.0
    );
    until_accepted(&ingest, &body, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn a_nack_from_the_broker_is_503() {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::FieldTable;

    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[]).await;
    // A full queue that refuses new messages makes the broker nack the publish.
    let blocker = format!("{}blocker", broker.prefix);
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let channel = broker.channel();
    channel
        .queue_declare(
            blocker.as_str().into(),
            QueueDeclareOptions::default(),
            arguments,
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            blocker.as_str().into(),
            broker.topology.events_exchange().as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let (status, error) = error_of(ingest.post_signed(fixture("evt_processing.json")).await).await;
    assert_eq!(status, 503, "{error}");
    assert_eq!(
        ingest
            .metric("idv_ingest_publish_failures_total{reason=\"nack\"}")
            .await,
        1.0
    );

    channel
        .queue_delete(blocker.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(
        ingest
            .post_signed(fixture("evt_processing.json"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_body_that_never_finishes_is_413_when_it_passes_the_limit_without_a_length() {
    let broker = TestBroker::new().await;
    // A body timeout far longer than the test waits: only the limit can answer.
    let ingest = TestIngest::spawn(
        &broker,
        &[
            ("INGEST_MAX_BODY_BYTES", "4096"),
            ("INGEST_BODY_TIMEOUT_MS", "30000"),
        ],
    )
    .await;
    let mut connection = ingest.raw_connection().await;
    let started = Instant::now();
    // Chunked: no Content-Length, so the limit is enforced while reading.
    // A current timestamp passes the check made before the body is read;
    // the signature itself can only be checked once the body is whole.
    let signature = format!("t={},v1=00", now_unix());
    connection
        .send_head(&[
            ("Stripe-Signature", &signature),
            ("Transfer-Encoding", "chunked"),
        ])
        .await;
    for _ in 0..5 {
        connection.send_chunk(&[b' '; 1024]).await;
    }
    // No last chunk: the body never finishes, and the connection stays open.
    let (status, body) = connection
        .response(Duration::from_secs(5))
        .await
        .expect("a 413 while the body is still arriving");
    let waited = started.elapsed();
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("4096"), "{body}");
    assert!(
        waited < Duration::from_secs(3),
        "answered after {waited:?}: the limit must be enforced while reading"
    );
    assert_eq!(
        ingest
            .metric("idv_ingest_requests_total{outcome=\"too_large\"}")
            .await,
        1.0
    );
    let event = fixture("evt_processing.json");
    assert_eq!(ingest.post_signed(event.clone()).await.status(), 200);
    assert_only_published(&broker, &event).await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_408_after_the_body_timeout_and_not_published() {
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[("INGEST_BODY_TIMEOUT_MS", "500")]).await;
    let event = fixture("evt_verified.json");
    let signature = sign_now(TEST_SECRET, &event);
    let length = event.len().to_string();
    let mut connection = ingest.raw_connection().await;
    let started = Instant::now();
    connection
        .send_head(&[
            ("Stripe-Signature", &signature),
            ("Content-Type", "application/json"),
            ("Content-Length", &length),
        ])
        .await;
    // A signed event, all but its last 100 bytes; the rest never comes.
    connection.send(&event[..event.len() - 100]).await;
    let (status, body) = connection
        .response(Duration::from_secs(10))
        .await
        .expect("a 408 once the body timeout has passed");
    let waited = started.elapsed();
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("did not arrive"), "{body}");
    assert!(
        waited >= Duration::from_millis(500),
        "answered after {waited:?}, before the body timeout"
    );
    assert!(
        waited < Duration::from_secs(5),
        "answered after {waited:?}, well past the body timeout"
    );
    assert_eq!(
        ingest
            .metric("idv_ingest_requests_total{outcome=\"body_timeout\"}")
            .await,
        1.0
    );
    // Nothing of the cut-off event was published: the one message is the
    // event sent whole afterwards.
    let other = fixture("evt_processing.json");
    assert_eq!(ingest.post_signed(other.clone()).await.status(), 200);
    assert_only_published(&broker, &other).await;
}

/// How long until a signed event is answered 200, polling every 100 ms;
/// panics after `deadline`.
async fn until_accepted(ingest: &TestIngest, body: &[u8], deadline: Duration) -> Duration {
    let started = Instant::now();
    eventually(deadline, "a signed event to be answered 200", || async {
        ingest.post_signed(body.to_vec()).await.status() == 200
    })
    .await;
    started.elapsed()
}

#[tokio::test]
async fn publishing_recovers_without_a_restart_once_a_refusing_queue_takes_messages_again() {
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[]).await;
    let queue = broker.topology.events_queue();
    let policy = broker.set_queue_policy(&queue, r#"{"max-length":1,"overflow":"reject-publish"}"#);
    // Until the policy reaches the queue, events are taken: post until one
    // is refused.
    let mut accepted = Vec::new();
    let started = Instant::now();
    for sent in 0.. {
        assert!(
            started.elapsed() < DEADLINE,
            "the full queue never refused an event"
        );
        let id = format!("evt_fill{sent}");
        match ingest
            .post_signed(padded_event(&id, 10))
            .await
            .status()
            .as_u16()
        {
            200 => accepted.push(id),
            503 => break,
            other => panic!("answered {other}"),
        }
    }
    // Full: every channel is refused, more than once.
    for i in 0..12 {
        let body = padded_event(&format!("evt_refused{i}"), 10);
        assert_eq!(ingest.post_signed(body).await.status(), 503, "refused {i}");
    }
    assert!(
        ingest
            .metric("idv_ingest_publish_failures_total{reason=\"nack\"}")
            .await
            >= 13.0
    );
    // The operator lifts the limit: ingest must take events again at once,
    // without a restart (RabbitMQ 3.10 keeps refusing on the old channels).
    policy.clear();
    let waited = until_accepted(&ingest, &padded_event("evt_after", 10), DEADLINE).await;
    assert!(
        waited < Duration::from_secs(5),
        "accepted only after {waited:?}"
    );
    accepted.push("evt_after".to_owned());
    let mut stored = Vec::new();
    while let Some(message) = broker.try_get(&queue).await {
        stored.push(
            message
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        stored, accepted,
        "every accepted event, and no refused one, is stored"
    );
}

#[tokio::test]
async fn with_the_unrouted_queue_gone_nothing_is_answered_200_until_the_chain_is_back() {
    use lapin::options::QueueDeleteOptions;

    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[]).await;
    let unrouted = broker.topology.unrouted_queue();
    // Each body built once: `created` is now, and a second boundary
    // passing between two builds would make them differ.
    let customer =
        |id: &str| session_event(id, "customer.created", now_unix(), serde_json::json!({}));
    let first = customer("evt_cust1");
    assert_eq!(ingest.post_signed(first.clone()).await.status(), 200);
    assert_eq!(broker.get(&unrouted, DEADLINE).await.body, first);

    broker
        .channel()
        .queue_delete(unrouted.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    // An event nobody binds would now be stored nowhere: never a 200.
    let (status, _) = error_of(ingest.post_signed(customer("evt_cust2")).await).await;
    assert_eq!(status, 503, "an event stored nowhere was answered {status}");
    eventually(DEADLINE, "readyz to report the chain missing", || async {
        ingest.admin("/readyz").await.0 == 503
    })
    .await;
    let (status, error) = error_of(ingest.post_signed(customer("evt_cust3")).await).await;
    assert_eq!(status, 503, "{error}");
    // The whole chain is required: a routable event is refused as well.
    let (status, _) = error_of(ingest.post_signed(padded_event("evt_sess1", 10)).await).await;
    assert_eq!(status, 503);
    assert!(
        ingest
            .metric("idv_ingest_publish_failures_total{reason=\"chain_missing\"}")
            .await
            >= 2.0
    );

    // Ingest declares the topology again itself: the queue and its binding
    // are back, and an unbound event is kept there again.
    eventually(
        Duration::from_secs(30),
        "readyz to report ready again",
        || async { ingest.admin("/readyz").await.0 == 200 },
    )
    .await;
    let last = customer("evt_cust4");
    assert_eq!(ingest.post_signed(last.clone()).await.status(), 200);
    let kept = broker.get(&unrouted, DEADLINE).await;
    assert_eq!(kept.body, last);
    broker
        .assert_empty(&unrouted, "the refused events were not kept")
        .await;
    broker
        .assert_empty(
            &broker.topology.events_queue(),
            "nothing routed as an event",
        )
        .await;
}

#[tokio::test]
async fn under_concurrent_nacks_from_two_http_workers_every_200_is_stored_and_no_503_is() {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    use lapin::types::FieldTable;

    const EVENTS: usize = 600;
    const BODY: usize = 256 * 1024;
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(
        &broker,
        &[
            ("INGEST_HTTP_WORKERS", "2"),
            ("INGEST_PUBLISH_CHANNELS", "2"),
            // No timeouts: every 503 is then a nack, whose message is not stored.
            ("INGEST_PUBLISH_TIMEOUT_MS", "60000"),
        ],
    )
    .await;
    let queue = broker.topology.events_queue();
    let _policy =
        broker.set_queue_policy(&queue, r#"{"max-length":8,"overflow":"reject-publish"}"#);

    // A slow consumer keeps the queue crossing its limit, both ways. It
    // starts at the first refusal, so the test has both answers whatever
    // the machine's speed: the queue fills first (no consumer, 503s for
    // certain), then the consumer takes turns with the senders.
    let refused_once = tokio_util::sync::CancellationToken::new();
    let connection = lapin::Connection::connect(
        &idv_tests::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_qos(1, BasicQosOptions { global: false })
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "slow".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let taken = Arc::new(Mutex::new(Vec::<String>::new()));
    let consuming = {
        let taken = taken.clone();
        let refused_once = refused_once.clone();
        tokio::spawn(async move {
            refused_once.cancelled().await;
            while let Some(Ok(delivery)) = consumer.next().await {
                tokio::time::sleep(Duration::from_millis(3)).await;
                let id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .unwrap()
                    .to_string();
                taken.lock().unwrap().push(id);
                // Unacked (the consumer is being cancelled), it goes back to
                // the queue and is drained below.
                let _ = delivery
                    .acker
                    .ack(BasicAckOptions { multiple: false })
                    .await;
            }
        })
    };

    let answers: Vec<(String, u16)> = futures_util::stream::iter(0..EVENTS)
        .map(|i| {
            let (ingest, refused_once) = (&ingest, &refused_once);
            async move {
                let id = format!("evt_race{i:05}");
                let status = ingest
                    .post_signed(padded_event(&id, BODY))
                    .await
                    .status()
                    .as_u16();
                if status == 503 {
                    refused_once.cancel();
                }
                (id, status)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;

    // (Started even if nothing was refused, so it can end; the test then
    // fails below for want of a 503.)
    refused_once.cancel();
    channel
        .basic_cancel("slow".into(), Default::default())
        .await
        .unwrap();
    tokio::time::timeout(DEADLINE, consuming)
        .await
        .expect("the consumer ends once cancelled")
        .unwrap();
    let _ = connection.close(200, "done".into()).await;
    let mut stored: BTreeSet<String> = taken.lock().unwrap().iter().cloned().collect();
    while let Some(message) = broker.try_get(&queue).await {
        stored.insert(
            message
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string(),
        );
    }
    let accepted: BTreeSet<_> = answers
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(id, _)| id.clone())
        .collect();
    let refused: BTreeSet<_> = answers
        .iter()
        .filter(|(_, s)| *s == 503)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(accepted.len() + refused.len(), EVENTS, "only 200 or 503");
    assert!(
        !accepted.is_empty() && !refused.is_empty(),
        "{} accepted, {} refused: the test needs both",
        accepted.len(),
        refused.len()
    );
    let lost: Vec<_> = accepted.difference(&stored).collect();
    assert!(lost.is_empty(), "answered 200 but not stored: {lost:?}");
    let stored_refused: Vec<_> = refused.intersection(&stored).collect();
    assert!(
        stored_refused.is_empty(),
        "answered 503 but stored: {stored_refused:?}"
    );
    eprintln!("{} accepted, {} refused", accepted.len(), refused.len());
}

#[tokio::test]
async fn an_unauthenticated_request_is_400_before_its_body_is_sent() {
    let broker = TestBroker::new().await;
    // A body timeout far longer than the test waits: only a check made
    // before reading the body can answer in time.
    let ingest = TestIngest::spawn(&broker, &[("INGEST_BODY_TIMEOUT_MS", "30000")]).await;
    let length = (900 * 1024).to_string();
    let stale = format!("t={},v1={}", now_unix() - 3600, "0".repeat(64));
    let cases: [(Option<&str>, &str); 3] = [
        (None, "missing Stripe-Signature header"),
        (Some(&stale), "timestamp outside"),
        (Some("nonsense"), "malformed Stripe-Signature header"),
    ];
    for (signature, reason) in cases {
        let mut connection = ingest.raw_connection().await;
        let mut head = vec![
            ("Content-Type", "application/json"),
            ("Content-Length", length.as_str()),
        ];
        if let Some(signature) = signature {
            head.push(("Stripe-Signature", signature));
        }
        let started = Instant::now();
        // Only the head: not one byte of the 900 KiB body is sent.
        connection.send_head(&head).await;
        let (status, body) = connection
            .response(Duration::from_secs(2))
            .await
            .unwrap_or_else(|why| panic!("{reason}: no answer before the body: {why}"));
        assert_eq!(status, 400, "{reason}: {body}");
        assert!(body.contains(reason), "{body} should say {reason:?}");
        eprintln!("{reason}: 400 after {:?}", started.elapsed());
    }
    let event = fixture("evt_processing.json");
    assert_eq!(ingest.post_signed(event.clone()).await.status(), 200);
    assert_only_published(&broker, &event).await;
}

/// actix times only a connection's first head: a refused client kept on
/// could send another head at its leisure. And an unread chunked body is
/// drained with no timer. A refusal closes the connection instead.
#[tokio::test]
async fn a_refused_request_closes_its_connection() {
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[]).await;
    let stale = format!("t={},v1={}", now_unix() - 3600, "0".repeat(64));

    // A stale head with no body: answered, then the connection closed.
    let mut connection = ingest.raw_connection().await;
    connection
        .send_head(&[("Stripe-Signature", &stale), ("Content-Length", "0")])
        .await;
    let (status, body) = connection
        .response(DEADLINE)
        .await
        .expect("an answer to the head");
    assert_eq!(status, 400, "{body}");
    // Well under actix's 5 s keep-alive, which would close it anyway.
    assert!(
        connection.closed_within(Duration::from_secs(3), None).await,
        "the connection was kept open after a 400"
    );

    // A stale head with a chunked body that keeps trickling: closed too,
    // not drained for as long as the chunks come.
    let mut connection = ingest.raw_connection().await;
    connection
        .send_head(&[
            ("Stripe-Signature", &stale),
            ("Transfer-Encoding", "chunked"),
        ])
        .await;
    connection.send_chunk(&[b'x'; 512]).await;
    let (status, body) = connection
        .response(DEADLINE)
        .await
        .expect("an answer to the head");
    assert_eq!(status, 400, "{body}");
    assert!(
        connection
            .closed_within(Duration::from_secs(5), Some(&[b'x'; 512]))
            .await,
        "a refused chunked body was drained for as long as it trickled"
    );

    let event = fixture("evt_processing.json");
    assert_eq!(ingest.post_signed(event.clone()).await.status(), 200);
    assert_only_published(&broker, &event).await;
}

/// A connection with a current timestamp and a forged signature (it passes
/// the check made on the head; only the body's HMAC would fail) that sends
/// `size` body bytes and holds on: with `Content-Length: size` and its last
/// byte never sent, or chunked (64 KiB chunks) and never terminated. Counts
/// an answer in `answered`, and a `503` with `Retry-After: 1` in `overloaded`,
/// and holds its connection until `hold` is cancelled.
async fn held_forged_body(
    address: String,
    size: usize,
    chunked: bool,
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    overloaded: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    hold: tokio_util::sync::CancellationToken,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("ingest listens");
    let (mut reader, mut writer) = stream.into_split();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {size}")
    };
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: x\r\nStripe-Signature: t={},v1={}\r\n{framing}\r\n\r\n",
        now_unix(),
        "0".repeat(64),
    );
    let send = tokio::spawn(async move {
        // Write errors are ignored: a refused request may be closed on.
        let _ = writer.write_all(head.as_bytes()).await;
        if chunked {
            let piece = 64 * 1024;
            let mut sent = 0;
            while sent < size {
                let part = piece.min(size - sent);
                let mut chunk = format!("{part:x}\r\n").into_bytes();
                chunk.resize(chunk.len() + part, b'x');
                chunk.extend_from_slice(b"\r\n");
                if writer.write_all(&chunk).await.is_err() {
                    break;
                }
                sent += part;
            }
        } else {
            let _ = writer.write_all(&vec![b'x'; size - 1]).await;
        }
        // Held open, never finished.
        std::future::pending::<()>().await;
        drop(writer);
    });
    let receive = async {
        let mut answer = Vec::new();
        let mut buffer = [0_u8; 4096];
        loop {
            match reader.read(&mut buffer).await {
                Ok(read) if read > 0 => answer.extend_from_slice(&buffer[..read]),
                _ => return answer,
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                return answer;
            }
        }
    };
    let answer = tokio::select! {
        () = hold.cancelled() => Vec::new(),
        answer = receive => answer,
    };
    if !answer.is_empty() {
        answered.fetch_add(1, Ordering::SeqCst);
        let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        if head.starts_with("http/1.1 503") && head.contains("\r\nretry-after: 1\r\n") {
            overloaded.fetch_add(1, Ordering::SeqCst);
        }
    }
    hold.cancelled().await;
    send.abort();
    let _ = send.await;
}

/// Waits (up to 20 s) for `counter` to reach `expected`; the caller reads
/// and judges it.
async fn count_reaches(counter: &std::sync::atomic::AtomicUsize, expected: usize) {
    let started = Instant::now();
    while counter.load(std::sync::atomic::Ordering::SeqCst) < expected
        && started.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until each of `requests` was either answered (`answered`) or is
/// held by ingest (its in-flight gauge); the number held then.
async fn settled(
    ingest: &TestIngest,
    answered: &std::sync::atomic::AtomicUsize,
    requests: usize,
) -> usize {
    let held = || async {
        // A gauge of whole requests.
        let held = ingest.metric("idv_ingest_in_flight_requests").await;
        held.max(0.0).round() as usize
    };
    eventually(DEADLINE, "every request answered or held", || async {
        answered.load(std::sync::atomic::Ordering::SeqCst) + held().await == requests
    })
    .await;
    held().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_the_body_budget_are_503_overloaded_and_the_budget_comes_back() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let broker = TestBroker::new().await;
    // A budget of two largest bodies; the body timeout far longer than the
    // test, so no held body is let go of before the test lets go of it.
    let ingest = TestIngest::spawn(
        &broker,
        &[
            ("INGEST_BODY_BUDGET_BYTES", "2097152"),
            ("INGEST_BODY_TIMEOUT_MS", "60000"),
        ],
    )
    .await;
    let address = ingest.address.trim_start_matches("http://").to_owned();
    let size = 1024 * 1024 - 64;
    let in_flight = "idv_ingest_in_flight_requests";

    // With a length: eight bodies of ~1 MiB, taken as their bytes arrive;
    // at most two fit the budget, the others are refused as they pass it.
    let answered = Arc::new(AtomicUsize::new(0));
    let overloaded = Arc::new(AtomicUsize::new(0));
    let hold = tokio_util::sync::CancellationToken::new();
    let held: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(held_forged_body(
                address.clone(),
                size,
                false,
                answered.clone(),
                overloaded.clone(),
                hold.clone(),
            ))
        })
        .collect();
    count_reaches(&overloaded, 6).await;
    // Settled: every request answered or held. Then every answer is a
    // `503` `overloaded`, and the rest are held, unanswered (one or two,
    // as the refusals fell).
    let held_now = settled(&ingest, &answered, 8).await;
    let refused = overloaded.load(Ordering::SeqCst);
    assert!(
        refused >= 6,
        "{refused} bodies refused 503 overloaded, of 8"
    );
    assert!(held_now <= 2, "{held_now} bodies held in a 2 MiB budget");
    assert_eq!(answered.load(Ordering::SeqCst), refused);
    assert!(
        ingest
            .metric(r#"idv_ingest_requests_total{outcome="overloaded"}"#)
            .await
            >= 6.0
    );
    hold.cancel();
    for task in held {
        let _ = task.await;
    }
    eventually(DEADLINE, "the held requests to end", || async {
        ingest.metric(in_flight).await == 0.0
    })
    .await;

    // Chunked: four bodies of ~1 MiB cannot all be held in 2 MiB: at least
    // two are refused.
    let answered = Arc::new(AtomicUsize::new(0));
    let overloaded = Arc::new(AtomicUsize::new(0));
    let hold = tokio_util::sync::CancellationToken::new();
    let held: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(held_forged_body(
                address.clone(),
                size,
                true,
                answered.clone(),
                overloaded.clone(),
                hold.clone(),
            ))
        })
        .collect();
    count_reaches(&overloaded, 2).await;
    settled(&ingest, &answered, 4).await;
    let refused = overloaded.load(Ordering::SeqCst);
    assert!(refused >= 2, "{refused} chunked bodies refused, of 4");
    assert_eq!(answered.load(Ordering::SeqCst), refused);
    hold.cancel();
    for task in held {
        let _ = task.await;
    }

    // Once they ended, the budget is back: a signed event is accepted.
    let event = fixture("evt_processing.json");
    let accepted = until_accepted(&ingest, &event, DEADLINE).await;
    eprintln!("signed event accepted {accepted:?} after the held bodies ended");
    assert_only_published(&broker, &event).await;
}

#[tokio::test]
async fn connections_are_capped_per_http_worker() {
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(
        &broker,
        &[
            ("INGEST_HTTP_WORKERS", "1"),
            ("INGEST_MAX_CONNECTIONS", "8"),
            ("INGEST_HEAD_TIMEOUT_MS", "30000"),
        ],
    )
    .await;
    // Eight connections that never send a request hold every place.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(ingest.raw_connection().await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let event = fixture("evt_processing.json");
    let signature = sign_now(TEST_SECRET, &event);
    let length = event.len().to_string();
    let mut ninth = ingest.raw_connection().await;
    ninth
        .send_head(&[
            ("Stripe-Signature", &signature),
            ("Content-Type", "application/json"),
            ("Content-Length", &length),
        ])
        .await;
    ninth.send(&event).await;
    let waiting = ninth.response(Duration::from_millis(700)).await;
    assert!(
        waiting.is_err(),
        "a ninth connection was served past the cap: {waiting:?}"
    );
    // A place frees up: the waiting connection is taken and answered.
    drop(idle.pop());
    let (status, body) = ninth
        .response(Duration::from_secs(5))
        .await
        .expect("answered once a place is free");
    assert_eq!(status, 200, "{body}");
}

/// Past the cap, new connections wait in the kernel's accept queue, which
/// holds `INGEST_LISTEN_BACKLOG` of them (one more, on Linux); the SYNs of
/// the rest are dropped. (With `std`'s bind, 128 whatever the setting,
/// all 45 connects were queued.) The kernel's count is the measure: a client's connect can
/// complete while the server drops the handshake's last ACK.
#[tokio::test]
async fn the_listen_backlog_is_the_setting() {
    const BACKLOG: usize = 40;
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(
        &broker,
        &[
            ("INGEST_HTTP_WORKERS", "1"),
            ("INGEST_MAX_CONNECTIONS", "1"),
            ("INGEST_LISTEN_BACKLOG", &BACKLOG.to_string()),
            ("INGEST_HEAD_TIMEOUT_MS", "30000"),
        ],
    )
    .await;
    let address = ingest.address.trim_start_matches("http://").to_owned();
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    // The one place the worker has; the accept loop pauses once it is
    // taken (actix counts a connection as it hands it over).
    let _held = ingest.raw_connection().await;
    eventually(DEADLINE, "ingest to take the held connection", || async {
        accept_queue_length(port) == Some(0)
    })
    .await;
    // More connects than the queue holds: those past it time out.
    let mut waiting = Vec::new();
    for _ in 0..BACKLOG + 5 {
        let connect = tokio::net::TcpStream::connect(&address);
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(300), connect).await {
            waiting.push(stream);
        }
    }
    assert_eq!(
        accept_queue_length(port),
        Some(BACKLOG + 1),
        "connections in the accept queue past the worker's one place ({} connects completed)",
        waiting.len()
    );
}

#[tokio::test]
async fn on_stop_readyz_is_503_while_the_listener_still_answers_then_it_closes() {
    let broker = TestBroker::new().await;
    let ingest = TestIngest::spawn(&broker, &[("INGEST_SHUTDOWN_DELAY_MS", "5000")]).await;
    assert_eq!(ingest.admin("/readyz").await.0, 200);
    let stop = ingest.stop_token();
    let stopped_at = Instant::now();
    stop.cancel();
    eventually(DEADLINE, "readyz to say 503 after the stop", || async {
        ingest.admin("/readyz").await.0 == 503
    })
    .await;
    // The load balancer has not noticed yet: an event still arrives and
    // is taken, on a new connection.
    let body = fixture("evt_verified.json");
    let signature = sign_now(TEST_SECRET, &body);
    let response = reqwest::Client::new()
        .post(format!("{}/webhook", ingest.address))
        .header("Stripe-Signature", signature)
        .body(body.clone())
        .send()
        .await
        .expect("the listener still answers during the delay");
    // Order, not timing, is the proof: readyz said 503 before this request
    // was sent, and a new connection was still accepted and answered.
    assert_eq!(response.status(), 200);
    let listener = ingest.address.trim_start_matches("http://").to_owned();
    eventually(
        DEADLINE,
        "the listener to close after the delay",
        || async { tokio::net::TcpStream::connect(&listener).await.is_err() },
    )
    .await;
    let closed_after = stopped_at.elapsed();
    assert!(
        closed_after >= Duration::from_millis(5000),
        "the listener closed after {closed_after:?}, before the delay"
    );
    ingest.join().await.expect("ingest stops cleanly");
    assert_eq!(
        broker
            .get(&broker.topology.events_queue(), DEADLINE)
            .await
            .body,
        body
    );
}
