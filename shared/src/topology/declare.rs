//! Declares (and, for tests, deletes) the [`Topology`] with lapin. Declaring
//! is idempotent: the same names with the same arguments are a no-op.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ConnectionProperties, ExchangeKind as LapinExchangeKind};

use crate::amqp_addresses::{AmqpAddresses, ConnectError};

use super::{ArgValue, ExchangeKind, Topology};

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        passive: false,     // create it if missing
        durable: true,      // survives a broker restart
        auto_delete: false, // stays when the last binding goes
        internal: false,    // publishers may send to it directly
        nowait: false,      // wait for declare-ok so errors surface here
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: false,     // create it if missing
        durable: true,      // quorum queues must be durable
        exclusive: false,   // shared by every worker
        auto_delete: false, // stays when consumers leave
        nowait: false,      // wait for declare-ok so errors surface here
    }
}

fn to_amqp(value: &ArgValue) -> AMQPValue {
    match value {
        ArgValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        ArgValue::Int(n) => AMQPValue::LongLongInt(*n),
    }
}

/// Declares every exchange, queue and binding of `topology`.
pub async fn declare(channel: &Channel, topology: &Topology) -> Result<(), lapin::Error> {
    for exchange in topology.exchanges() {
        let mut arguments = FieldTable::default();
        if let Some(alternate) = &exchange.alternate_exchange {
            arguments.insert(
                "alternate-exchange".into(),
                AMQPValue::LongString(LongString::from(alternate.as_str())),
            );
        }
        let kind = match exchange.kind {
            ExchangeKind::Topic => LapinExchangeKind::Topic,
            ExchangeKind::Fanout => LapinExchangeKind::Fanout,
        };
        channel
            .exchange_declare(
                exchange.name.as_str().into(),
                kind,
                durable_exchange(),
                arguments,
            )
            .await?;
    }
    for queue in topology.queues() {
        let mut arguments = FieldTable::default();
        for (key, value) in &queue.arguments {
            arguments.insert((*key).into(), to_amqp(value));
        }
        channel
            .queue_declare(queue.name.as_str().into(), durable_queue(), arguments)
            .await?;
    }
    for binding in topology.bindings() {
        channel
            .queue_bind(
                binding.queue.as_str().into(),
                binding.exchange.as_str().into(),
                binding.routing_key.as_str().into(),
                QueueBindOptions { nowait: false },
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Why [`declare_at`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DeclareError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Broker(#[from] lapin::Error),
}

/// Connects to one of `addresses`, declares `topology` and closes again:
/// for tools and start-up checks that need the topology but not a lasting
/// connection.
pub async fn declare_at(
    addresses: &AmqpAddresses,
    topology: &Topology,
) -> Result<(), DeclareError> {
    let connection = addresses.connect(ConnectionProperties::default()).await?;
    let declared = match connection.create_channel().await {
        Ok(channel) => declare(&channel, topology).await,
        Err(error) => Err(error),
    };
    let _ = connection.close(200, "declared".into()).await;
    Ok(declared?)
}

/// Deletes every queue and exchange of `topology`, messages included. For
/// tests and throw-away deployments only.
pub async fn delete(channel: &Channel, topology: &Topology) -> Result<(), lapin::Error> {
    for queue in topology.queues() {
        channel
            .queue_delete(
                queue.name.as_str().into(),
                QueueDeleteOptions {
                    if_unused: false, // even with consumers attached
                    if_empty: false,  // messages go with it
                    nowait: false,
                },
            )
            .await?;
    }
    for exchange in topology.exchanges() {
        channel
            .exchange_delete(
                exchange.name.as_str().into(),
                ExchangeDeleteOptions {
                    if_unused: false,
                    nowait: false,
                },
            )
            .await?;
    }
    Ok(())
}
