//! Benchmark of `idv-ingest` against its ceilings, in one run:
//!
//! 1. the broker's ceiling: a lapin publisher with pipelined confirms,
//!    persistent messages into the `idv.events` quorum queue, with
//!    `--broker-in-flight` confirms in flight and with as many as the first
//!    `--connections` count (ingest has one per connection at most);
//! 2. the actix ceiling: `bench_handler`, an actix server that only verifies
//!    the signature and answers 200, over the same connections: its req/s
//!    and its CPU per request;
//! 3. ingest at full speed: the release `idv-ingest` binary, signed ~2 KB
//!    events over each `--connections` count of keep-alive connections: its
//!    req/s, CPU per accepted request and peak RSS;
//! 4. ingest open loop at fractions of its maximum (10 % … 100 %), for the
//!    latency each offered rate gets (50 % is "half the maximum").
//!
//! CPU and memory are read from `/proc/<pid>` of the measured process, so
//! the load generator's own CPU is not counted. `--json PATH` writes the
//! results for `bench_report`.
//!
//! Run it with `deploy/bench.sh` (release build). Everything it declares
//! lives under a random `bench-…` prefix and is deleted at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use idv_tests::bench::child::{Child, free_port, sibling_binary};
use idv_tests::bench::cpu_split::CpuSnapshot;
use idv_tests::bench::results::{self, IngestMax, IngestResults, Phase, SweepPoint};
use idv_tests::bench::{broker_ceiling, http_load, sweep};
use idv_tests::fixtures::TEST_SECRET;
use idv_tests::wait::{eventually, until_ready};
use lapin::{Connection, ConnectionProperties};
use shared::WebhookSecret;
use shared::topology::{self, Topology};

#[derive(Debug, Parser)]
#[command(about = "Measure idv-ingest against the broker's publish ceiling and an actix handler")]
struct Args {
    /// Seconds each closed-loop phase runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds each open-loop point of the sweep runs.
    #[arg(long, default_value_t = 6)]
    sweep_seconds: u64,
    /// Concurrent HTTP connections, a comma-separated list: ingest's
    /// maximum is measured at each; the first is also used for the broker
    /// at the same confirms in flight, the handler and the sweep.
    #[arg(long, value_delimiter = ',', default_value = "32,128")]
    connections: Vec<usize>,
    /// Approximate event size in bytes.
    #[arg(long, default_value_t = 2048)]
    body_bytes: usize,
    /// Confirms in flight for the broker ceiling.
    #[arg(long, default_value_t = 256)]
    broker_in_flight: usize,
    /// RabbitMQ to measure against (must be local).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// The `idv-ingest` binary; default: beside this one.
    #[arg(long)]
    ingest_bin: Option<PathBuf>,
    /// The `bench_handler` binary; default: beside this one.
    #[arg(long)]
    handler_bin: Option<PathBuf>,
    /// Extra settings for idv-ingest, `NAME=VALUE` (repeatable), e.g.
    /// `--ingest-env INGEST_PUBLISH_CHANNELS=1`.
    #[arg(long = "ingest-env", value_parser = parse_setting)]
    ingest_env: Vec<(String, String)>,
    /// Write the results as JSON here (for `bench_report`).
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_setting(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, found {raw:?}"))
}

/// Empties the events queue between ingest's phases, so that each starts
/// with the same queue; unlike [`reset_queues`] it leaves the exchanges
/// ingest's links publish to (deleting them would cost it a reconnect and
/// the next phase a burst of 503s).
async fn purge_events(url: &str, topology: &Topology) -> anyhow::Result<()> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .queue_purge(
            topology.events_queue().as_str().into(),
            lapin::options::QueuePurgeOptions { nowait: false },
        )
        .await?;
    connection.close(200, "purged".into()).await?;
    Ok(())
}

async fn reset_queues(url: &str, topology: &Topology) -> anyhow::Result<()> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    topology::delete(&channel, topology).await?;
    topology::declare(&channel, topology).await?;
    connection.close(200, "reset".into()).await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        !args.connections.is_empty() && !args.connections.contains(&0),
        "--connections: expected a comma-separated list of counts above 0"
    );
    let duration = Duration::from_secs(args.seconds);
    let topology = Topology::new(&format!("bench-{}.", idv_tests::unique_suffix()))
        .map_err(|e| anyhow::anyhow!(e))?;
    reset_queues(&args.amqp_url, &topology).await?;
    let result = run(&args, &topology, duration).await;
    // Whatever happened, leave nothing behind on the broker.
    let connection = Connection::connect(&args.amqp_url, ConnectionProperties::default()).await?;
    topology::delete(&connection.create_channel().await?, &topology).await?;
    let results = result?;
    print_summary(&results);
    if let Some(path) = &args.json {
        results::write_json(path, &results)?;
    }
    Ok(())
}

