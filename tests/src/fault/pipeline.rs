//! The pipeline under the fault run, as the real binaries: `idv-ingest`,
//! two `idv-worker` consumers (one armed to die between commit and ack,
//! one SIGKILLed at random moments by the schedule) and `idv-worker
//! --dispatcher-only` (armed to die between performing a row and marking
//! it), each kept running by a [`Supervised`].

use std::sync::Arc;
use std::time::Duration;

use super::ledger::Ledger;
use super::process::Proc;
use super::supervisor::{FailPoint, Supervised};
use crate::ctl_binary::binary_under_test;
use crate::fixtures::TEST_SECRET;

/// Where the pipeline's parts find what they need.
#[derive(Debug, Clone)]
pub struct Wiring {
    pub amqp_url: String,
    pub amqp_prefix: String,
    pub database_url: String,
    /// The recording webhook sink.
    pub webhook_url: String,
}

/// The secret the dispatcher signs outcome webhooks with.
pub const WEBHOOK_SECRET: &str = "fault-run-webhook-secret-0123456789";

/// The running parts.
#[derive(Debug)]
pub struct Pipeline {
    pub ingest: Arc<Supervised>,
    /// `workers[0]` dies at its commit-and-ack fail point; `workers[1]` is
    /// the one the schedule SIGKILLs.
    pub workers: [Arc<Supervised>; 2],
    pub dispatcher: Arc<Supervised>,
    /// `http://127.0.0.1:<port>/webhook`
    pub webhook_url: String,
    /// `http://127.0.0.1:<port>` (ingest's admin listener)
    pub ingest_admin: String,
}

/// A port free right now on 127.0.0.1 (for a child that must be reached).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

impl Pipeline {
    pub async fn start(wiring: &Wiring, ledger: &Arc<Ledger>) -> Self {
        let (port, admin_port) = (free_port(), free_port());
        let listen = format!("127.0.0.1:{port}");
        let admin = format!("127.0.0.1:{admin_port}");
        let common = [
            ("AMQP_URL", wiring.amqp_url.as_str()),
            ("AMQP_PREFIX", wiring.amqp_prefix.as_str()),
            ("LOG_FORMAT", "json"),
            // lapin's own warnings quote returned messages: kept off, as main does.
            ("RUST_LOG", "warn,lapin=error"),
        ];
        let mut ingest_env = common.to_vec();
        ingest_env.extend([
            ("INGEST_LISTEN", listen.as_str()),
            ("INGEST_ADMIN_LISTEN", admin.as_str()),
            ("STRIPE_WEBHOOK_SECRET", TEST_SECRET),
        ]);
        let ingest = Proc::new(
            "idv-ingest",
            binary_under_test("idv-ingest-under-test"),
            &[],
            &ingest_env,
        );
        let mut worker_env = common.to_vec();
        worker_env.extend([
            ("DATABASE_URL", wiring.database_url.as_str()),
            ("WORKER_ADMIN_LISTEN", "127.0.0.1:0"),
            // Every worker writes the rows of the actions it is configured
            // for: the consumers get the dispatcher's webhook settings too.
            ("OUTCOME_WEBHOOK_URL", wiring.webhook_url.as_str()),
            ("OUTCOME_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ]);
        let mut consumer_env = worker_env.clone();
        consumer_env.extend([
            ("WORKER_ROLE", "consumer"),
            ("WORKER_CONSUMERS", "2"),
            // A small window: each kill returns at most 64 deliveries, each
            // counted toward the quorum queue's delivery limit (20).
            ("WORKER_BATCH_SIZE", "16"),
            crate::worker_world::FAST_RETRIES,
        ]);
        let mut dispatcher_env = worker_env;
        dispatcher_env.extend(crate::dispatch_world::FAST_DISPATCH);
        dispatcher_env.extend([
            // One row in hand at a time: a kill at the fail point leaves
            // exactly the row it names performed and unmarked.
            ("DISPATCH_BATCH_SIZE", "1"),
            ("DISPATCH_LEASE_SECS", "30"),
            // FAST_DISPATCH retries within a second, so the default 10
            // attempts can all fall inside one broker outage (stop_app and
            // the node's start take 5-10 s) and fail a row the model says
            // is sent; 100 span more than the longest fault here, as the
            // defaults (1 s doubling to 10 min) do in service.
            ("DISPATCH_MAX_ATTEMPTS", "100"),
        ]);
        let worker_bin = binary_under_test("idv-worker-under-test");
        let consumer = |n: usize| {
            Proc::new(
                &format!("idv-worker {n}"),
                worker_bin.clone(),
                &[],
                &consumer_env,
            )
        };
        let at_commit = FailPoint {
            variable: worker::fail_point::ABORT_AFTER_COMMIT,
            count: 3..=20,
            label: "worker killed between commit and ack (fail point)",
        };
        let at_perform = FailPoint {
            variable: worker::fail_point::ABORT_AFTER_PERFORM,
            count: 3..=40,
            label: "dispatcher killed between perform and mark (fail point)",
        };
        let pipeline = Self {
            ingest: Supervised::start(ingest, None, Arc::clone(ledger)).await,
            workers: [
                Supervised::start(consumer(1), Some(at_commit), Arc::clone(ledger)).await,
                Supervised::start(consumer(2), None, Arc::clone(ledger)).await,
            ],
            dispatcher: Supervised::start(
                Proc::new(
                    "idv-worker --dispatcher-only",
                    worker_bin.clone(),
                    &["--dispatcher-only"],
                    &dispatcher_env,
                ),
                Some(at_perform),
                Arc::clone(ledger),
            )
            .await,
            webhook_url: format!("http://{listen}/webhook"),
            ingest_admin: format!("http://{admin}"),
        };
        pipeline.await_ingest_ready().await;
        pipeline
    }

    /// Waits until ingest's `/readyz` answers 200.
    async fn await_ingest_ready(&self) {
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", self.ingest_admin);
        crate::wait::eventually(Duration::from_secs(60), "ingest ready", || async {
            matches!(client.get(&url).send().await, Ok(r) if r.status().is_success())
        })
        .await;
    }

    pub fn all(&self) -> [&Arc<Supervised>; 4] {
        [
            &self.ingest,
            &self.workers[0],
            &self.workers[1],
            &self.dispatcher,
        ]
    }

    /// No more faults: fail points disarmed (their processes restarted politely).
    pub async fn disarm(&self) {
        for part in self.all() {
            part.disarm().await;
        }
    }

    /// Stops everything with SIGTERM, the dispatcher and ingest last.
    pub async fn shut_down(&self) {
        for part in [
            &self.workers[0],
            &self.workers[1],
            &self.dispatcher,
            &self.ingest,
        ] {
            part.shut_down().await;
        }
    }

    /// Deaths and unclean stops nobody caused, of every part.
    pub fn unexpected(&self) -> Vec<String> {
        self.all().iter().flat_map(|p| p.unexpected()).collect()
    }
}

impl Drop for Pipeline {
    /// Nothing outlives the run, even one that panicked (after
    /// [`Pipeline::shut_down`] there is nothing left to kill).
    fn drop(&mut self) {
        for part in self.all() {
            part.abandon();
        }
    }
}
