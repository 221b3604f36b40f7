//! The gauges an alert fires on, refreshed every [`REFRESH_EVERY`] (the
//! first time one period after start):
//! `idv_worker_dead_letters_waiting` and
//! `idv_worker_dead_letter_oldest_age_seconds` from the `dead_letters`
//! table (one query through the `dead_letters_waiting` partial index), and
//! `idv_worker_queue_messages{queue}` for the work queue and the DLQ (a
//! passive declare each on a link of its own, reopened when lost). A
//! refresh that fails leaves the last values and logs once until it works
//! again. RabbitMQ reports a quorum queue's count with a short delay.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use tracing::{info, warn};

use super::Tasks;
use crate::consume::OPEN_TIMEOUT;
use crate::metrics::QueueLabels;
use crate::store::dead_letters;

/// How often the gauges are read again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Bound on one refresh of each source.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Refreshes the gauges until shutdown.
pub async fn run(tasks: Arc<Tasks>) {
    let mut link: Option<(Connection, Channel)> = None;
    let (mut table_ok, mut queues_ok) = (true, true);
    loop {
        // A period first: a worker that dies at start (a crash loop, a
        // database that hangs) opens nothing for its gauges.
        tokio::select! {
            () = tokio::time::sleep(REFRESH_EVERY) => {}
            () = tasks.shutdown.cancelled() => break,
        }
        table_ok = report(
            "the dead_letters table",
            table_ok,
            refresh_table(&tasks).await,
        );
        queues_ok = report(
            "the queues",
            queues_ok,
            refresh_queues(&tasks, &mut link).await,
        );
    }
    if let Some((connection, channel)) = link {
        let _ = channel.close(200, "shutdown".into()).await;
        let _ = connection.close(200, "shutdown".into()).await;
    }
}

/// Logs a change of state: the first failure, and the recovery.
fn report(source: &str, was_ok: bool, result: Result<(), String>) -> bool {
    match (was_ok, result) {
        (true, Err(error)) => {
            warn!(%error, "dead-letter gauges: cannot read {source}; keeping the last values");
            false
        }
        (false, Ok(())) => {
            info!("dead-letter gauges: reading {source} again");
            true
        }
        (_, result) => result.is_ok(),
    }
}

async fn refresh_table(tasks: &Tasks) -> Result<(), String> {
    let read = async {
        let client = tasks.pool.get().await.map_err(|e| e.to_string())?;
        dead_letters::waiting(&client)
            .await
            .map_err(|e| crate::store::error_chain(&e))
    };
    let waiting = tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .map_err(|_| format!("no answer within {READ_TIMEOUT:?}"))??;
    let metrics = &tasks.metrics;
    metrics.dead_letters_waiting.set(waiting.count);
    metrics
        .dead_letter_oldest_age_seconds
        .set(waiting.oldest_age_seconds.max(0.0));
    Ok(())
}

async fn refresh_queues(
    tasks: &Tasks,
    link: &mut Option<(Connection, Channel)>,
) -> Result<(), String> {
    let usable = link.as_ref().is_some_and(|(connection, channel)| {
        connection.status().connected() && channel.status().connected()
    });
    if !usable {
        if let Some((connection, _)) = link.take() {
            // lapin's own lines about a lost connection are silenced (see
            // `shared::telemetry`): a link found dead is said here.
            tracing::warn!("dead-letter gauges: the broker link was lost; opening a new one");
            let _ = connection.close(200, "reopening".into()).await;
        }
        *link = Some(open(tasks).await?);
    }
    let Some((_, channel)) = link.as_ref() else {
        return Err("no link".to_owned());
    };
    let topology = &tasks.topology;
    for queue in [topology.events_queue(), topology.dead_letter_queue()] {
        let declare = channel.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true, // only read it: never create or change it
                durable: false,
                exclusive: false,
                auto_delete: false,
                nowait: false, // the answer is the count
            },
            FieldTable::default(),
        );
        // A missing queue closes the channel: the next refresh reopens it.
        let declared = tokio::time::timeout(READ_TIMEOUT, declare)
            .await
            .map_err(|_| format!("no answer about {queue} within {READ_TIMEOUT:?}"))?
            .map_err(|e| format!("{queue}: {e}"))?;
        tasks
            .metrics
            .queue_messages
            .get_or_create(&QueueLabels { queue })
            .set(i64::from(declared.message_count()));
    }
    Ok(())
}

async fn open(tasks: &Tasks) -> Result<(Connection, Channel), String> {
    let open = async {
        let connection = tasks
            .amqp_url
            .connect(ConnectionProperties::default())
            .await
            .map_err(|e| e.to_string())?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| format!("connecting to the broker: {e}"))?;
        Ok::<_, String>((connection, channel))
    };
    tokio::time::timeout(OPEN_TIMEOUT, open)
        .await
        .map_err(|_| format!("the broker did not open a channel within {OPEN_TIMEOUT:?}"))?
}
