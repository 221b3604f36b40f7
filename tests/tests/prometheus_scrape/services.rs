//! The pipeline as it is deployed, on one test's broker prefix and
//! database: the real `idv-ingest` (reaching RabbitMQ through a proxy the
//! test can cut), an `idv-worker` that consumes, and an `idv-worker
//! --dispatcher-only`, each a child process with its admin port picked by
//! the system; and the traffic that gives every panel something to show.

use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::ctl_binary::binary_under_test;
use idv_tests::database::TestDatabase;
use idv_tests::fixtures::{TEST_SECRET, sign_now};
use idv_tests::prometheus::ScrapeJob;
use idv_tests::proxy::TcpProxy;
use idv_tests::service_process::ServiceProcess;
use idv_tests::wait::eventually;
use idv_tests::worker_world::{FAST_RETRIES, event, scenario, session, type_of, unique};

/// How long a process may take to start, and a step of traffic to show.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The three processes, stopped with SIGTERM by [`Services::stop`] and
/// killed if the test ends another way.
#[derive(Debug)]
pub struct Services {
    pub ingest: ServiceProcess,
    pub worker: ServiceProcess,
    pub dispatcher: ServiceProcess,
    /// Between ingest and RabbitMQ.
    pub proxy: TcpProxy,
    /// `http://127.0.0.1:{port}/webhook`
    webhook: String,
    /// `http://127.0.0.1:{ingest's admin port}`
    ingest_admin: String,
    /// The jobs Prometheus scrapes, named as in `deploy/prometheus/prometheus.yml`.
    pub jobs: Vec<ScrapeJob>,
    client: reqwest::Client,
}

/// Settings every worker process gets: the outcome webhook is configured
/// but unreachable, so that its outbox rows fail (the dispatcher gives up
/// after one attempt), and failing messages reach the DLQ within the test.
fn worker_env<'a>(broker: &'a TestBroker, db: &'a TestDatabase) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DATABASE_URL", db.url.as_str()),
        ("AMQP_URL", broker.url.as_str()),
        ("AMQP_PREFIX", broker.prefix.as_str()),
        ("WORKER_ADMIN_LISTEN", "127.0.0.1:0"),
        FAST_RETRIES,
        ("OUTCOME_WEBHOOK_URL", "http://127.0.0.1:9/unreachable"),
        ("OUTCOME_WEBHOOK_SECRET", "test-webhook-secret-0123456789"),
        ("DISPATCH_MAX_ATTEMPTS", "1"),
        ("DISPATCH_POLL_MS", "100"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info,lapin=error"),
    ]
}

impl Services {
    /// Starts the three binaries on `broker` and `db` (migrated) and
    /// waits until each has bound its ports.
    pub async fn start(broker: &TestBroker, db: &TestDatabase) -> Self {
        let proxy = TcpProxy::start(idv_tests::amqp_addr()).await;
        let amqp_via_proxy = idv_tests::url_via(&broker.url, proxy.addr());
        let mut ingest = ServiceProcess::spawn(
            "idv-ingest",
            &binary_under_test("idv-ingest-under-test"),
            &[],
            &[
                ("INGEST_LISTEN", "127.0.0.1:0"),
                ("INGEST_ADMIN_LISTEN", "127.0.0.1:0"),
                ("STRIPE_WEBHOOK_SECRET", TEST_SECRET),
                ("AMQP_URL", &amqp_via_proxy),
                ("AMQP_PREFIX", &broker.prefix),
                // A cut broker is answered 503 within a second.
                ("INGEST_PUBLISH_TIMEOUT_MS", "1000"),
                ("LOG_FORMAT", "json"),
                ("RUST_LOG", "info,lapin=error"),
            ],
        );
        let worker_binary = binary_under_test("idv-worker-under-test");
        let mut env = worker_env(broker, db);
        env.push(("WORKER_ROLE", "consumer"));
        let mut worker = ServiceProcess::spawn("idv-worker", &worker_binary, &[], &env);
        let mut dispatcher = ServiceProcess::spawn(
            "idv-worker --dispatcher-only",
            &worker_binary,
            &["--dispatcher-only"],
            &worker_env(broker, db),
        );
        let ingest_port = port(
            &ingest
                .log_field("idv-ingest serving", "port", DEADLINE)
                .await,
        );
        let ingest_admin = port(
            &ingest
                .log_field("idv-ingest serving", "admin_port", DEADLINE)
                .await,
        );
        let worker_admin = port(&worker.log_field("worker built", "admin", DEADLINE).await);
        let dispatcher_admin = port(
            &dispatcher
                .log_field("worker built", "admin", DEADLINE)
                .await,
        );
        let job = |job: &str, port: u16| ScrapeJob {
            job: job.to_owned(),
            port,
        };
        Self {
            ingest,
            worker,
            dispatcher,
            proxy,
            webhook: format!("http://127.0.0.1:{ingest_port}/webhook"),
            ingest_admin: format!("http://127.0.0.1:{ingest_admin}"),
            jobs: vec![
                job("idv-ingest", ingest_admin),
                job("idv-worker", worker_admin),
                job("idv-dispatcher", dispatcher_admin),
            ],
            client: reqwest::Client::builder()
                .timeout(DEADLINE)
                .build()
                .expect("HTTP client"),
        }
    }

