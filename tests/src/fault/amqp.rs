//! Reading the private broker's queues during and after the fault run.
//! A connection of its own for each look: the broker closes every
//! connection and restarts during the run, so none is kept.

use futures_util::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

/// Messages ready in `queue` and its consumers (a passive declare).
pub async fn queue_state(url: &str, queue: &str) -> anyhow::Result<(u32, u32)> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let _ = connection.close(200, "looked".into()).await;
    Ok((declared.message_count(), declared.consumer_count()))
}

/// Takes every ready message of `queue` (acking it) and returns the `id`
/// of each body (an event's), or its text when it is not an event.
pub async fn take_event_ids(url: &str, queue: &str) -> anyhow::Result<Vec<String>> {
    let (ready, _) = queue_state(url, queue).await?;
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "fault-run-audit".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut ids = Vec::new();
    while ids.len() < ready as usize {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next()).await;
        let Ok(Some(delivery)) = next else { break };
        let delivery = delivery?;
        let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap_or_default();
        ids.push(body["id"].as_str().map_or_else(
            || String::from_utf8_lossy(&delivery.data).into_owned(),
            str::to_owned,
        ));
        delivery.ack(BasicAckOptions::default()).await?;
    }
    let _ = connection.close(200, "taken".into()).await;
    Ok(ids)
}
