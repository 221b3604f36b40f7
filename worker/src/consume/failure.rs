//! Message failures: a message that cannot be applied goes to the next retry
//! queue (its TTL, or the shorter `WORKER_RETRY_DELAYS` entry, is the
//! delay), and after the last retry to the dead-letter exchange, with the
//! reason, the attempt count and the first and latest failure times in
//! headers. The original is acked only after the broker confirmed the copy.

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, LongString};
use lapin::{Channel, message::Delivery};
use shared::envelope::{
    ATTEMPTS as ATTEMPTS_HEADER, FAILURE_KIND as KIND_HEADER, FAILURE_REASON as REASON_HEADER,
    FIRST_FAILURE_AT_MS as FIRST_FAILURE_HEADER, LAST_FAILURE_AT_MS as LAST_FAILURE_HEADER,
    header_int,
};
use shared::topology::{RETRY_DELAYS, Topology};

use crate::incoming::MessageFailure;

/// Where a failed message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// To the retry queue for its `attempt`-th retry.
    Retried {
        attempt: i64,
    },
    DeadLettered {
        attempts: i64,
    },
}

/// Why a failed message could not be passed on: the broker's fault.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("publishing the failed message: {0}")]
    Publish(#[from] lapin::Error),
    #[error("the broker did not accept the failed message")]
    NotConfirmed,
}

/// Sends `delivery` on to a retry queue or the DLQ through the confirm-mode
/// `publisher`. The caller acks the original once this returns `Ok`.
pub async fn forward(
    publisher: &Channel,
    topology: &Topology,
    retry_delays: &[Duration],
    delivery: &Delivery,
    failure: &MessageFailure,
    now_ms: i64,
) -> Result<Disposition, ForwardError> {
    let headers = delivery.properties.headers().as_ref();
    let attempts = header_int(headers, ATTEMPTS_HEADER).unwrap_or(0) + 1;
    let first_failure = header_int(headers, FIRST_FAILURE_HEADER).unwrap_or(now_ms);
    let mut table = headers.cloned().unwrap_or_default();
    table.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongLongInt(attempts));
    table.insert(
        FIRST_FAILURE_HEADER.into(),
        AMQPValue::LongLongInt(first_failure),
    );
    table.insert(LAST_FAILURE_HEADER.into(), AMQPValue::LongLongInt(now_ms));
    table.insert(
        REASON_HEADER.into(),
        AMQPValue::LongString(LongString::from(failure.to_string())),
    );
    table.insert(
        KIND_HEADER.into(),
        AMQPValue::LongString(LongString::from(failure.kind())),
    );
    let retry = usize::try_from(attempts - 1)
        .ok()
        .and_then(|i| Some((RETRY_DELAYS.get(i)?, retry_delays.get(i)?)));
    let properties = delivery.properties.clone().with_headers(table);
    let (exchange, routing_key, properties, disposition) = match retry {
        Some((queue_ttl, delay)) => (
            String::new(),
            topology.retry_queue(*queue_ttl),
            // A per-message TTL can only shorten the queue's.
            properties.with_expiration(delay.as_millis().to_string().into()),
            Disposition::Retried { attempt: attempts },
        ),
        None => (
            topology.dead_letter_exchange(),
            delivery.routing_key.to_string(),
            properties,
            Disposition::DeadLettered { attempts },
        ),
    };
    if publish_copy(publisher, &exchange, &routing_key, delivery, properties).await? {
        Ok(disposition)
    } else {
        Err(ForwardError::NotConfirmed)
    }
}

/// Publishes a copy of `delivery`'s body with `properties` and waits for
/// the broker: `true` once it is acked and was not returned (a missing
/// queue is an error, not a silent drop). The caller acks the original
/// only then.
pub(super) async fn publish_copy(
    publisher: &Channel,
    exchange: &str,
    routing_key: &str,
    delivery: &Delivery,
    properties: lapin::BasicProperties,
) -> Result<bool, lapin::Error> {
    let confirmation = publisher
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,  // a missing queue is an error, not a silent drop
                immediate: false, // not supported by RabbitMQ
            },
            &delivery.data,
            properties,
        )
        .await?
        .await?;
    Ok(confirmation.is_ack() && confirmation.take_message().is_none())
}