fn print_summary(results: &IngestResults) {
    let line = |phase: &Phase| {
        println!(
            "{:<40} {:>9.0}/s  failed {:>4}  p50 {:>8.2} ms  p99 {:>8.2} ms",
            phase.name, phase.rate, phase.failed, phase.p50_ms, phase.p99_ms
        );
    };
    println!();
    line(&results.broker_ceiling);
    line(&results.broker_same_in_flight);
    line(&results.handler.phase);
    results.ingest.iter().for_each(|max| line(&max.phase));
    results.sweep.iter().for_each(|point| line(&point.phase));
    println!();
    let ceiling = results.broker_ceiling.rate;
    for max in &results.ingest {
        println!(
            "ingest at {} connections / broker ceiling: {:.2}",
            max.connections,
            max.phase.rate / ceiling
        );
    }
    if let Some(first) = results.ingest.first() {
        println!(
            "ingest at {} / broker at {} in flight: {:.2}",
            first.connections,
            first.connections,
            first.phase.rate / results.broker_same_in_flight.rate
        );
        let cpu = |us: Option<f64>| us.map_or_else(|| "–".to_owned(), |us| format!("{us:.1} µs"));
        println!(
            "CPU per request: ingest {}, actix handler {}; peak RSS: ingest {:.1} MB (target < 50 MB), handler {:.1} MB",
            cpu(first.cost.cpu_us_per_op),
            cpu(results.handler.cost.cpu_us_per_op),
            results
                .ingest
                .iter()
                .map(|m| m.cost.peak_rss_mb)
                .fold(0.0, f64::max),
            results.handler.cost.peak_rss_mb
        );
    }
    if let Some(half) = sweep::at_half(&results.sweep) {
        println!(
            "p99 at half rate: {:.2} ms ({:.0} req/s)",
            half.phase.p99_ms, half.phase.rate
        );
    }
}

