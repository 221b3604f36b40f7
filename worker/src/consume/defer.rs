//! Deferring a delivery the worker cannot start on yet (its subject is
//! held up in a lane and that lane's share of the window is full): a copy
//! waits [`DEFER_DELAY`] in the first retry queue and comes back to
//! `idv.events`; the original is acked once the broker confirmed the copy.
//! Not a message failure: no attempt is counted (`x-idv-attempts` stays),
//! and no delivery either, where a requeue would count one toward
//! `x-delivery-limit` on RabbitMQ 3.x (and come straight back).

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, message::Delivery};
use shared::envelope::{DEFERRALS as DEFERRALS_HEADER, header_int};
use shared::topology::{RETRY_DELAYS, Topology};

use super::LinkError;

/// How long a deferred delivery stays away (within the first retry
/// queue's TTL, which can only be shortened).
pub const DEFER_DELAY: Duration = Duration::from_secs(1);

/// Sends a copy of `delivery` to wait [`DEFER_DELAY`], then acks it.
pub async fn defer(
    publisher: &Channel,
    topology: &Topology,
    delivery: &Delivery,
) -> Result<(), LinkError> {
    let headers = delivery.properties.headers().as_ref();
    let deferrals = header_int(headers, DEFERRALS_HEADER).unwrap_or(0);
    let mut table = headers.cloned().unwrap_or_else(FieldTable::default);
    table.insert(
        DEFERRALS_HEADER.into(),
        AMQPValue::LongLongInt(deferrals.saturating_add(1)),
    );
    let properties = delivery
        .properties
        .clone()
        .with_headers(table)
        .with_expiration(DEFER_DELAY.as_millis().to_string().into());
    let queue = topology.retry_queue(RETRY_DELAYS[0]);
    let confirmation = publisher
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions {
                mandatory: true,  // a missing queue is an error, not a silent drop
                immediate: false, // not supported by RabbitMQ
            },
            &delivery.data,
            properties,
        )
        .await?
        .await?;
    if !confirmation.is_ack() || confirmation.take_message().is_some() {
        return Err(LinkError::DeferNotConfirmed);
    }
    delivery
        .acker
        .ack(BasicAckOptions { multiple: false })
        .await
        .map(drop)
        .map_err(LinkError::from)
}
