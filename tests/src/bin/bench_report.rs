//! Turns the JSON results of `bench_ingest` and `bench_worker` into the
//! benchmark report: `report.md` (machine, tables with ratios to their
//! ceilings, targets met or not) and `latency.svg` (latency percentiles
//! against offered load) in `--out-dir`. `deploy/bench.sh` runs it last.

use std::path::PathBuf;

use clap::Parser;
use idv_tests::bench::machine::Machine;
use idv_tests::bench::results::{IngestResults, WorkerResults, read_json};
use idv_tests::bench::{report, svg};

const PLOT: &str = "latency.svg";

#[derive(Debug, Parser)]
#[command(about = "Write the benchmark report (Markdown + SVG) from the bench results")]
struct Args {
    /// `bench_ingest --json` output.
    #[arg(long)]
    ingest: PathBuf,
    /// `bench_worker --json` output.
    #[arg(long)]
    worker: PathBuf,
    /// Where report.md and latency.svg go.
    #[arg(long)]
    out_dir: PathBuf,
    /// When the run started (UTC), as the report should print it.
    #[arg(long)]
    date: String,
    /// The commit measured (e.g. `git describe --always --dirty`).
    #[arg(long)]
    commit: String,
    /// Load averages when the run started (`/proc/loadavg`'s first three).
    #[arg(long, default_value = "unknown")]
    load_before: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ingest: IngestResults = read_json(&args.ingest)?;
    let worker: WorkerResults = read_json(&args.worker)?;
    let machine = Machine::detect(&args.date, &args.commit, &args.load_before);
    std::fs::create_dir_all(&args.out_dir)?;
    let markdown = report::render(&machine, &ingest, &worker, PLOT);
    let plot = svg::render(&report::latency_figure(&ingest, &worker));
    let (report_path, plot_path) = (args.out_dir.join("report.md"), args.out_dir.join(PLOT));
    for (path, text) in [(&report_path, &markdown), (&plot_path, &plot)] {
        std::fs::write(path, text)
            .map_err(|error| anyhow::anyhow!("cannot write {}: {error}", path.display()))?;
    }
    println!("{markdown}");
    println!(
        "report: {}  plot: {}",
        report_path.display(),
        plot_path.display()
    );
    Ok(())
}
