//! The broker's confirmed-publish ceiling alone: a lapin publisher with
//! pipelined confirms, persistent ~2 KB messages into the `idv.events`
//! quorum queue (the first phase of `bench_ingest`), against one broker
//! address. `deploy/bench-cluster.sh` runs it against a three-node cluster
//! and a single node. The last line is `broker ceiling: <n> msg/s`.
//! Everything it declares lives under a random `bench-…` prefix and is
//! deleted at the end.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use idv_tests::bench::{broker_ceiling, http_load};
use lapin::{Connection, ConnectionProperties};
use shared::topology::{self, Topology};

#[derive(Debug, Parser)]
#[command(about = "Measure a RabbitMQ broker's confirmed-publish ceiling into a quorum queue")]
struct Args {
    /// Seconds the measurement runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Confirms in flight.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Approximate message size in bytes.
    #[arg(long, default_value_t = 2048)]
    body_bytes: usize,
    /// The broker (one URL: the node the publisher connects to).
    #[arg(long)]
    amqp_url: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let topology = Topology::new(&format!("bench-{}.", idv_tests::unique_suffix()))
        .map_err(|e| anyhow::anyhow!(e))?;
    let connection = Connection::connect(&args.amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    topology::declare(&channel, &topology).await?;
    eprintln!(
        "measuring the broker with {} confirms in flight ({} s)…",
        args.in_flight, args.seconds
    );
    let result = broker_ceiling::measure(
        &args.amqp_url,
        &topology,
        Arc::new(http_load::event_body(0, args.body_bytes)),
        4,
        args.in_flight,
        Duration::from_secs(args.seconds),
    )
    .await;
    // Whatever happened, leave nothing behind on the broker.
    topology::delete(&channel, &topology).await?;
    let _ = connection.close(200, "bench done".into()).await;
    let phase = result?;
    println!("{phase}");
    println!("broker ceiling: {:.0} msg/s", phase.rate());
    Ok(())
}
