//! Publishing an event again to `stripe.events`, as ingest would, for
//! `dlq replay`, `events replay` and `resync`: the original bytes, routing
//! key = the event's type, persistent, `mandatory`, and confirmed by the
//! broker before the caller records that it was published.

use anyhow::{Context as _, bail};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, LongString};
use lapin::{Channel, Connection, ConnectionProperties};
use shared::envelope::{Envelope, REPLAY};

use super::CtlSettings;

/// Where a republished event comes from: its `x-idv-replay` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A dead letter, by its `dead_letters` id.
    DeadLetter(i64),
    /// The inbox (`events replay`): the worker applies its rules again.
    Inbox,
    /// Stripe's Events API (`resync`).
    Resync,
}

impl Origin {
    fn header(self) -> String {
        match self {
            Self::DeadLetter(id) => format!("dead-letter:{id}"),
            Self::Inbox => shared::envelope::REPLAY_FROM_INBOX.to_owned(),
            Self::Resync => "resync".to_owned(),
        }
    }
}

/// One event to publish again.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Exactly the bytes Stripe sent.
    pub body: &'a [u8],
    /// The routing key and `type` property.
    pub event_type: &'a str,
    pub event_id: Option<&'a str>,
    /// Stripe's `created`, Unix seconds.
    pub created: Option<i64>,
    pub origin: Origin,
}

/// A connection and a confirm-mode channel to the broker (`AMQP_URL`).
#[derive(Debug)]
pub struct Republisher {
    connection: Connection,
    channel: Channel,
    exchange: String,
}

impl Republisher {
    pub async fn connect(settings: &CtlSettings) -> anyhow::Result<Self> {
        let properties = ConnectionProperties::default().with_connection_name("idvctl".into());
        let connection = settings
            .amqp_url
            .connect(properties)
            .await
            .context("connecting to the broker (AMQP_URL)")?;
        let channel = connection
            .create_channel()
            .await
            .context("opening a channel")?;
        channel
            .confirm_select(ConfirmSelectOptions { nowait: false })
            .await
            .context("turning on publisher confirms")?;
        Ok(Self {
            connection,
            channel,
            exchange: settings.topology.events_exchange(),
        })
    }

    /// Publishes `event` and waits for the broker: `Ok` once it acked the
    /// message and did not return it. Only then may the caller record it.
    pub async fn publish(&self, event: Outgoing<'_>) -> anyhow::Result<()> {
        let request_id = format!("idvctl-{}", uuid::Uuid::new_v4().simple());
        let properties = Envelope {
            event_type: event.event_type,
            event_id: event.event_id,
            created: event.created,
            request_id: Some(&request_id),
            received_at_ms: crate::consume::now_ms(),
        }
        .properties();
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(
            REPLAY.into(),
            AMQPValue::LongString(LongString::from(event.origin.header())),
        );
        let confirmation = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                event.event_type.into(),
                BasicPublishOptions {
                    mandatory: true,  // no queue for it is an error, not a silent drop
                    immediate: false, // not supported by RabbitMQ
                },
                event.body,
                properties.with_headers(headers),
            )
            .await
            .with_context(|| format!("publishing to {}", self.exchange))?
            .await
            .with_context(|| format!("waiting for the broker to confirm ({})", self.exchange))?;
        if !confirmation.is_ack() {
            bail!("the broker refused the message (nack) on {}", self.exchange);
        }
        if confirmation.take_message().is_some() {
            bail!(
                "the broker returned the message: no queue is bound for {:?} on {} \
                 (run `idvctl topology`)",
                event.event_type,
                self.exchange
            );
        }
        Ok(())
    }

    /// Closes the channel and the connection.
    pub async fn close(self) {
        let _ = self.channel.close(200, "done".into()).await;
        let _ = self.connection.close(200, "done".into()).await;
    }
}
