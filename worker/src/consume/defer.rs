//! Deferring a delivery the worker cannot start on yet (its subject is
//! held up in a lane and that lane's share of the window is full): a copy
//! waits in a retry queue and comes back to `idv.events`; the original is
//! acked once the broker confirmed the copy. The wait grows with the
//! delivery's deferrals so far (`x-idv-deferrals`, see [`delay_for`]): 1,
//! 2, then 4 s in the first retry queue, then the second one's delay
//! (30 s) every time after, so a person held up for long costs a round
//! trip every 30 s, not every second. A deferral is never a failure: a
//! delivery is deferred as often as its person stays held up.
//! Not a message failure: no attempt is counted (`x-idv-attempts` stays),
//! and no delivery either, where a requeue would count one toward
//! `x-delivery-limit` on RabbitMQ 3.x (and come straight back).

use std::time::Duration;

use lapin::options::BasicAckOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, message::Delivery};
use shared::envelope::{DEFERRALS as DEFERRALS_HEADER, header_int};
use shared::topology::{RETRY_DELAYS, Topology};

use super::LinkError;

/// How long a delivery deferred for the first time stays away (within the
/// first retry queue's TTL, which can only be shortened).
pub const DEFER_DELAY: Duration = Duration::from_secs(1);

/// Deferrals that wait in the first retry queue (1, 2, 4 s); later ones
/// wait in the second retry queue.
const SHORT_DEFERRALS: i64 = 3;

/// The retry queue (by its delay) and the copy's expiration for a
/// delivery deferred `deferrals` times before. The expiration is always
/// set, so none left from an earlier deferral applies.
pub fn delay_for(deferrals: i64) -> (Duration, Duration) {
    if deferrals < SHORT_DEFERRALS {
        let shift = u32::try_from(deferrals.max(0)).unwrap_or(0);
        let delay = DEFER_DELAY.saturating_mul(1 << shift).min(RETRY_DELAYS[0]);
        (RETRY_DELAYS[0], delay)
    } else {
        (RETRY_DELAYS[1], RETRY_DELAYS[1])
    }
}

/// Sends a copy of `delivery` to wait ([`delay_for`]), then acks it.
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
    let (queue_delay, expiration) = delay_for(deferrals);
    let properties = delivery
        .properties
        .clone()
        .with_headers(table)
        .with_expiration(expiration.as_millis().to_string().into());
    let queue = topology.retry_queue(queue_delay);
    if !super::failure::publish_copy(publisher, "", &queue, delivery, properties).await? {
        return Err(LinkError::DeferNotConfirmed);
    }
    delivery
        .acker
        .ack(BasicAckOptions { multiple: false })
        .await
        .map(drop)
        .map_err(LinkError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_grows_with_the_deferrals_then_takes_the_30_s_queue() {
        let secs = |d: i64| {
            let (queue, expiration) = delay_for(d);
            (queue.as_secs(), expiration.as_secs())
        };
        assert_eq!(secs(0), (5, 1));
        assert_eq!(secs(1), (5, 2));
        assert_eq!(secs(2), (5, 4));
        assert_eq!(secs(3), (30, 30));
        assert_eq!(secs(1_000), (30, 30));
        assert_eq!(secs(-5), (5, 1), "a bad header counts as none");
    }
}
