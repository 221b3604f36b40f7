//! The dashboard and the alert rules against the real thing: a real
//! Prometheus (Debian's package; see `idv_tests::prometheus::binary`)
//! scrapes the real `idv-ingest`, `idv-worker` and `idv-worker
//! --dispatcher-only` while traffic goes through them, and every query of
//! every panel of `deploy/grafana/dashboards/idv-pipeline.json`, expanded
//! as Grafana expands it, returns data; `deploy/prometheus/alerts.yml` is
//! loaded as its rule file, each rule evaluates without error, and each
//! expression is valid PromQL.
//!
//! Each query runs as an instant query at the end of the traffic (what a
//! stat panel sends; the last point of a time series panel's range). A
//! panel fails when its query is invalid, names a metric or label value
//! nothing exports, or returns only NaN (what Grafana shows as no value:
//! a quantile or a ratio over a window with nothing in it); the failure
//! lists every such panel with its expanded query.
//!
//! The scrape configuration has the job names of
//! `deploy/prometheus/prometheus.yml`, and relabels the queue names: the
//! test's worker prefixes them (`test-…-….idv.events`) where a deployment
//! has `idv.events`, the name the dashboard asks for.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

#[path = "prometheus_scrape/services.rs"]
mod services;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use idv_tests::broker::TestBroker;
use idv_tests::dashboard::{self, GrafanaView, PanelQuery, parse_duration};
use idv_tests::database::TestDatabase;
use idv_tests::prometheus::{self, PrometheusConfig, TestPrometheus};
use idv_tests::wait::{POLL_EVERY, eventually};
use idv_tests::worker_world::{migrate, settings};
use serde_json::{Value, json};
use services::{DEADLINE, Services};

/// Panels that may show nothing after a short test, each with its reason.
/// Empty: the traffic gives every panel something.
const NO_DATA_EXPECTED: &[(&str, &str)] = &[];

/// A file of the repository.
fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Grafana's variables for the dashboard as provisioned: its own time
/// range (`time.from`, `now-6h`), the datasource's scrape interval
/// (`timeInterval`, 15s) and `$__interval` at its floor, that interval
/// (Grafana's value for a panel with enough pixels per step). That is the
/// narrowest `$__rate_interval` Grafana ever uses here, 4 × 15s = 1m: any
/// wider view holds the same samples and more. The test's Prometheus
/// scrapes every second, so a minute holds the whole test.
fn grafana_view(dashboard: &Value) -> GrafanaView {
    let datasource = read("deploy/grafana/provisioning/datasources/prometheus.yaml");
    let scrape_interval = datasource
        .lines()
        .find_map(|line| line.trim().strip_prefix("timeInterval:"))
        .and_then(parse_duration)
        .expect("the datasource sets timeInterval (its scrape interval)");
    let range = dashboard["time"]["from"]
        .as_str()
        .and_then(|from| from.strip_prefix("now-"))
        .and_then(parse_duration)
        .expect("the dashboard's time.from is now-<duration>");
    GrafanaView {
        scrape_interval,
        interval: scrape_interval,
        range,
    }
}

/// The test's Prometheus: the jobs `services` serve, `alerts.yml` as its
/// rule file, and the broker prefix taken off the `queue` label.
fn config(broker: &TestBroker, services: &Services) -> PrometheusConfig {
    let deployed = read("deploy/prometheus/prometheus.yml");
    for job in &services.jobs {
        assert!(
            deployed.contains(&format!("job_name: {}", job.job)),
            "deploy/prometheus/prometheus.yml has the job {}",
            job.job
        );
    }
    PrometheusConfig {
        jobs: services.jobs.clone(),
        rule_files: vec![repo_file("deploy/prometheus/alerts.yml")],
        metric_relabel: vec![json!({
            "source_labels": ["queue"],
            "regex": format!("{}(.*)", regex_escape(&broker.prefix)),
            "target_label": "queue",
            "replacement": "$1",
        })],
    }
}

/// `text` as a regular expression (RE2) that matches only itself.
fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.^$|?*+()[]{}".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// Why `answer` to `query` is not data: invalid, empty or all NaN.
fn no_data(answer: &Value) -> Option<String> {
    if answer["status"] != "success" {
        return Some(format!(
            "invalid: {} {}",
            answer["errorType"], answer["error"]
        ));
    }
    let result = &answer["data"]["result"];
    let values: Vec<f64> = match answer["data"]["resultType"].as_str() {
        Some("vector") => result
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|sample| sample["value"][1].as_str()?.parse().ok())
            .collect(),
        Some("scalar") => result[1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .into_iter()
            .collect(),
        other => return Some(format!("a {other:?} result, not a vector")),
    };
    if values.is_empty() {
        Some("no series".to_owned())
    } else if values.iter().all(|v| v.is_nan()) {
        Some("only NaN".to_owned())
    } else {
        None
    }
}

