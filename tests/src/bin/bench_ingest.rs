//! Benchmark of `idv-ingest` against the broker's own ceiling, in one run.
//!
//! 1. broker ceiling: a lapin publisher with pipelined confirms, persistent
//!    messages into the `idv.events` quorum queue;
//! 2. ingest at full speed: the release `idv-ingest` binary, signed ~2 KB
//!    events over `--connections` keep-alive connections;
//! 3. ingest at half that rate, open loop, for the latency a normal load sees.
//!
//! Run it with `deploy/bench.sh` (release build). Everything it declares
//! lives under a random `bench-…` prefix and is deleted at the end.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use idv_tests::bench::stats::PhaseResult;
use idv_tests::bench::{broker_ceiling, http_load};
use idv_tests::fixtures::TEST_SECRET;
use idv_tests::wait::eventually;
use lapin::{Connection, ConnectionProperties};
use shared::WebhookSecret;
use shared::topology::{self, Topology};

#[derive(Debug, Parser)]
#[command(about = "Measure idv-ingest against the broker's publish ceiling")]
struct Args {
    /// Seconds each measured phase runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
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
    /// Extra settings for idv-ingest, `NAME=VALUE` (repeatable), e.g.
    /// `--ingest-env INGEST_PUBLISH_CHANNELS=1`.
    #[arg(long = "ingest-env", value_parser = parse_setting)]
    ingest_env: Vec<(String, String)>,
}

fn parse_setting(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, found {raw:?}"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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
    let duration = Duration::from_secs(args.seconds);
    let topology = Topology::new(&format!("bench-{}.", idv_tests::unique_suffix()))
        .map_err(|e| anyhow::anyhow!(e))?;
    reset_queues(&args.amqp_url, &topology).await?;
    let result = run(&args, &topology, duration).await;
    // Whatever happened, leave nothing behind on the broker.
    let connection = Connection::connect(&args.amqp_url, ConnectionProperties::default()).await?;
    topology::delete(&connection.create_channel().await?, &topology).await?;
    let phases = result?;
    let [ceiling, same_concurrency, full, half] = &phases;
    println!();
    for phase in &phases {
        println!("{phase}");
    }
    println!();
    println!(
        "ingest max / broker ceiling: {:.2}   ingest max / broker at {} in flight: {:.2}   \
         p99 at half rate: {:.2} ms ({:.0} req/s)",
        full.rate() / ceiling.rate(),
        args.connections,
        full.rate() / same_concurrency.rate(),
        half.quantile(0.99).as_secs_f64() * 1e3,
        half.rate()
    );
    Ok(())
}

async fn run(
    args: &Args,
    topology: &Topology,
    duration: Duration,
) -> anyhow::Result<[PhaseResult; 4]> {
    let body = Arc::new(http_load::event_body(0, args.body_bytes));
    let mut ceilings = Vec::new();
    // The ceiling with deep pipelining, then with only as many confirms in
    // flight as ingest can have (one per connection).
    for in_flight in [args.broker_in_flight, args.connections] {
        eprintln!(
            "measuring the broker with {in_flight} confirms in flight ({} s)…",
            args.seconds
        );
        let phase = broker_ceiling::measure(
            &args.amqp_url,
            topology,
            Arc::clone(&body),
            4,
            in_flight,
            duration,
        )
        .await?;
        eprintln!("{phase}");
        ceilings.push(phase);
        reset_queues(&args.amqp_url, topology).await?;
    }
    let same_concurrency = ceilings.pop().context("measured")?;
    let ceiling = ceilings.pop().context("measured")?;

    let binary = match &args.ingest_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory beside the bench binary")?
            .join("idv-ingest"),
    };
    let (port, admin_port) = (free_port()?, free_port()?);
    let mut ingest = tokio::process::Command::new(&binary)
        .env("INGEST_LISTEN", format!("127.0.0.1:{port}"))
        .env("INGEST_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("STRIPE_WEBHOOK_SECRET", TEST_SECRET)
        .env("AMQP_URL", &args.amqp_url)
        .env(
            "AMQP_PREFIX",
            topology.events_exchange().trim_end_matches("stripe.events"),
        )
        .env("RUST_LOG", "warn")
        .envs(args.ingest_env.iter().map(|(name, value)| (name, value)))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let client = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{admin_port}/readyz");
    eventually(
        Duration::from_secs(20),
        "idv-ingest to be ready",
        || async {
            client
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;

    let secret = WebhookSecret::parse(TEST_SECRET).map_err(|e| anyhow::anyhow!(e))?;
    let mut load = http_load::Load {
        url: format!("http://127.0.0.1:{port}/webhook"),
        secret,
        connections: args.connections,
        duration: Duration::from_secs(2),
        rate: None,
        body_bytes: args.body_bytes,
    };
    eprintln!("warming up ingest…");
    http_load::run("warm-up", &load).await?;
    reset_queues(&args.amqp_url, topology).await?;
    load.duration = duration;
    eprintln!("measuring ingest at full speed ({} s)…", args.seconds);
    let full = http_load::run(&format!("ingest max ({} conns)", args.connections), &load).await?;
    eprintln!("{full}");
    reset_queues(&args.amqp_url, topology).await?;
    let half_rate = full.rate() / 2.0;
    load.rate = Some(half_rate);
    eprintln!(
        "measuring ingest at {half_rate:.0} req/s ({} s)…",
        args.seconds
    );
    let half = http_load::run(
        &format!("ingest at half of max ({:.0}/s)", half_rate),
        &load,
    )
    .await?;
    eprintln!("{half}");

    let pid = ingest.id().context("idv-ingest already exited")?;
    let terminated = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    if !terminated.success() {
        bail!("could not stop idv-ingest");
    }
    let status = tokio::time::timeout(Duration::from_secs(30), ingest.wait()).await??;
    if !status.success() {
        bail!("idv-ingest exited with {status}");
    }
    Ok([ceiling, same_concurrency, full, half])
}
