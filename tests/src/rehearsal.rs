//! The world of the rehearsal tests (`tests/rehearsal.rs`): a broker
//! prefix, a database, a real ingest and (unless a test wants none) a real
//! worker, with `idvctl scenario` run against them and the record read back
//! with SQL of the test's own; and the key paths of a Stripe event, to
//! compare a test event's shape with a fixture's.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::broker::TestBroker;
use crate::ctl_binary::idvctl;
use crate::database::TestDatabase;
use crate::fixtures::TEST_SECRET;
use crate::ingest_app::TestIngest;
use crate::worker_world::{FAST_RETRIES, RunningWorker, migrate, settings};

/// Every key of `value` as a path (`data.object.status`), leaving out the
/// platform's own keys inside `metadata`.
pub fn key_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Value::Object(map) = value {
        for (key, child) in map {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if path != "data.object.metadata" {
                key_paths(child, &path, out);
            }
            out.insert(path);
        }
    }
}

/// The key paths of a JSON text (see [`key_paths`]).
pub fn keys_of(json: &[u8]) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    key_paths(&serde_json::from_slice(json).expect("JSON"), "", &mut keys);
    keys
}

/// A subject's record as the tests read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub status: String,
    pub failed_attempts: i32,
    /// A code that retrying cannot fix was seen.
    pub blocked: bool,
    /// Each session's status and whether it was redacted, sorted.
    pub sessions: Vec<(String, bool)>,
}

/// A broker prefix, a database, ingest, and (unless told otherwise) a
/// worker, all the test's own.
#[derive(Debug)]
pub struct RehearsalWorld {
    pub broker: TestBroker,
    pub db: TestDatabase,
    pub ingest: TestIngest,
    /// `None` for a world where nobody applies what ingest takes.
    pub worker: Option<RunningWorker>,
}

impl RehearsalWorld {
    pub async fn new(with_worker: bool, worker_max_attempts: &str) -> Self {
        let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
        let worker_settings = settings(
            Some(&broker),
            &db,
            &[
                FAST_RETRIES,
                ("IDV_MAX_FAILED_ATTEMPTS", worker_max_attempts),
            ],
        );
        migrate(&worker_settings).await;
        let worker = if with_worker {
            Some(RunningWorker::start(worker_settings).await)
        } else {
            None
        };
        let ingest = TestIngest::spawn(&broker, &[]).await;
        Self {
            broker,
            db,
            ingest,
            worker,
        }
    }

    /// `idvctl scenario name --subject subject extra…` against this world,
    /// with `IDV_MAX_FAILED_ATTEMPTS=max_attempts`.
    pub async fn scenario(
        &self,
        name: &str,
        subject: &str,
        max_attempts: &str,
        extra: &[&str],
    ) -> std::process::Output {
        let to = format!("{}/webhook", self.ingest.address);
        let mut args = vec!["scenario", name, "--subject", subject, "--to", &to];
        args.extend(extra);
        idvctl(
            &args,
            &[
                ("DATABASE_URL", self.db.url.as_str()),
                ("AMQP_URL", self.broker.url.as_str()),
                ("AMQP_PREFIX", self.broker.prefix.as_str()),
                ("STRIPE_WEBHOOK_SECRET", TEST_SECRET),
                ("IDV_MAX_FAILED_ATTEMPTS", max_attempts),
            ],
        )
        .await
    }

    /// The subject's row and its sessions, read with SQL of the test's own.
    pub async fn record(&self, subject: &str) -> Record {
        let client = self.db.client().await;
        let row = client
            .query_one(
                "SELECT status, failed_attempts, blocked FROM subjects WHERE key = $1",
                &[&subject],
            )
            .await
            .expect("the subject exists");
        let mut sessions: Vec<(String, bool)> = client
            .query(
                "SELECT status, redacted_at IS NOT NULL FROM sessions WHERE subject_key = $1",
                &[&subject],
            )
            .await
            .expect("the query runs")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        sessions.sort();
        Record {
            status: row.get(0),
            failed_attempts: row.get(1),
            blocked: row.get(2),
            sessions,
        }
    }

    /// The types of the inbox's events of `subject`'s sessions, in the
    /// order ingest received them.
    pub async fn inbox_types(&self, subject: &str) -> Vec<String> {
        let client = self.db.client().await;
        client
            .query(
                "SELECT type FROM events WHERE session_id IN \
                 (SELECT id FROM sessions WHERE subject_key = $1) ORDER BY received_at, id",
                &[&subject],
            )
            .await
            .expect("the query runs")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Events in the inbox of `subject`'s sessions.
    pub async fn inbox_count(&self, subject: &str) -> i64 {
        let client = self.db.client().await;
        client
            .query_one(
                "SELECT count(*) FROM events WHERE session_id IN \
                 (SELECT id FROM sessions WHERE subject_key = $1)",
                &[&subject],
            )
            .await
            .expect("the query runs")
            .get(0)
    }

    pub async fn stop(self) {
        if let Some(worker) = self.worker {
            worker.stop().await;
        }
        drop(self.ingest);
        drop(self.db);
        drop(self.broker);
    }
}
