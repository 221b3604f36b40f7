//! The report's tables from known results: each figure beside its ceiling
//! with the right ratio, every target judged, tables with whole rows.

use super::*;
use crate::bench::results::{IngestMax, ProcessCost, WorkerRun};

fn phase(name: &str, rate: f64, p50_ms: f64, p99_ms: f64) -> Phase {
    Phase {
        name: name.to_owned(),
        rate,
        ok: (rate * 10.0) as u64,
        failed: 0,
        p50_ms,
        p90_ms: (p50_ms + p99_ms) / 2.0,
        p99_ms,
        max_ms: p99_ms * 2.0,
        cpu: None,
    }
}

fn cost(process: &str, cpu_us: f64, rss_mb: f64) -> ProcessCost {
    ProcessCost {
        process: process.to_owned(),
        cpu_us_per_op: Some(cpu_us),
        peak_rss_mb: rss_mb,
    }
}

fn sweep(max: f64, p99_at_half: f64) -> Vec<SweepPoint> {
    crate::bench::sweep::FRACTIONS
        .iter()
        .map(|fraction| SweepPoint {
            fraction: *fraction,
            offered: max * fraction,
            phase: phase(
                "paced",
                max * fraction,
                1.0 + fraction,
                if *fraction == 0.5 {
                    p99_at_half
                } else {
                    10.0 * fraction
                },
            ),
        })
        .collect()
}

fn ingest() -> IngestResults {
    IngestResults {
        seconds: 10,
        body_bytes: 2048,
        broker_in_flight: 256,
        broker_ceiling: phase("broker", 20_000.0, 5.0, 20.0),
        broker_same_in_flight: phase("broker 32", 10_000.0, 2.0, 5.0),
        handler: IngestMax {
            connections: 32,
            phase: phase("handler", 30_000.0, 0.9, 2.0),
            cost: cost("handler", 10.0, 12.0),
        },
        ingest: vec![
            IngestMax {
                connections: 32,
                phase: phase("ingest 32", 6_000.0, 4.0, 10.0),
                cost: cost("idv-ingest", 32.0, 21.5),
            },
            IngestMax {
                connections: 128,
                phase: phase("ingest 128", 11_000.0, 9.0, 30.0),
                cost: cost("idv-ingest", 30.0, 60.0),
            },
        ],
        sweep: sweep(6_000.0, 8.0),
    }
}

fn worker() -> WorkerResults {
    let run = |workers: usize, rate: f64, p99: f64| WorkerRun {
        workers,
        burst: phase("burst", rate, 100.0, 300.0),
        burst_events_per_batch: 12.5,
        costs: (0..workers)
            .map(|_| cost("idv-worker", 150.0, 40.0))
            .collect(),
        half: phase("half", rate / 2.0, 20.0, p99),
    };
    WorkerResults {
        burst_events: 24_000,
        paced_seconds: 6,
        ceiling_tx_per_s: 2_000.0,
        ceiling_connections: 16,
        runs: vec![run(1, 4_000.0, 74.0), run(2, 3_000.0, 360.0)],
        sweep: sweep(4_000.0, 30.0),
    }
}

fn machine() -> Machine {
    Machine {
        cores: 2,
        cpu_model: "Test CPU".to_owned(),
        kernel: "6.1.0".to_owned(),
        date: "2026-11-29 01:00 UTC".to_owned(),
        commit: "abc1234".to_owned(),
        load_before: "0.10 0.20 0.30".to_owned(),
    }
}

/// The report's line that starts with `start`.
fn line<'a>(report: &'a str, start: &str) -> &'a str {
    report
        .lines()
        .find(|line| line.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in\n{report}"))
}

