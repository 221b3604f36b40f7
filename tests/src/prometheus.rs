//! A real Prometheus server for one test: its binary found on this
//! machine, a configuration written into a directory of its own (removed
//! with it), scraping the services under test, and its HTTP API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::service_process::ServiceProcess;

/// Names the Prometheus server binary to use, ahead of the usual places.
pub const BINARY_VAR: &str = "IDV_PROMETHEUS_BIN";

/// How often the test's Prometheus scrapes and evaluates its rules.
pub const SCRAPE_EVERY: &str = "1s";

/// The Prometheus binary: `IDV_PROMETHEUS_BIN`, else `prometheus` on
/// `PATH`, else the one `deploy/test.sh` and `deploy/check-artefacts.sh`
/// unpack from Debian's package into the tools cache. The error says how
/// to get one.
pub fn binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(BINARY_VAR) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{BINARY_VAR} is {}, which is not a file: expected the path of a Prometheus server binary",
                path.display()
            ))
        };
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"))
        .find(|path| path.is_file());
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|cache| cache.join("idv-pipeline/tools/prometheus/usr/bin/prometheus"));
    on_path
        .or_else(|| cache.clone().filter(|path| path.is_file()))
        .ok_or_else(|| {
            format!(
                "no Prometheus server binary: not in {BINARY_VAR}, not on PATH, not at {}. \
                 Run the tests with deploy/test.sh (it fetches Debian's prometheus package \
                 into that cache), or run `bash -c 'source deploy/services.sh && \
                 ensure_prometheus_package'` once, or set {BINARY_VAR} to a prometheus binary",
                cache.map_or_else(|| "~/.cache/…".to_owned(), |p| p.display().to_string())
            )
        })
}

/// One job Prometheus scrapes: a service's admin listener on loopback.
#[derive(Debug, Clone)]
pub struct ScrapeJob {
    /// `job_name`, as in `deploy/prometheus/prometheus.yml`.
    pub job: String,
    /// The admin port that serves `/metrics`.
    pub port: u16,
}

/// What the test's Prometheus does besides scraping `jobs`.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    pub jobs: Vec<ScrapeJob>,
    /// Rule files (absolute paths) it loads and evaluates.
    pub rule_files: Vec<PathBuf>,
    /// Metric relabelling applied to every job, as JSON objects in
    /// Prometheus' `metric_relabel_configs` form.
    pub metric_relabel: Vec<Value>,
}

impl PrometheusConfig {
    /// `prometheus.yml`, written as JSON (which YAML includes).
    fn to_file(&self) -> Value {
        let scrape_configs: Vec<Value> = self
            .jobs
            .iter()
            .map(|job| {
                json!({
                    "job_name": job.job,
                    "static_configs": [{"targets": [format!("127.0.0.1:{}", job.port)]}],
                    "metric_relabel_configs": self.metric_relabel,
                })
            })
            .collect();
        json!({
            "global": {
                "scrape_interval": SCRAPE_EVERY,
                "scrape_timeout": SCRAPE_EVERY,
                "evaluation_interval": SCRAPE_EVERY,
            },
            "rule_files": self.rule_files,
            "scrape_configs": scrape_configs,
        })
    }
}

/// A running Prometheus, killed and its directory removed on drop.
#[derive(Debug)]
pub struct TestPrometheus {
    /// `http://127.0.0.1:{port}`
    pub address: String,
    client: reqwest::Client,
    /// Killed on drop, before its directory is removed.
    process: ServiceProcess,
    dir: PathBuf,
}

impl TestPrometheus {
    /// Writes `config` into a new directory and starts `binary` on it,
    /// with its storage there too (kept 15 minutes at most), on a free
    /// loopback port; returns once it is ready.
    pub async fn start(binary: &Path, config: &PrometheusConfig) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "idv-prometheus-{}-{}",
            crate::run_tag(),
            crate::unique_suffix()
        ));
        std::fs::create_dir_all(dir.join("data")).expect("create the Prometheus directory");
        let config_path = dir.join("prometheus.yml");
        let text = serde_json::to_string_pretty(&config.to_file()).expect("serialisable");
        std::fs::write(&config_path, text).expect("write prometheus.yml");
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let args = [
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            "--storage.tsdb.retention.time=15m".to_owned(),
            format!("--web.listen-address={address}"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = ServiceProcess::spawn("prometheus", binary, &args, &[]);
        let mut prometheus = Self {
            address: format!("http://{address}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
            process,
            dir,
        };
        prometheus.wait_ready(Duration::from_secs(30)).await;
        prometheus
    }

    async fn wait_ready(&mut self, deadline: Duration) {
        let started = std::time::Instant::now();
        loop {
            let ready = self
                .client
                .get(format!("{}/-/ready", self.address))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                return;
            }
            // A configuration or rule file it refuses stops it here, with
            // its reason in its log.
            if let Some(status) = self.process.exited() {
                let log = self.process.output();
                let errors: Vec<&str> = log.lines().filter(|l| l.contains("level=error")).collect();
                panic!(
                    "Prometheus exited ({status}) instead of starting:\n{}\n\nits whole log:\n{log}",
                    errors.join("\n")
                );
            }
            assert!(
                started.elapsed() < deadline,
                "Prometheus was not ready within {deadline:?}; its log:\n{}",
                self.process.output()
            );
            tokio::time::sleep(crate::wait::POLL_EVERY).await;
        }
    }

    /// `GET /api/v1/{path}` with `params`: the whole answer (`status`,
    /// `data` or `errorType`/`error`), whatever the HTTP status.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let response = self
            .client
            .get(format!("{}/api/v1/{path}", self.address))
            .query(params)
            .send()
            .await
            .unwrap_or_else(|error| panic!("Prometheus answers /api/v1/{path}: {error}"));
        response
            .json()
            .await
            .unwrap_or_else(|error| panic!("Prometheus answers /api/v1/{path} in JSON: {error}"))
    }

    /// An instant query at the current time: the whole answer.
    pub async fn query(&self, promql: &str) -> Value {
        self.api("query", &[("query", promql)]).await
    }

    /// The number an instant query returns (its first sample), if any.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let answer = self.query(promql).await;
        answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|value| value.parse().ok())
    }

    /// Every scrape target's job and health (`up`, `down`, `unknown`),
    /// with its last error.
    pub async fn targets(&self) -> Vec<(String, String, String)> {
        let answer = self.api("targets", &[]).await;
        answer["data"]["activeTargets"]
            .as_array()
            .map(|targets| {
                targets
                    .iter()
                    .map(|t| {
                        let text = |field: &str| t[field].as_str().unwrap_or_default().to_owned();
                        (
                            t["labels"]["job"].as_str().unwrap_or_default().to_owned(),
                            text("health"),
                            text("lastError"),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every rule it loaded: `(name, query, health, last error)`.
    pub async fn rules(&self) -> Vec<(String, String, String, String)> {
        let answer = self.api("rules", &[]).await;
        let mut rules = Vec::new();
        for group in answer["data"]["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                let text = |field: &str| rule[field].as_str().unwrap_or_default().to_owned();
                rules.push((
                    text("name"),
                    text("query"),
                    text("health"),
                    text("lastError"),
                ));
            }
        }
        rules
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.process.output()
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        // Gone before its files are: a Prometheus still running could
        // write into the directory being removed.
        self.process.kill_now();
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {error}", self.dir.display());
        }
    }
}

/// A loopback port nothing listens on right now (Prometheus cannot be
/// asked for port 0 and tell which one it got).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}