/// Queries every panel until each returns data; fails listing the panels
/// that still return none after `deadline`.
async fn assert_every_panel_has_data(
    prometheus: &TestPrometheus,
    queries: &[PanelQuery],
    deadline: Duration,
) {
    let started = Instant::now();
    loop {
        let mut missing = Vec::new();
        for query in queries {
            if NO_DATA_EXPECTED
                .iter()
                .any(|(panel, _)| query.panel.contains(panel))
            {
                continue;
            }
            if let Some(why) = no_data(&prometheus.query(&query.expr).await) {
                missing.push(format!("{}: {why}\n    {}", query.panel, query.expr));
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < deadline,
            "{} of {} dashboard queries returned no data after {deadline:?}:\n  {}",
            missing.len(),
            queries.len(),
            missing.join("\n  ")
        );
        tokio::time::sleep(POLL_EVERY * 10).await;
    }
}

/// Waits until Prometheus has scraped each of its `count` targets and found
/// it up; fails listing every target's health and last error.
async fn assert_targets_up(prometheus: &TestPrometheus, count: usize) {
    let started = Instant::now();
    loop {
        let targets = prometheus.targets().await;
        if targets.len() == count && targets.iter().all(|(_, health, _)| health == "up") {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "Prometheus's targets were not all up within {DEADLINE:?}: {targets:?}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Waits until Prometheus has a sample of `promql` of at least `least`.
async fn scraped(prometheus: &TestPrometheus, promql: &str, least: f64) {
    eventually(
        DEADLINE,
        &format!("Prometheus to see {promql} >= {least}"),
        || async { prometheus.value(promql).await.is_some_and(|v| v >= least) },
    )
    .await;
}

#[tokio::test]
async fn every_dashboard_query_returns_data_and_every_alert_rule_evaluates() {
    let binary = prometheus::binary().unwrap_or_else(|error| panic!("{error}"));
    let dashboard_json: Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/idv-pipeline.json")).expect("JSON");
    let queries = dashboard::queries(&dashboard_json, &grafana_view(&dashboard_json))
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(queries.len() >= 10, "the dashboard's queries: {queries:?}");

    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    migrate(&settings(Some(&broker), &db, &[])).await;
    let services = Services::start(&broker, &db).await;
    let prometheus = TestPrometheus::start(&binary, &config(&broker, &services)).await;
    // Scraped once before any traffic: the first increments count in rate().
    assert_targets_up(&prometheus, services.jobs.len()).await;

    // Everything once; seen by Prometheus (processed, dead-lettered and
    // drained, an outbox row failed) before more events come, so that the
    // series they created have a sample before they grow.
    let accepted = services.drive_everything().await;
    let accepted_total = r#"sum(idv_ingest_requests_total{outcome="accepted"})"#;
    scraped(&prometheus, accepted_total, accepted as f64).await;
    scraped(
        &prometheus,
        r#"sum(idv_worker_events_total{outcome!~"retried|dead_lettered"})"#,
        (accepted - 1) as f64,
    )
    .await;
    scraped(&prometheus, "max(idv_worker_dead_letters_waiting)", 1.0).await;
    scraped(
        &prometheus,
        r#"sum(idv_worker_outbox_actions_total{result="failed"})"#,
        1.0,
    )
    .await;
    let more = services.fresh_events(3);
    for body in &more {
        assert_eq!(services.post_signed(body).await, 200);
    }
    scraped(&prometheus, accepted_total, (accepted + more.len()) as f64).await;

    assert_every_panel_has_data(&prometheus, &queries, DEADLINE).await;
    assert_alert_rules_evaluate(&prometheus).await;
    services.stop().await;
}

/// Every alert of `alerts.yml` is loaded, has been evaluated without error,
/// and its expression is valid PromQL (data not required: most alerts
/// watch for what the test does not do).
async fn assert_alert_rules_evaluate(prometheus: &TestPrometheus) {
    let mut expected: Vec<String> = read("deploy/prometheus/alerts.yml")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect();
    expected.sort();
    assert!(!expected.is_empty(), "alerts.yml names its alerts");
    let rules = idv_tests::wait::eventually_some(
        DEADLINE,
        "every rule of alerts.yml evaluated",
        || async {
            let rules = prometheus.rules().await;
            rules
                .iter()
                .all(|(_, _, health, _)| health != "unknown")
                .then_some(rules)
        },
    )
    .await;
    let mut loaded: Vec<String> = rules.iter().map(|(name, ..)| name.clone()).collect();
    loaded.sort();
    assert_eq!(
        loaded, expected,
        "the rules Prometheus loaded from alerts.yml"
    );
    for (name, query, health, error) in &rules {
        assert_eq!(health, "ok", "{name} evaluates without error: {error}");
        let answer = prometheus.query(query).await;
        assert_eq!(answer["status"], "success", "{name}: {query}: {answer}");
    }
}
