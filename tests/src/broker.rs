//! A private corner of the real RabbitMQ for one test: every name carries a
//! random prefix, and everything is deleted when the test ends.

use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
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
    /// In confirm mode: a test's publish returns once the broker has it.
    channel: Channel,
    /// Queues a test declared besides the topology (a platform's queue on
    /// `idv.outcomes`), deleted with it.
    own_queues: std::sync::Mutex<Vec<String>>,
}

/// How long a test publish may wait for the broker's confirm.
const CONFIRM_DEADLINE: Duration = Duration::from_secs(30);

/// What a passive declare says of a queue, read in one step from the
/// queue's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueState {
    /// Messages ready for delivery (not counting delivered, unacked ones).
    pub ready: u32,
    /// Consumers attached.
    pub consumers: u32,
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
        channel
            .confirm_select(ConfirmSelectOptions { nowait: false })
            .await
            .expect("confirm mode");
        topology::declare(&channel, &topology)
            .await
            .expect("topology declares");
        Self {
            url,
            prefix,
            topology,
            _connection: connection,
            channel,
            own_queues: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A queue of the test's own (`<prefix><name>`), bound to the
    /// `idv.outcomes` exchange with `key`, as the platform would bind one;
    /// deleted when the broker is dropped. Returns its name.
    pub async fn outcomes_queue(&self, name: &str, key: &str) -> String {
        let queue = format!("{}{name}", self.prefix);
        self.own_queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(queue.clone());
        self.channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare the test's queue");
        self.channel
            .queue_bind(
                queue.as_str().into(),
                self.topology.outcomes_exchange().as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind the test's queue");
        queue
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Messages ready in `queue` and its consumers (passive declare).
    pub async fn queue_state(&self, queue: &str) -> QueueState {
        let declared = self
            .channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue exists");
        QueueState {
            ready: declared.message_count(),
            consumers: declared.consumer_count(),
        }
    }

    /// Asserts that `queue` holds no ready message. By `basic.get`, not by
    /// the count a passive declare reads: a quorum queue reports 0 when its
    /// leader is slow to answer, which would let a message through. (A
    /// message found is taken, and named in the failure.)
    pub async fn assert_empty(&self, queue: &str, what: &str) {
        if let Some(message) = self.try_get(queue).await {
            panic!(
                "{what}: {queue} holds a message (routing key {:?}, {} bytes)",
                message.routing_key,
                message.body.len()
            );
        }
    }

    /// Messages ready in `queue` (passive declare).
    pub async fn message_count(&self, queue: &str) -> u32 {
        self.queue_state(queue).await.ready
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

    /// Messages ready in `queue` once no consumer is attached: everything
    /// the consumers held unacked has then been returned (when a consumer's
    /// channel goes, the queue returns what it held and removes it in one
    /// step of its state, and a passive declare reads both from one state).
    /// A marker message is published first and counted out again: a stats
    /// read that failed on the broker's side reports 0 ready and 0
    /// consumers, which must not pass for an empty, settled queue.
    pub async fn settled_count(&self, queue: &str, deadline: Duration) -> u32 {
        self.publish_confirmed(
            "",
            queue,
            b"settled-count marker",
            BasicProperties::default(),
        )
        .await;
        let ready = crate::wait::eventually_some(
            deadline,
            &format!("no consumer on {queue}, and its marker counted"),
            || async {
                let state = self.queue_state(queue).await;
                (state.consumers == 0 && state.ready >= 1).then_some(state.ready)
            },
        )
        .await;
        ready - 1
    }

    /// Proves every delivery from `queue` was acked: call it after the
    /// consumers have stopped. A ready count of 0 while a consumer is
    /// attached proves only that everything was *delivered*.
    pub async fn assert_all_acked(&self, queue: &str, deadline: Duration) {
        let ready = self.settled_count(queue, deadline).await;
        assert_eq!(
            ready, 0,
            "{ready} deliveries from {queue} came back unacked once its consumers left"
        );
    }

    /// Publishes `body` with `properties` and waits for the broker's ack.
    pub async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) {
        let publish = async {
            self.channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await?
                .await
        };
        let confirmation = tokio::time::timeout(CONFIRM_DEADLINE, publish)
            .await
            .unwrap_or_else(|_| panic!("no confirm from the broker within {CONFIRM_DEADLINE:?}"))
            .expect("publish confirmed");
        assert!(
            confirmation.is_ack(),
            "the broker acked the publish to {exchange:?} / {routing_key:?}: {confirmation:?}"
        );
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
        crate::wait::eventually_some(deadline, &format!("a message in {queue}"), || {
            self.try_get(queue)
        })
        .await
    }
}

/// A RabbitMQ policy on one of a test's queues, named after the test's
/// prefix and deleted on drop, so it is gone even when the test fails.
#[derive(Debug)]
pub struct PolicyGuard {
    name: String,
    cleared: bool,
}

impl PolicyGuard {
    /// Deletes the policy now (an operator lifting it).
    pub fn clear(mut self) {
        self.cleared = true;
        let output = rabbitmqctl(&["clear_policy", "-p", "/", &self.name]);
        assert!(
            output.status.success(),
            "rabbitmqctl clear_policy {}: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PolicyGuard {
    fn drop(&mut self) {
        if !self.cleared {
            let output = rabbitmqctl(&["clear_policy", "-p", "/", &self.name]);
            if !output.status.success() {
                eprintln!(
                    "could not delete the test policy {}: {}",
                    self.name,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
}

fn rabbitmqctl(args: &[&str]) -> std::process::Output {
    std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (the tests that set policies run as root beside RabbitMQ)")
}

/// `text` as a regular expression that matches only itself.
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if "\\.^$|?*+()[]{}-".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl TestBroker {
    /// Applies `definition` (a JSON policy definition such as
    /// `{"max-length":5,"overflow":"reject-publish"}`) to `queue` alone,
    /// through `rabbitmqctl`, until the guard is cleared or dropped.
    pub fn set_queue_policy(&self, queue: &str, definition: &str) -> PolicyGuard {
        let name = format!(
            "{}{}policy",
            self.prefix,
            queue.trim_start_matches(&self.prefix)
        );
        let pattern = format!("^{}$", regex_escape(queue));
        let guard = PolicyGuard {
            name: name.clone(),
            cleared: false,
        };
        let output = rabbitmqctl(&[
            "set_policy",
            "-p",
            "/",
            "--priority",
            "10",
            "--apply-to",
            "queues",
            &name,
            &pattern,
            definition,
        ]);
        assert!(
            output.status.success(),
            "rabbitmqctl set_policy {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        guard
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let url = self.url.clone();
        let topology = self.topology.clone();
        let own_queues =
            std::mem::take(&mut *self.own_queues.lock().unwrap_or_else(|e| e.into_inner()));
        crate::run_blocking_cleanup(async move {
            let Ok(connection) = Connection::connect(&url, ConnectionProperties::default()).await
            else {
                eprintln!("could not reach RabbitMQ to delete the test topology");
                return;
            };
            if let Ok(channel) = connection.create_channel().await {
                for queue in &own_queues {
                    let deleted = channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await;
                    if let Err(error) = deleted {
                        eprintln!("could not delete the test queue {queue}: {error}");
                    }
                }
                if let Err(error) = topology::delete(&channel, &topology).await {
                    eprintln!("could not delete the test topology: {error}");
                }
            }
            let _ = connection.close(200, "test done".into()).await;
        });
    }
}
