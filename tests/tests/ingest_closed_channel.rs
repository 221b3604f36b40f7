//! A publish checks the connection and the confirm channel it takes, not
//! every channel (the supervisor's tick does that): a channel the broker
//! closed is still seen by the publish that takes it, which is refused as
//! unavailable (503) without writing to it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::fixtures::fixture;
use idv_tests::ingest_app::{outgoing_event, test_env};
use idv_tests::wait::eventually;
use ingest::Settings;
use ingest::publisher::{BrokerConfig, OutgoingEvent, PublishError, Publisher, PublisherMetrics};
use lapin::options::ExchangeDeleteOptions;

const DEADLINE: Duration = Duration::from_secs(10);

fn event(body: &[u8]) -> OutgoingEvent<'static> {
    outgoing_event(body, "evt_closed_channel", "req-closed-channel")
}

#[tokio::test]
async fn a_publish_on_a_channel_the_broker_closed_is_refused_as_unavailable() {
    let broker = TestBroker::new().await;
    let settings = Settings::from_env(&test_env(&broker, &[])).expect("valid settings");
    // One confirm channel, so every publish takes the one that gets closed;
    // no supervisor, so nothing replaces the link meanwhile.
    let publisher = Publisher::connect(
        BrokerConfig {
            url: settings.amqp_url.clone(),
            topology: settings.topology.clone(),
            channels: 1,
            publish_timeout: Duration::from_secs(2),
        },
        PublisherMetrics::default(),
    )
    .await
    .expect("publisher connects");
    let body = fixture("evt_processing.json");
    publisher
        .publish(event(&body))
        .await
        .expect("a confirmed publish");

    // A publish to an exchange that is gone makes the broker close the
    // channel (404); the connection stays up.
    broker
        .channel()
        .exchange_delete(
            broker.topology.events_exchange().as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await
        .expect("exchange deleted");
    let first = publisher.publish(event(&body)).await;
    assert!(first.is_err(), "published to a deleted exchange: {first:?}");

    eventually(
        DEADLINE,
        "a publish on the closed channel to be refused as unavailable",
        || async {
            matches!(
                publisher.publish(event(&body)).await,
                Err(PublishError::Unavailable)
            )
        },
    )
    .await;
    publisher.close().await;
}
