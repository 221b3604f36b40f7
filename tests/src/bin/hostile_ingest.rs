//! Hostile input at volume against the release `idv-ingest` binary: the
//! good stream alone for a baseline, then the whole hostile corpus (see
//! `idv_tests::hostile`) sent while the good stream goes on, then the
//! queues read back. Prints a table per family and the good stream's
//! latency alone and under attack; exits 1 if any bad request was not
//! refused, anything of the corpus was published, or a good event was not
//! answered 200 and queued exactly once.
//!
//! Run it with `deploy/hostile.sh` (release build). Its queues are under
//! a `test-TAG-…` prefix (`IDV_TEST_RUN`) and deleted at the end.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use idv_tests::broker::TestBroker;
use idv_tests::fixtures::TEST_SECRET;
use idv_tests::hostile::corpus::Context;
use idv_tests::hostile::family::Family;
use idv_tests::hostile::good_stream::GoodLoad;
use idv_tests::hostile::process::IngestProcess;
use idv_tests::hostile::run::{Plan, run};
use shared::WebhookSecret;

#[derive(Debug, Parser)]
#[command(about = "Send the hostile corpus to idv-ingest while good events flow")]
struct Args {
    /// Good events per second (open loop), alone and under attack.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Keep-alive connections of the good stream.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds the good stream runs alone first.
    #[arg(long, default_value_t = 10)]
    baseline_seconds: u64,
    /// Hostile requests in flight at once (slow senders not counted).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Slow senders in flight at once.
    #[arg(long, default_value_t = 60)]
    slow_concurrency: usize,
    /// Multiplies every family's count (1.0: the full corpus, 11,100).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// The `idv-ingest` binary; default: beside this one.
    #[arg(long)]
    ingest_bin: Option<PathBuf>,
    /// Where ingest's log (its default filter, JSON) is written.
    #[arg(long, default_value = "target/hostile/ingest.log")]
    ingest_log: PathBuf,
}

/// What ingest runs with: the defaults, but a mode to check livemode
/// against. The slow senders wait out the default timeouts.
const HEAD_TIMEOUT: Duration = Duration::from_secs(3);
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    match hostile().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("hostile_ingest: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn hostile() -> anyhow::Result<bool> {
    let args = Args::parse();
    let binary = match &args.ingest_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory beside this binary")?
            .join("idv-ingest"),
    };
    let broker = TestBroker::new().await;
    let ingest = IngestProcess::start(
        &binary,
        &broker,
        &[("EXPECTED_LIVEMODE".to_owned(), "false".to_owned())],
        &args.ingest_log,
    )
    .await?;
    let secret = WebhookSecret::parse(TEST_SECRET).map_err(|e| anyhow::anyhow!(e))?;
    let url = format!("http://127.0.0.1:{}/webhook", ingest.port);
    let plan = Plan {
        addr: ([127, 0, 0, 1], ingest.port).into(),
        context: Context {
            secret: secret.clone(),
            now: 0,
            tolerance_secs: 300,
            max_body_bytes: 1024 * 1024,
            dribble_every: Duration::from_millis(100),
        },
        per_family: Family::ALL
            .iter()
            .map(|&f| (f, (f.full_count() as f64 * args.scale).ceil() as usize))
            .collect(),
        concurrency: args.concurrency,
        slow_concurrency: args.slow_concurrency,
        slow_timeout: HEAD_TIMEOUT.max(BODY_TIMEOUT),
        good: GoodLoad {
            url,
            secret,
            rate: args.rate,
            connections: args.connections,
            body_bytes: 2048,
            timeout: Duration::from_secs(30),
        },
        baseline: Duration::from_secs(args.baseline_seconds),
    };
    let total: usize = plan.per_family.values().sum();
    eprintln!(
        "good stream alone at {} events/s for {} s, then {total} hostile requests with it…",
        args.rate, args.baseline_seconds
    );
    let report = run(&plan, &broker).await;
    ingest.stop().await?;
    let report = report?;
    println!("{}", report.table());
    let log = IngestProcess::log_lines(&args.ingest_log)?;
    println!(
        "ingest's log (default filter, JSON): {} lines, {} ERROR, {} WARN, {} INFO, {} not JSON; {}",
        log.total,
        log.error,
        log.warn,
        log.info,
        log.other,
        args.ingest_log.display()
    );
    let failures = report.failures();
    for failure in &failures {
        println!("FAILED: {failure}");
    }
    if failures.is_empty() {
        println!(
            "every bad request refused, none published; every good event answered 200 and queued once"
        );
    }
    Ok(failures.is_empty())
}
