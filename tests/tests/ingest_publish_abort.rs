//! ingest's publisher runs each publish on a task of its own (so that
//! lapin's wake-ups do not poll actix's connection dispatcher): a request
//! dropped while its publish waits for the broker's confirm must abort that
//! task, so the confirm is given up on (and counted) with the request, as
//! when the publish ran inside it, not left running until the publish
//! timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::fixtures::fixture;
use idv_tests::ingest_app::{outgoing_event, test_env};
use idv_tests::proxy::TcpProxy;
use idv_tests::wait::eventually;
use ingest::Settings;
use ingest::publisher::{BrokerConfig, OutgoingEvent, Publisher, PublisherMetrics};

const DEADLINE: Duration = Duration::from_secs(10);

fn event(body: &[u8]) -> OutgoingEvent<'static> {
    outgoing_event(body, "evt_publish_abort", "req-publish-abort")
}

#[tokio::test]
async fn a_publish_dropped_while_waiting_for_its_confirm_gives_it_up_at_once() {
    let broker = TestBroker::new().await;
    let proxy = TcpProxy::start(idv_tests::amqp_addr()).await;
    let amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.addr());
    let settings =
        Settings::from_env(&test_env(&broker, &[("AMQP_URL", &amqp_url)])).expect("valid settings");
    let metrics = PublisherMetrics::default();
    let abandoned = metrics.abandoned_confirms.clone();
    let publisher = Publisher::connect(
        BrokerConfig {
            url: settings.amqp_url.clone(),
            topology: settings.topology.clone(),
            channels: 1,
            // Far past the deadline: only the drop can end the publish in time.
            publish_timeout: Duration::from_secs(60),
        },
        metrics,
    )
    .await
    .expect("publisher connects");
    let body = fixture("evt_processing.json");
    publisher
        .publish(event(&body))
        .await
        .expect("a confirmed publish");

    // The broker takes the bytes but never confirms.
    proxy.freeze();
    let mut publishing = Box::pin(publisher.publish(event(&body)));
    // An assertion (a frozen broker never confirms), not a wait for a
    // state: the publish has started or not; either way it is dropped below.
    let early = tokio::time::timeout(Duration::from_millis(300), &mut publishing).await;
    assert!(early.is_err(), "answered by a frozen broker: {early:?}");
    assert_eq!(abandoned.get(), 0, "given up on before the drop");

    drop(publishing);
    eventually(
        DEADLINE,
        "the dropped publish to give up its confirm",
        || {
            let abandoned = abandoned.clone();
            async move { abandoned.get() == 1 }
        },
    )
    .await;

    proxy.cut();
    publisher.close().await;
}
