//! The Markdown report of one `deploy/bench.sh` run: the machine, each
//! figure beside the ceiling the same run measured (with the ratio), the
//! latency sweeps, the cost per process, and the targets of issue 10 with
//! whether this run met them. Also the figure of the latency plot.

use std::fmt::Write as _;

use super::cpu_split::CpuSplit;
use super::machine::Machine;
use super::results::{IngestResults, Phase, SweepPoint, WorkerResults};
use super::svg::{Figure, Panel, Series};
use super::targets::{self, Target};

/// `6.3k/s`, `950/s`.
fn rate(value: f64) -> String {
    if value >= 1000.0 {
        format!("{:.1}k/s", value / 1000.0)
    } else {
        format!("{value:.0}/s")
    }
}

/// `0.84 ms`, `12.3 ms`, `1520 ms`.
fn ms(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.2} ms")
    } else if value < 1000.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.0} ms")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".to_owned()
    }
}

fn cpu(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |us| format!("{us:.1} µs"))
}

/// A throughput row: what, rate, p50, p99, the ratio column, and the
/// machine's CPU where measured.
fn throughput_row(out: &mut String, what: &str, phase: &Phase, ratios: &str) {
    let _ = writeln!(
        out,
        "| {what} | {} | {} | {} | {ratios} | {} |",
        rate(phase.rate),
        ms(phase.p50_ms),
        ms(phase.p99_ms),
        cpu_cell(phase.cpu.as_ref())
    );
}

/// The whole report; `plot` is the SVG's file name beside it.
pub fn render(
    machine: &Machine,
    ingest: &IngestResults,
    worker: &WorkerResults,
    plot: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Benchmark report\n\n\
         - date: {} · commit `{}`\n\
         - machine: {} cores, {}, Linux {}; load average before the run: {}\n\
         - everything on loopback: the load generator, the services, RabbitMQ and PostgreSQL share these cores\n\
         - ingest phases {} s, ~{} B events; pipeline bursts of {} events, paced phases {} s\n",
        machine.date,
        machine.commit,
        machine.cores,
        machine.cpu_model,
        machine.kernel,
        machine.load_before,
        ingest.seconds,
        ingest.body_bytes,
        worker.burst_events,
        worker.paced_seconds,
    );
    throughput(&mut out, ingest, worker);
    costs(&mut out, ingest, worker);
    sweeps(&mut out, ingest, worker, plot);
    targets_table(&mut out, &targets::evaluate(ingest, worker));
    out
}

fn throughput(out: &mut String, ingest: &IngestResults, worker: &WorkerResults) {
    let ceiling = &ingest.broker_ceiling;
    let same = &ingest.broker_same_in_flight;
    let first = ingest.handler.connections;
    out.push_str(
        "## Throughput against ceilings\n\n\
         | measured | rate | p50 | p99 | ratio | cores busy |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    throughput_row(
        out,
        &format!(
            "broker ceiling, {} confirms in flight",
            ingest.broker_in_flight
        ),
        ceiling,
        "baseline",
    );
    throughput_row(
        out,
        &format!("broker, {first} confirms in flight"),
        same,
        &format!("{} of the ceiling", ratio(same.rate, ceiling.rate)),
    );
    throughput_row(
        out,
        &format!("actix handler (verify + 200), {first} connections"),
        &ingest.handler.phase,
        &format!(
            "{} of the ceiling",
            ratio(ingest.handler.phase.rate, ceiling.rate)
        ),
    );
    for max in &ingest.ingest {
        let mut ratios = format!("{} of the ceiling", ratio(max.phase.rate, ceiling.rate));
        if max.connections == first {
            let _ = write!(
                ratios,
                "; {} of the broker at {first} in flight; {} of the handler",
                ratio(max.phase.rate, same.rate),
                ratio(max.phase.rate, ingest.handler.phase.rate)
            );
        }
        throughput_row(
            out,
            &format!("idv-ingest, {} connections, max", max.connections),
            &max.phase,
            &ratios,
        );
    }
    let _ = writeln!(
        out,
        "| PostgreSQL ceiling, transactions (1 event each, {} connections) | {} | – | – | baseline | – |",
        worker.ceiling_connections,
        rate(worker.ceiling_tx_per_s)
    );
    let one = worker.runs.iter().find(|run| run.workers == 1);
    for run in &worker.runs {
        let mut ratios = format!(
            "{} of the ceiling",
            ratio(run.burst.rate, worker.ceiling_tx_per_s)
        );
        if let Some(one) = one.filter(|_| run.workers != 1) {
            let _ = write!(
                ratios,
                "; {} of 1 worker",
                ratio(run.burst.rate, one.burst.rate)
            );
        }
        let _ = write!(
            ratios,
            "; {:.1} events per batch",
            run.burst_events_per_batch
        );
        throughput_row(
            out,
            &format!("{} worker(s), burst (publish → committed)", run.workers),
            &run.burst,
            &ratios,
        );
    }
    out.push('\n');
}

