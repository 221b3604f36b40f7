//! Tell the platform, on the broker: the outcome message published with
//! publisher confirms to the `idv.outcomes` topic exchange, routing key =
//! the outcome, `message_id` = the SHA-256 of the idempotency key (whole in
//! the body). Unroutable messages are
//! not an error: the platform binds the queues it wants.

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use shared::amqp_addresses::{AmqpAddresses, ConnectError};
use tokio::sync::Mutex;

use super::sink::{Job, Performed, Sink};
use crate::domain::outbox::ActionKind;

/// Why an outcome message was not published.
#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Broker(#[from] lapin::Error),
}

/// One confirm channel, opened when first needed and again after it broke;
/// publishes go one at a time (one unconfirmed publish per channel).
#[derive(Debug)]
pub struct OutcomeExchange {
    amqp_url: AmqpAddresses,
    exchange: String,
    link: Mutex<Option<(Connection, Channel)>>,
}

impl OutcomeExchange {
    pub fn new(amqp_url: AmqpAddresses, exchange: String) -> Self {
        Self {
            amqp_url,
            exchange,
            link: Mutex::new(None),
        }
    }

    /// A connection and a confirm channel on it.
    async fn open(&self) -> Result<(Connection, Channel), PublishError> {
        let connection = self
            .amqp_url
            .connect(ConnectionProperties::default())
            .await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok((connection, channel))
    }

    async fn publish(&self, job: &Job) -> Result<Confirmation, PublishError> {
        let mut link = self.link.lock().await;
        // Taken out while in use: a publish that fails, or is cut off
        // (this future dropped), leaves no link behind, and the next one
        // opens a fresh connection.
        let (connection, channel) = match link.take() {
            Some((connection, channel))
                if connection.status().connected() && channel.status().connected() =>
            {
                (connection, channel)
            }
            // lapin's own lines about a lost connection are silenced (see
            // `shared::telemetry`): a link found dead is said here.
            Some(_) => {
                tracing::warn!("outcome exchange: the broker link was lost; opening a new one");
                self.open().await?
            }
            None => self.open().await?,
        };
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(message_id(&job.row.idempotency_key)))
            .with_type(ShortString::from("idv.outcome.v1"));
        let confirmation = channel
            .basic_publish(
                self.exchange.as_str().into(),
                job.message.outcome.as_str().into(),
                BasicPublishOptions::default(),
                &job.message.to_json(),
                properties,
            )
            .await?
            .await?;
        *link = Some((connection, channel));
        Ok(confirmation)
    }
}

/// The `message_id`: the hex SHA-256 of the idempotency key, the same on
/// every copy. Not the key itself: an AMQP short string holds 255 bytes,
/// and a key (a subject key of up to 255 bytes and a suffix) may not fit.
/// The body carries the key whole.
pub fn message_id(idempotency_key: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(idempotency_key.as_bytes()))
}

impl Sink for OutcomeExchange {
    fn kinds(&self) -> &'static [ActionKind] {
        &[ActionKind::OutcomeMessage]
    }

    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed> {
        async move {
            match self.publish(job).await {
                Ok(Confirmation::Ack(_)) => Performed::Done,
                Ok(_) => Performed::Retry {
                    error: "the broker did not confirm the outcome message".to_owned(),
                    after: None,
                },
                Err(error) => Performed::Retry {
                    error: format!("publishing the outcome message: {error}"),
                    after: None,
                },
            }
        }
        .boxed()
    }
}
