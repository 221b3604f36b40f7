//! The AMQP topology declares on the real broker, twice, and routes as designed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::time::{Duration, Instant};

use idv_tests::broker::TestBroker;
use lapin::BasicProperties;
use shared::topology;

const DEADLINE: Duration = Duration::from_secs(10);

async fn publish(broker: &TestBroker, exchange: &str, routing_key: &str, body: &[u8]) {
    broker
        .publish_confirmed(exchange, routing_key, body, BasicProperties::default())
        .await;
}

#[tokio::test]
async fn declaring_again_keeps_the_queued_messages() {
    let broker = TestBroker::new().await;
    let t = &broker.topology;
    let key = "identity.verification_session.verified";
    publish(&broker, &t.events_exchange(), key, b"kept").await;
    broker.wait_for_count(&t.events_queue(), 1, DEADLINE).await;
    // What every service does at start, on a broker that already has it all.
    topology::declare(broker.channel(), t).await.unwrap();
    let kept = broker.get(&t.events_queue(), DEADLINE).await;
    assert_eq!(kept.body, b"kept");
    // And the bindings still route.
    publish(&broker, &t.events_exchange(), key, b"routed").await;
    assert_eq!(
        broker.get(&t.events_queue(), DEADLINE).await.body,
        b"routed"
    );
}

#[tokio::test]
async fn session_events_reach_the_worker_queue_and_others_the_unrouted_queue() {
    let broker = TestBroker::new().await;
    let t = &broker.topology;
    publish(
        &broker,
        &t.events_exchange(),
        "identity.verification_session.verified",
        b"a",
    )
    .await;
    publish(&broker, &t.events_exchange(), "customer.created", b"b").await;
    assert_eq!(broker.get(&t.events_queue(), DEADLINE).await.body, b"a");
    assert_eq!(broker.get(&t.unrouted_queue(), DEADLINE).await.body, b"b");
    broker
        .assert_empty(&t.events_queue(), "one copy routed")
        .await;
}

#[tokio::test]
async fn a_retry_queue_returns_its_message_to_the_worker_queue_after_its_delay() {
    let broker = TestBroker::new().await;
    let t = &broker.topology;
    let delay = topology::RETRY_DELAYS[0];
    let retry = t.retry_queue(delay);
    let published = Instant::now();
    publish(&broker, "", &retry, b"again").await;
    let message = broker.get(&t.events_queue(), delay + DEADLINE).await;
    let waited = published.elapsed();
    assert_eq!(message.body, b"again");
    // The broker expires messages on its own clock, to the millisecond.
    assert!(
        waited + Duration::from_millis(50) >= delay,
        "back after {waited:?}, before the queue's {delay:?}"
    );
}
