//! Why the worker's broker link ended: the consume loop logs the whole
//! chain and reopens the link; the broker redelivers what was not acked.

use super::failure::ForwardError;

/// A failure of the broker link, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No broker address of `AMQP_URL` opened a connection.
    #[error("connecting to the broker")]
    Connect(#[from] shared::amqp_addresses::ConnectError),
    /// A channel operation (consume, ack, publish) failed.
    #[error("broker operation failed")]
    Broker(#[from] lapin::Error),
    /// A failed message could not be passed on to a retry queue or the DLQ.
    #[error("forwarding a failed message")]
    Forward(#[from] ForwardError),
    /// A deferred delivery's copy was not taken by the broker.
    #[error("the broker did not accept a deferred delivery")]
    DeferNotConfirmed,
    /// The broker did not complete opening the link in time.
    #[error("the broker did not complete the connection within {0:?}")]
    OpenTimeout(std::time::Duration),
    /// The broker ended the consumer (queue deleted, node going down).
    #[error("the broker cancelled the consumer")]
    ConsumerCancelled,
}
