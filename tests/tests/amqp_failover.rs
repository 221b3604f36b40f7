//! `AMQP_URL` as a list: a connect goes past addresses that fail to the
//! first that opens (the real RabbitMQ), each attempt bounded, and the
//! next connect starts at the address that worked instead of the one that
//! failed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lapin::ConnectionProperties;
use shared::amqp_addresses::AmqpAddresses;

/// A port that refuses connections (bound, then closed).
fn refused_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A listener that takes connections and does something with each
/// (`hold`: keeps it open and silent; else closes it at once); the count
/// of connections it took.
async fn listener(hold: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let taken = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&taken);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            if hold {
                held.push(stream);
            }
        }
    });
    (addr, taken)
}

fn list(first: std::net::SocketAddr) -> AmqpAddresses {
    AmqpAddresses::parse(&format!(
        "amqp://guest:guest@{first}/%2f,{}",
        idv_tests::amqp_url()
    ))
    .unwrap()
}

#[tokio::test]
async fn a_first_address_that_refuses_is_passed_over_for_the_second() {
    let addresses = list(refused_addr());
    let connection = addresses
        .connect(ConnectionProperties::default())
        .await
        .expect("the second address, the real broker, opens");
    assert!(connection.status().connected());
    connection.close(200, "done".into()).await.unwrap();
}

#[tokio::test]
async fn the_next_connect_starts_at_the_address_that_worked() {
    let (dead, taken) = listener(false).await;
    let addresses = list(dead);
    let first = addresses
        .connect(ConnectionProperties::default())
        .await
        .expect("the second address opens");
    assert_eq!(taken.load(Ordering::Relaxed), 1, "the first was tried once");
    let second = addresses
        .connect(ConnectionProperties::default())
        .await
        .expect("the second address opens again");
    assert_eq!(
        taken.load(Ordering::Relaxed),
        1,
        "the failed address was not tried first again"
    );
    first.close(200, "done".into()).await.unwrap();
    second.close(200, "done".into()).await.unwrap();
}

#[tokio::test]
async fn a_silent_first_address_is_given_up_after_the_attempt_bound() {
    let (silent, taken) = listener(true).await;
    let addresses = list(silent).with_attempt_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let connection = addresses
        .connect(ConnectionProperties::default())
        .await
        .expect("the second address opens once the first's attempt is over");
    assert_eq!(taken.load(Ordering::Relaxed), 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded: {:?}",
        started.elapsed()
    );
    connection.close(200, "done".into()).await.unwrap();
}

#[tokio::test]
async fn the_url_query_options_are_honoured() {
    // Each lower than what RabbitMQ offers, so the negotiated value is ours.
    let base = idv_tests::amqp_url();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}heartbeat=7&channel_max=17&frame_max=65536");
    let connection = AmqpAddresses::parse(&url)
        .unwrap()
        .connect(ConnectionProperties::default())
        .await
        .expect("the broker opens");
    let configuration = connection.configuration();
    assert_eq!(
        (
            configuration.heartbeat(),
            configuration.channel_max(),
            configuration.frame_max()
        ),
        (7, 17, 65536)
    );
    connection.close(200, "done".into()).await.unwrap();
}
