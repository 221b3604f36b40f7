//! The broker's own ceiling: a lapin publisher with pipelined confirms,
//! persistent messages into the same quorum queue ingest feeds. Ingest can
//! at best approach this; the ratio shows what the HTTP layer costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use shared::topology::Topology;

use super::stats::{PhaseResult, Tally, run_phase};

/// Publishes `body` for `duration` from `publishers` concurrent tasks spread
/// over `channels` confirm channels; each task waits for its confirm before
/// its next publish, so up to `publishers` confirms are in flight.
pub async fn measure(
    url: &str,
    topology: &Topology,
    body: Arc<Vec<u8>>,
    channels: usize,
    publishers: usize,
    duration: Duration,
) -> anyhow::Result<PhaseResult> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let mut opened = Vec::with_capacity(channels);
    for _ in 0..channels {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions { nowait: false })
            .await?;
        opened.push(channel);
    }
    let exchange = topology.events_exchange();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(publishers);
    for n in 0..publishers {
        let channel = opened[n % channels].clone();
        let exchange = exchange.clone();
        let body = Arc::clone(&body);
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let confirmed = async {
                    channel
                        .basic_publish(
                            exchange.as_str().into(),
                            "identity.verification_session.processing".into(),
                            BasicPublishOptions {
                                mandatory: true,
                                immediate: false,
                            },
                            &body,
                            BasicProperties::default()
                                .with_delivery_mode(shared::envelope::PERSISTENT),
                        )
                        .await?
                        .await
                }
                .await;
                match confirmed {
                    Ok(Confirmation::Ack(None)) => tally.success(sent.elapsed()),
                    _ => tally.failure(),
                }
            }
            tally
        }));
    }
    let name = format!("broker ceiling ({publishers} in flight)");
    let result = run_phase(&name, started, duration, &stop, tasks).await;
    let _ = connection.close(200, "bench done".into()).await;
    result
}
