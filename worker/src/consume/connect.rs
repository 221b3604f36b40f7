//! The worker's link to the broker: its own connection, a consuming
//! channel with an explicit prefetch, and a confirm-mode channel for
//! forwarding failed messages. Every option is written out.

use lapin::options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};

use super::LinkError;
use crate::settings::Settings;

/// An open connection with its channels and consumer.
#[derive(Debug)]
pub struct Link {
    pub connection: Connection,
    pub channel: Channel,
    /// Confirm mode: a forwarded message is acked only once the broker has it.
    pub publisher: Channel,
    pub consumer: Consumer,
}

/// Bound on connecting, opening the channels, declaring and starting to
/// consume: a peer that accepts TCP and never completes the handshake
/// would otherwise hold the open forever (lapin has no handshake timeout).
/// The same bound as ingest's.
pub const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects, declares the topology and starts consuming `idv.events`,
/// within [`OPEN_TIMEOUT`].
pub async fn open(settings: &Settings, consumer_tag: &str) -> Result<Link, LinkError> {
    tokio::time::timeout(OPEN_TIMEOUT, open_unbounded(settings, consumer_tag))
        .await
        .map_err(|_| LinkError::OpenTimeout(OPEN_TIMEOUT))?
}

async fn open_unbounded(settings: &Settings, consumer_tag: &str) -> Result<Link, LinkError> {
    let connection = settings
        .amqp_url
        .connect(ConnectionProperties::default())
        .await?;
    let channel = connection.create_channel().await?;
    shared::topology::declare(&channel, &settings.topology).await?;
    // `WORKER_PREFETCH` is per lane: the one consumer feeds them all.
    let prefetch = usize::from(settings.prefetch).saturating_mul(settings.consumers.max(1));
    channel
        .basic_qos(
            u16::try_from(prefetch).unwrap_or(u16::MAX), // unacked deliveries this consumer may hold
            BasicQosOptions {
                global: false, // per consumer, not shared by the channel's consumers
            },
        )
        .await?;
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions {
            nowait: false, // wait for select-ok: confirms must be on before publishing
        })
        .await?;
    let consumer = channel
        .basic_consume(
            settings.topology.events_queue().as_str().into(),
            consumer_tag.into(),
            BasicConsumeOptions {
                no_local: false,  // irrelevant to queues; RabbitMQ ignores it
                no_ack: false,    // manual acks: ack only after COMMIT
                exclusive: false, // every worker consumes the same queue
                nowait: false,    // wait for consume-ok so errors surface here
            },
            FieldTable::default(),
        )
        .await?;
    Ok(Link {
        connection,
        channel,
        publisher,
        consumer,
    })
}
