//! The AMQP topology declares on the real broker, twice, and routes as designed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::time::Duration;

use idv_tests::broker::TestBroker;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use shared::topology;

async fn publish(broker: &TestBroker, exchange: &str, routing_key: &str, body: &[u8]) {
    let confirm = broker
        .channel()
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap();
    confirm.await.unwrap();
}

#[tokio::test]
async fn declaring_twice_is_a_no_op() {
    let broker = TestBroker::new().await;
    topology::declare(broker.channel(), &broker.topology)
        .await
        .unwrap();
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
    let deadline = Duration::from_secs(5);
    assert_eq!(broker.get(&t.events_queue(), deadline).await.body, b"a");
    assert_eq!(broker.get(&t.unrouted_queue(), deadline).await.body, b"b");
    assert_eq!(broker.message_count(&t.events_queue()).await, 0);
}

#[tokio::test]
async fn a_retry_queue_returns_its_message_to_the_worker_queue() {
    let broker = TestBroker::new().await;
    let t = &broker.topology;
    let retry = t.retry_queue(topology::RETRY_DELAYS[0]);
    publish(&broker, "", &retry, b"again").await;
    let message = broker.get(&t.events_queue(), Duration::from_secs(15)).await;
    assert_eq!(message.body, b"again");
}