async fn run(
    args: &Args,
    topology: &Topology,
    duration: Duration,
) -> anyhow::Result<IngestResults> {
    let body = Arc::new(http_load::event_body(0, args.body_bytes));
    let first = args.connections[0];
    let mut ceilings = Vec::new();
    // The ceiling with deep pipelining, then with only as many confirms in
    // flight as ingest can have (one per connection).
    for in_flight in [args.broker_in_flight, first] {
        eprintln!(
            "measuring the broker with {in_flight} confirms in flight ({} s)…",
            args.seconds
        );
        let cpu_before = CpuSnapshot::take()?;
        let phase = broker_ceiling::measure(
            &args.amqp_url,
            topology,
            Arc::clone(&body),
            4,
            in_flight,
            duration,
        )
        .await?;
        let cpu = CpuSnapshot::take()?.since(&cpu_before);
        eprintln!("{phase}; {}", cpu.summary());
        ceilings.push(Phase {
            cpu: Some(cpu),
            ..Phase::from(&phase)
        });
        reset_queues(&args.amqp_url, topology).await?;
    }
    let broker_same_in_flight = ceilings.pop().context("measured")?;
    let broker_ceiling = ceilings.pop().context("measured")?;

    let secret = WebhookSecret::parse(TEST_SECRET).map_err(|e| anyhow::anyhow!(e))?;
    let load = |port: u16, connections: usize| http_load::Load {
        url: format!("http://127.0.0.1:{port}/webhook"),
        secret: secret.clone(),
        connections,
        duration,
        rate: None,
        body_bytes: args.body_bytes,
    };
    let handler = measure_handler(args, &load(free_port()?, first)).await?;

    let (port, admin_port) = (free_port()?, free_port()?);
    let mut env = vec![
        ("INGEST_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
        (
            "INGEST_ADMIN_LISTEN".to_owned(),
            format!("127.0.0.1:{admin_port}"),
        ),
        ("STRIPE_WEBHOOK_SECRET".to_owned(), TEST_SECRET.to_owned()),
        ("AMQP_URL".to_owned(), args.amqp_url.clone()),
        (
            "AMQP_PREFIX".to_owned(),
            topology
                .events_exchange()
                .trim_end_matches("stripe.events")
                .to_owned(),
        ),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ];
    env.extend(args.ingest_env.iter().cloned());
    let binary = sibling_binary(args.ingest_bin.as_ref(), "idv-ingest")?;
    let ingest = Child::spawn("idv-ingest", &binary, &[], &env)?;
    until_ready(admin_port, "idv-ingest", Duration::from_secs(20)).await;
    let mut maxima = Vec::new();
    for connections in &args.connections {
        let load = load(port, *connections);
        warm_up(&load).await?;
        purge_events(&args.amqp_url, topology).await?;
        maxima.push(measure_max("idv-ingest", &ingest, &load).await?);
        purge_events(&args.amqp_url, topology).await?;
    }
    let max_rate = maxima.first().map_or(0.0, |max: &IngestMax| max.phase.rate);
    let mut points = Vec::new();
    for fraction in sweep::FRACTIONS {
        let offered = max_rate * fraction;
        let paced = http_load::Load {
            rate: Some(offered),
            duration: Duration::from_secs(args.sweep_seconds),
            ..load(port, first)
        };
        eprintln!(
            "measuring ingest open loop at {offered:.0} req/s ({:.0}% of max, {} s)…",
            fraction * 100.0,
            args.sweep_seconds
        );
        let name = format!("ingest paced at {:.0}% ({offered:.0}/s)", fraction * 100.0);
        let cpu_before = CpuSnapshot::take()?;
        let phase = http_load::run(&name, &paced).await?;
        let cpu = CpuSnapshot::take()?.since(&cpu_before);
        eprintln!("{phase}; {}", cpu.summary());
        points.push(SweepPoint {
            fraction,
            offered,
            phase: Phase {
                cpu: Some(cpu),
                ..Phase::from(&phase)
            },
        });
        purge_events(&args.amqp_url, topology).await?;
    }
    ingest.terminate().await?;
    Ok(IngestResults {
        seconds: args.seconds,
        body_bytes: args.body_bytes,
        broker_in_flight: args.broker_in_flight,
        broker_ceiling,
        broker_same_in_flight,
        handler,
        ingest: maxima,
        sweep: points,
    })
}

/// A short run first, so connections, caches and the broker's queue are
/// warm when the measured phase starts.
async fn warm_up(load: &http_load::Load) -> anyhow::Result<()> {
    eprintln!("warming up at {} connections…", load.connections);
    let warm = http_load::Load {
        duration: Duration::from_secs(2),
        ..load.clone()
    };
    http_load::run("warm-up", &warm).await?;
    Ok(())
}

/// Closed loop against `child` at `load`, its CPU and memory measured.
async fn measure_max(
    what: &str,
    child: &Child,
    load: &http_load::Load,
) -> anyhow::Result<IngestMax> {
    eprintln!(
        "measuring {what} at full speed, {} connections ({} s)…",
        load.connections,
        load.duration.as_secs()
    );
    let meter = child.meter()?;
    let cpu_before = CpuSnapshot::take()?;
    let phase = http_load::run(&format!("{what} max ({} conns)", load.connections), load).await?;
    let cpu = CpuSnapshot::take()?.since(&cpu_before);
    let cost = meter.finish(phase.ok)?;
    eprintln!("{phase}; {}", cpu.summary());
    Ok(IngestMax {
        connections: load.connections,
        phase: Phase {
            cpu: Some(cpu),
            ..Phase::from(&phase)
        },
        cost,
    })
}

/// The actix ceiling: `bench_handler` in its own process, same load.
async fn measure_handler(args: &Args, load: &http_load::Load) -> anyhow::Result<IngestMax> {
    let binary = sibling_binary(args.handler_bin.as_ref(), "bench_handler")?;
    let target = idv_tests::bench::http1::Target::parse(&load.url)?;
    let listen = target.addr.to_string();
    let handler = Child::spawn("actix handler", &binary, &["--listen", &listen], &[])?;
    eventually(
        Duration::from_secs(20),
        "bench_handler to listen",
        || async { tokio::net::TcpStream::connect(target.addr).await.is_ok() },
    )
    .await;
    warm_up(load).await?;
    let measured = measure_max("actix handler", &handler, load).await;
    handler.terminate().await?;
    measured
}