    /// POSTs `body` to `/webhook` with `signature`; the status.
    async fn post(&self, body: &[u8], signature: &str) -> u16 {
        self.client
            .post(&self.webhook)
            .header("Content-Type", "application/json")
            .header("Stripe-Signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .expect("ingest answers")
            .status()
            .as_u16()
    }

    /// POSTs `body` signed now with the secret ingest checks.
    pub async fn post_signed(&self, body: &[u8]) -> u16 {
        self.post(body, &sign_now(TEST_SECRET, body)).await
    }

    /// Every kind of traffic the dashboard shows: a realistic stream
    /// (failed submissions with several codes, verified subjects, one
    /// reaching the attempt limit), an event the worker dead-letters, a bad
    /// signature, and a 503 while the broker is cut off. Returns how many
    /// events ingest accepted.
    pub async fn drive_everything(&self) -> usize {
        let prefix = unique("pm");
        let mut accepted = 0;
        for body in scenario(&prefix, 3) {
            assert_eq!(self.post_signed(&body).await, 200, "{}", type_of(&body));
            accepted += 1;
        }
        // `verified` over a session still `processing`: the worker retries
        // it, then dead-letters it (status_mismatch).
        let mismatch = event(
            &format!("evt_{prefix}mismatch"),
            "verified",
            idv_tests::fixtures::now_unix(),
            session(
                &format!("vs_{prefix}mm"),
                "processing",
                Some("user_mm"),
                None,
            ),
        );
        assert_eq!(self.post_signed(&mismatch).await, 200);
        accepted += 1;
        let forged = self.post(&mismatch, "t=1,v1=00").await;
        assert_eq!(forged, 400, "a bad signature is refused");

        self.proxy.cut();
        eventually(DEADLINE, "ingest to see the broker gone", || async {
            self.ready_status().await == 503
        })
        .await;
        let late = self.fresh_events(1).remove(0);
        assert_eq!(self.post_signed(&late).await, 503, "no broker: 503");
        self.proxy.restore();
        eventually(DEADLINE, "ingest to publish again", || async {
            self.post_signed(&late).await == 200
        })
        .await;
        accepted + 1
    }

    /// `count` events of new subjects, each `processing`.
    pub fn fresh_events(&self, count: usize) -> Vec<Vec<u8>> {
        let prefix = unique("pf");
        (0..count)
            .map(|n| {
                let vs = format!("vs_{prefix}{n}");
                let user = format!("user_{prefix}{n}");
                event(
                    &format!("evt_{prefix}{n}"),
                    "processing",
                    idv_tests::fixtures::now_unix(),
                    session(&vs, "processing", Some(&user), None),
                )
            })
            .collect()
    }

    async fn ready_status(&self) -> u16 {
        self.client
            .get(format!("{}/readyz", self.ingest_admin))
            .send()
            .await
            .map_or(0, |response| response.status().as_u16())
    }

    /// SIGTERM to each; each stops cleanly (exit 0).
    pub async fn stop(self) {
        for (name, process) in [
            ("idv-ingest", self.ingest),
            ("idv-worker", self.worker),
            ("idv-worker --dispatcher-only", self.dispatcher),
        ] {
            let status = process.stop().await;
            assert!(status.success(), "{name} stopped with {status}");
        }
    }
}

/// A port from a log field: `8080` or `127.0.0.1:8080`.
fn port(field: &str) -> u16 {
    field
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("a port in {field:?}"))
}