#[test]
fn figures_stand_beside_their_ceilings_with_ratios() {
    let report = render(&machine(), &ingest(), &worker(), "latency.svg");
    assert!(report.contains("2 cores, Test CPU, Linux 6.1.0"));
    assert!(report.contains("commit `abc1234`"));
    assert_eq!(
        line(&report, "| idv-ingest, 32 connections, max"),
        "| idv-ingest, 32 connections, max | 6.0k/s | 4.00 ms | 10.0 ms | 0.30 of the ceiling; \
         0.60 of the broker at 32 in flight; 0.20 of the handler | – |"
    );
    assert!(
        line(&report, "| idv-ingest, 128 connections, max")
            .ends_with("| 0.55 of the ceiling | – |")
    );
    assert!(
        line(&report, "| 2 worker(s), burst").contains("1.50 of the ceiling; 0.75 of 1 worker")
    );
    assert!(
        line(&report, "| idv-ingest | 32 connections")
            .contains("32.0 µs per accepted request (3.2× the handler) | 21.5 MB")
    );
    assert_eq!(
        report
            .lines()
            .filter(|l| l.starts_with("| idv-worker ") && l.contains("| burst |"))
            .count(),
        3,
        "one row per worker process"
    );
    assert!(report.contains("![Latency against offered load](latency.svg)"));
    // The sweeps: six offered rates each, from 10% to 100%.
    assert_eq!(report.matches("| 10% |").count(), 2);
    assert!(line(&report, "| 3.0k/s | 50% |").contains("| 8.00 ms |"));
}

#[test]
fn a_phase_s_cpu_split_is_shown_beside_its_latency() {
    let mut worker = worker();
    worker.sweep[2].phase.cpu = Some(crate::bench::cpu_split::CpuSplit {
        cores: 2,
        busy_cores: 1.96,
        groups: vec![
            ("RabbitMQ".to_owned(), 0.81),
            ("PostgreSQL".to_owned(), 0.52),
            ("other".to_owned(), 0.05),
        ],
    });
    let report = render(&machine(), &ingest(), &worker, "latency.svg");
    let row = report
        .lines()
        .find(|line| line.ends_with("| 1.96 (RabbitMQ 0.81, PostgreSQL 0.52, other 0.05) |"))
        .unwrap_or_else(|| panic!("no row with the split in\n{report}"));
    assert!(row.contains("| 50% |"), "{row}");
}

#[test]
fn every_target_is_judged_on_this_run() {
    let report = render(&machine(), &ingest(), &worker(), "latency.svg");
    let judged = |start: &str| line(&report, &format!("| {start}")).to_owned();
    assert!(judged("idv-ingest at 128+").ends_with("| ≥ 0.7 | 0.55 | **no** |"));
    assert!(judged("idv-ingest at the first").ends_with("| ≥ 0.8 | 0.60 | **no** |"));
    assert!(judged("idv-ingest CPU").ends_with("| ≤ 2 | 3.20 | **no** |"));
    assert!(
        judged("end-to-end p99 at half the maximum rate, 1 worker")
            .ends_with("| < 50 ms | 30.00 ms | yes |")
    );
    assert!(
        judged("end-to-end p99 at half the maximum rate, 2 workers")
            .ends_with("| < 50 ms | 360.00 ms | **no** |")
    );
    assert!(judged("2-worker burst").ends_with("| ≥ 1 | 0.75 | **no** |"));
    assert!(judged("idv-ingest peak RSS").ends_with("| < 50 MB | 60.00 MB | **no** |"));
    assert!(judged("idv-worker peak RSS").ends_with("| < 100 MB | 40.00 MB | yes |"));
}

#[test]
fn a_target_the_run_did_not_measure_says_so() {
    let mut ingest = ingest();
    ingest.ingest.truncate(1);
    let report = render(&machine(), &ingest, &worker(), "latency.svg");
    assert!(line(&report, "| idv-ingest at 128+").ends_with("| not measured | – |"));
}

#[test]
fn every_table_row_has_its_header_s_columns() {
    let report = render(&machine(), &ingest(), &worker(), "latency.svg");
    let mut columns = None;
    for line in report.lines() {
        if !line.starts_with('|') {
            columns = None;
            continue;
        }
        let count = line.matches(" | ").count();
        match columns {
            None => columns = Some(count),
            Some(expected) => assert_eq!(count, expected, "{line}"),
        }
    }
}

#[test]
fn the_figure_has_ingest_and_pipeline_panels_with_p50_and_p99() {
    let figure = latency_figure(&ingest(), &worker());
    assert_eq!(figure.panels.len(), 2);
    for panel in &figure.panels {
        let labels: Vec<&str> = panel.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["p50", "p99"]);
        assert_eq!(panel.series[0].points.len(), 6);
    }
    assert_eq!(figure.panels[0].series[1].points[2], (3_000.0, 8.0));
    assert_eq!(figure.panels[1].series[1].points[2], (2_000.0, 30.0));
}