fn costs(out: &mut String, ingest: &IngestResults, worker: &WorkerResults) {
    let handler_cpu = ingest.handler.cost.cpu_us_per_op;
    out.push_str(
        "## CPU and memory per process at full load\n\n\
         CPU = user + system time of the process over the phase ÷ operations answered \
         (`/proc/<pid>/stat`); peak RSS = `VmHWM` after the phase.\n\n\
         | process | phase | CPU per operation | peak RSS |\n| --- | --- | --- | --- |\n",
    );
    let _ = writeln!(
        out,
        "| actix handler (verify + 200) | {} connections, max | {} per request | {:.1} MB |",
        ingest.handler.connections,
        cpu(handler_cpu),
        ingest.handler.cost.peak_rss_mb
    );
    for max in &ingest.ingest {
        let versus = match (max.cost.cpu_us_per_op, handler_cpu) {
            (Some(own), Some(handler)) if handler > 0.0 => {
                format!(" ({:.1}× the handler)", own / handler)
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| idv-ingest | {} connections, max | {} per accepted request{versus} | {:.1} MB |",
            max.connections,
            cpu(max.cost.cpu_us_per_op),
            max.cost.peak_rss_mb
        );
    }
    for run in &worker.runs {
        for (n, cost) in run.costs.iter().enumerate() {
            let _ = writeln!(
                out,
                "| idv-worker {} of {} | burst | {} per event | {:.1} MB |",
                n + 1,
                run.workers,
                cpu(cost.cpu_us_per_op),
                cost.peak_rss_mb
            );
        }
    }
    out.push('\n');
}

/// `1.93 (RabbitMQ 0.80, PostgreSQL 0.51, idv services 0.40, load generator 0.12, other 0.10)`.
fn cpu_cell(split: Option<&CpuSplit>) -> String {
    split.map_or_else(
        || "–".to_owned(),
        |split| {
            let groups: Vec<String> = split
                .groups
                .iter()
                .map(|(name, cores)| format!("{name} {cores:.2}"))
                .collect();
            format!("{:.2} ({})", split.busy_cores, groups.join(", "))
        },
    )
}

fn sweep_table(out: &mut String, title: &str, points: &[SweepPoint]) {
    let _ = writeln!(
        out,
        "{title}\n\n| offered | of max | achieved | failed | p50 | p90 | p99 | max | cores busy |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for point in points {
        let phase = &point.phase;
        let _ = writeln!(
            out,
            "| {} | {:.0}% | {} | {} | {} | {} | {} | {} | {} |",
            rate(point.offered),
            point.fraction * 100.0,
            rate(phase.rate),
            phase.failed,
            ms(phase.p50_ms),
            ms(phase.p90_ms),
            ms(phase.p99_ms),
            ms(phase.max_ms),
            cpu_cell(phase.cpu.as_ref())
        );
    }
    out.push('\n');
}

fn sweeps(out: &mut String, ingest: &IngestResults, worker: &WorkerResults, plot: &str) {
    let _ = writeln!(
        out,
        "## Latency against offered load\n\n\
         Open loop: requests or events are sent on a fixed schedule and latency is measured \
         from each one's scheduled time, so a stall is not hidden. \
         \"Cores busy\" is the machine's CPU over the point (all processes, from `/proc/stat`), \
         and by whom: the load generator shares the cores with what it measures.\n\n![Latency against offered load]({plot})\n"
    );
    let connections = ingest.handler.connections;
    sweep_table(
        out,
        &format!(
            "Ingest (HTTP request → 200 after the broker's confirm), {connections} connections:"
        ),
        &ingest.sweep,
    );
    sweep_table(
        out,
        "Pipeline (publish → committed), 1 worker:",
        &worker.sweep,
    );
    let halves: Vec<SweepPoint> = worker
        .runs
        .iter()
        .filter(|run| run.workers != 1)
        .map(|run| SweepPoint {
            fraction: 0.5,
            offered: run.burst.rate / 2.0,
            phase: run.half.clone(),
        })
        .collect();
    if !halves.is_empty() {
        sweep_table(out, "Pipeline at half its burst rate, 2+ workers:", &halves);
    }
}

fn targets_table(out: &mut String, targets: &[Target]) {
    out.push_str(
        "## Targets (issue 10)\n\n| target | bound | this run | met |\n| --- | --- | --- | --- |\n",
    );
    for target in targets {
        let (symbol, limit) = target.bound.symbol_and_limit();
        let measured = target.measured.map_or_else(
            || "not measured".to_owned(),
            |value| format!("{value:.2}{}", target.unit),
        );
        let met = match target.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(
            out,
            "| {} | {symbol} {limit}{} | {measured} | {met} |",
            target.what, target.unit
        );
    }
}

/// Latency percentiles against offered load: ingest and the pipeline.
pub fn latency_figure(ingest: &IngestResults, worker: &WorkerResults) -> Figure {
    let series = |points: &[SweepPoint]| {
        let line = |label: &str, pick: fn(&Phase) -> f64| Series {
            label: label.to_owned(),
            points: points.iter().map(|p| (p.offered, pick(&p.phase))).collect(),
        };
        vec![line("p50", |p| p.p50_ms), line("p99", |p| p.p99_ms)]
    };
    Figure {
        title: "Latency against offered load (open loop)".to_owned(),
        x_label: "offered load (events/s)".to_owned(),
        y_label: "latency (log scale)".to_owned(),
        panels: vec![
            Panel {
                title: "ingest: request → 200 (broker confirmed)".to_owned(),
                series: series(&ingest.sweep),
            },
            Panel {
                title: "pipeline: publish → committed (1 worker)".to_owned(),
                series: series(&worker.sweep),
            },
        ],
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
