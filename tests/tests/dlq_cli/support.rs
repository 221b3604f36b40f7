//! The world of the `idvctl dlq` tests: a broker prefix and a database of
//! the test's own, dead letters written into the table with SQL (as the
//! worker's drain writes them), `idvctl` run as a child process, and what
//! the tests read back (rows marked, messages published).

use std::process::{Output, Stdio};
use std::time::Duration;

use idv_tests::broker::{Received, TestBroker};
use idv_tests::database::TestDatabase;
use idv_tests::worker_world::{event, migrate, session, settings};
use lapin::types::AMQPValue;
use serde_json::Value;
use tokio::process::{Child, Command};

/// `idvctl`'s own `main`, built by this crate with the worker's fail points.
pub const IDVCTL: &str = env!("CARGO_BIN_EXE_idvctl-under-test");

/// How long one `idvctl` run may take.
pub const RUN_DEADLINE: Duration = Duration::from_secs(60);

pub const VERIFIED: &str = "identity.verification_session.verified";
pub const PROCESSING: &str = "identity.verification_session.processing";

/// A migrated database and a declared topology, both removed at the end.
#[derive(Debug)]
pub struct World {
    pub broker: TestBroker,
    pub db: TestDatabase,
    pub client: tokio_postgres::Client,
}

impl World {
    pub async fn new() -> Self {
        let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
        migrate(&settings(Some(&broker), &db, &[])).await;
        let client = db.client().await;
        Self { broker, db, client }
    }

    /// The worker's settings for this world, plus `extra`.
    pub fn worker_settings(&self, extra: &[(&str, &str)]) -> worker::settings::Settings {
        settings(Some(&self.broker), &self.db, extra)
    }

    /// `idvctl args…` against this world, nothing else of the test's
    /// environment but `extra`, no terminal: run to its end.
    pub async fn idvctl(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let child = self.spawn(args, extra);
        tokio::time::timeout(RUN_DEADLINE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("idvctl {args:?} ends within {RUN_DEADLINE:?}"))
            .unwrap()
    }

    /// `idvctl args…` started, its output piped.
    pub fn spawn(&self, args: &[&str], extra: &[(&str, &str)]) -> Child {
        Command::new(IDVCTL)
            .args(args)
            .env_clear()
            .env("DATABASE_URL", &self.db.url)
            .env("AMQP_URL", &self.broker.url)
            .env("AMQP_PREFIX", &self.broker.prefix)
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    /// Writes a dead letter as the drain would; returns its id.
    pub async fn insert(&self, letter: &Letter) -> i64 {
        let fingerprint = uuid::Uuid::new_v4().as_bytes().to_vec();
        let routing_key = letter.event_type.unwrap_or("idv.events");
        let row = self
            .client
            .query_one(
                "INSERT INTO dead_letters (fingerprint, event_id, event_type, session_id, \
                 event_created, routing_key, reason, kind, attempts, first_failure_at, \
                 last_failure_at, dead_lettered_at, payload, payload_erased_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 4, \
                 now() - make_interval(mins => $9 + 10), now() - make_interval(mins => $9 + 1), \
                 now() - make_interval(mins => $9), $10, \
                 CASE WHEN $10::bytea IS NULL THEN now() END) RETURNING id",
                &[
                    &fingerprint,
                    &letter.event_id,
                    &letter.event_type,
                    &letter.session_id,
                    &letter.created,
                    &routing_key,
                    &letter.reason,
                    &letter.kind,
                    &letter.minutes_ago,
                    &letter.payload,
                ],
            )
            .await
            .unwrap();
        row.get(0)
    }

    /// The ids of the rows marked replayed, in order.
    pub async fn replayed(&self) -> Vec<i64> {
        self.ids("replayed_at IS NOT NULL").await
    }

    /// The ids of the rows matching `predicate`, in order.
    pub async fn ids(&self, predicate: &str) -> Vec<i64> {
        self.client
            .query(
                &format!("SELECT id FROM dead_letters WHERE {predicate} ORDER BY id"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// Every message waiting in the work queue, taken out (acked).
    pub async fn take_published(&self) -> Vec<Received> {
        let queue = self.broker.topology.events_queue();
        let mut taken = Vec::new();
        while let Some(message) = self.broker.try_get(&queue).await {
            taken.push(message);
        }
        taken
    }
}

/// A dead letter to write.
#[derive(Debug, Clone)]
pub struct Letter {
    pub event_id: Option<String>,
    pub event_type: Option<&'static str>,
    pub session_id: Option<String>,
    pub created: Option<i64>,
    pub kind: &'static str,
    pub reason: String,
    /// `None`: erased by a redaction.
    pub payload: Option<Vec<u8>>,
    /// Dead-lettered this many minutes ago.
    pub minutes_ago: i32,
}

impl Letter {
    /// A `processing` or `verified` event of `session` (`kind_of_event`
    /// names it: `processing`, `verified`), with its exact bytes, which
    /// the worker failed with `kind`.
    pub fn event(
        id: &str,
        kind_of_event: &str,
        session_id: &str,
        created: i64,
        kind: &'static str,
    ) -> Self {
        let event_type = match kind_of_event {
            "verified" => VERIFIED,
            _ => PROCESSING,
        };
        let body = event(
            id,
            kind_of_event,
            created,
            session(
                session_id,
                kind_of_event,
                Some(&format!("user_{session_id}")),
                None,
            ),
        );
        Self {
            event_id: Some(id.to_owned()),
            event_type: Some(event_type),
            session_id: Some(session_id.to_owned()),
            created: Some(created),
            kind,
            reason: format!("{kind}: as the worker says it"),
            payload: Some(body),
            minutes_ago: 5,
        }
    }

    /// A body that is no event at all.
    pub fn unparseable() -> Self {
        Self {
            event_id: None,
            event_type: None,
            session_id: None,
            created: None,
            kind: "unparseable",
            reason: "not a Stripe Identity event: expected value at line 1 column 1".to_owned(),
            payload: Some(b"{not json".to_vec()),
            minutes_ago: 5,
        }
    }

    pub fn minutes_ago(mut self, minutes: i32) -> Self {
        self.minutes_ago = minutes;
        self
    }

    pub fn redacted(mut self) -> Self {
        self.payload = None;
        self
    }
}

/// Stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts exit code `code`, showing the output otherwise.
pub fn assert_code(output: &Output, code: i32, case: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{case}: stdout {} stderr {}",
        stdout(output),
        stderr(output)
    );
}

/// The JSON lines of stdout.
pub fn json_lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

/// The `x-idv-replay` header of a published message.
pub fn replay_header(message: &Received) -> String {
    let headers = message.properties.headers().clone().unwrap_or_default();
    match headers.inner().get("x-idv-replay") {
        Some(AMQPValue::LongString(value)) => value.to_string(),
        other => panic!("x-idv-replay is a string: {other:?}"),
    }
}
