//! The `dead_letters` table as the tests read it, and a dead letter made
//! by the broker itself (`x-delivery-limit`), for the drain's tests and
//! for the checks that no message failed.
#![allow(clippy::unwrap_used)] // test support: a failed step should stop the test loudly

use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicRejectOptions};
use lapin::types::FieldTable;

use crate::broker::TestBroker;

/// One row of `dead_letters`, times as unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: i64,
    pub fingerprint: Vec<u8>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub session_id: Option<String>,
    pub event_created: Option<i64>,
    pub routing_key: String,
    pub reason: String,
    pub kind: String,
    pub attempts: i32,
    pub first_failure_ms: i64,
    pub last_failure_ms: i64,
    pub dead_lettered_ms: i64,
    pub replayed: bool,
    pub payload: Option<Vec<u8>>,
    pub payload_erased: bool,
}

/// Every row, in insertion order.
pub async fn rows(client: &tokio_postgres::Client) -> Vec<Row> {
    let ms = |column: &str| format!("(extract(epoch FROM {column}) * 1000)::int8");
    let sql = format!(
        "SELECT id, fingerprint, event_id, event_type, session_id, event_created, routing_key, \
         reason, kind, attempts, {}, {}, {}, replayed_at IS NOT NULL, payload, \
         payload_erased_at IS NOT NULL FROM dead_letters ORDER BY id",
        ms("first_failure_at"),
        ms("last_failure_at"),
        ms("dead_lettered_at"),
    );
    client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| Row {
            id: row.get(0),
            fingerprint: row.get(1),
            event_id: row.get(2),
            event_type: row.get(3),
            session_id: row.get(4),
            event_created: row.get(5),
            routing_key: row.get(6),
            reason: row.get(7),
            kind: row.get(8),
            attempts: row.get(9),
            first_failure_ms: row.get(10),
            last_failure_ms: row.get(11),
            dead_lettered_ms: row.get(12),
            replayed: row.get(13),
            payload: row.get(14),
            payload_erased: row.get(15),
        })
        .collect()
}

/// Waits up to `deadline` until `dead_letters` holds `count` rows; returns them.
pub async fn wait_for_rows(
    client: &tokio_postgres::Client,
    count: usize,
    deadline: Duration,
) -> Vec<Row> {
    crate::wait::eventually_some(
        deadline,
        &format!("{count} rows in dead_letters"),
        || async {
            let rows = rows(client).await;
            (rows.len() == count).then_some(rows)
        },
    )
    .await
}

/// Has the broker dead-letter the next message of the test topology's
/// work queue for real: a consumer of the test's takes it and rejects it
/// with requeue until the quorum queue's `x-delivery-limit` sends it to
/// the DLQ. Returns how many deliveries that took. Run it with no worker
/// consuming the work queue.
pub async fn reject_until_dead_lettered(broker: &TestBroker, deadline: Duration) -> u32 {
    let channel = broker.channel();
    let tag = format!("{}reject-until-dead", broker.prefix);
    let mut consumer = channel
        .basic_consume(
            broker.topology.events_queue().as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let limit = u32::try_from(shared::topology::DELIVERY_LIMIT).unwrap();
    let mut deliveries = 0;
    // The first delivery, then one per return the limit allows.
    while deliveries <= limit {
        let delivery = tokio::time::timeout(deadline, consumer.next())
            .await
            .expect("a delivery within the deadline")
            .expect("the consumer goes on")
            .unwrap();
        deliveries += 1;
        delivery
            .acker
            .reject(BasicRejectOptions { requeue: true })
            .await
            .unwrap();
    }
    channel
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await
        .unwrap();
    broker
        .wait_for_count(&broker.topology.dead_letter_queue(), 1, deadline)
        .await;
    deliveries
}
