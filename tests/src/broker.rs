//! A private corner of the real RabbitMQ for one test: every name carries a
//! random prefix, and everything is deleted when the test ends.

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use shared::topology::{self, Topology};

/// A message read back from a queue.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Vec<u8>,
    pub routing_key: String,
    pub properties: BasicProperties,
}

/// A declared topology with a unique prefix, deleted on drop.
#[derive(Debug)]
pub struct TestBroker {
    pub url: String,
    /// The `AMQP_PREFIX` services under test must use.
    pub prefix: String,
    pub topology: Topology,
    /// Kept open: `channel` lives on it.
    _connection: Connection,
    channel: Channel,
}

impl TestBroker {
    /// Declares a fresh topology under a random prefix.
    pub async fn new() -> Self {
        let url = crate::amqp_url();
        let prefix = format!("test-{}-{}.", crate::run_tag(), crate::unique_suffix());
        let topology = Topology::new(&prefix).expect("valid prefix");
        let connection = Connection::connect(&url, ConnectionProperties::default())
            .await
            .expect("RabbitMQ is reachable at IDV_TEST_AMQP_URL");
        let channel = connection.create_channel().await.expect("channel");
        topology::declare(&channel, &topology)
            .await
            .expect("topology declares");
        Self {
            url,
            prefix,
            topology,
            _connection: connection,
            channel,
        }
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Messages ready in `queue` (passive declare).
    pub async fn message_count(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue exists")
            .message_count()
    }

    /// Waits up to `deadline` until `queue` holds exactly `count` ready messages.
    pub async fn wait_for_count(&self, queue: &str, count: u32, deadline: Duration) {
        crate::wait::eventually(
            deadline,
            &format!("{count} messages in {queue}"),
            || async { self.message_count(queue).await == count },
        )
        .await;
    }

    /// Takes one message from `queue` if there is one, and acks it.
    pub async fn try_get(&self, queue: &str) -> Option<Received> {
        let message = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get")?;
        let delivery = message.delivery;
        delivery
            .acker
            .ack(BasicAckOptions { multiple: false })
            .await
            .expect("ack");
        Some(Received {
            body: delivery.data,
            routing_key: delivery.routing_key.to_string(),
            properties: delivery.properties,
        })
    }

    /// Waits up to `deadline` for a message in `queue`.
    pub async fn get(&self, queue: &str, deadline: Duration) -> Received {
        let start = std::time::Instant::now();
        loop {
            if let Some(message) = self.try_get(queue).await {
                return message;
            }
            assert!(
                start.elapsed() < deadline,
                "timed out after {deadline:?} waiting for a message in {queue}"
            );
            tokio::time::sleep(crate::wait::POLL_EVERY).await;
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let url = self.url.clone();
        let topology = self.topology.clone();
        crate::run_blocking_cleanup(async move {
            let Ok(connection) = Connection::connect(&url, ConnectionProperties::default()).await
            else {
                eprintln!("could not reach RabbitMQ to delete the test topology");
                return;
            };
            if let Ok(channel) = connection.create_channel().await
                && let Err(error) = topology::delete(&channel, &topology).await
            {
                eprintln!("could not delete the test topology: {error}");
            }
            let _ = connection.close(200, "test done".into()).await;
        });
    }
}
