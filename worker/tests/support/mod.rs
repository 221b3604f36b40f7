//! Helpers for the tests of the `idvctl` and `idv-worker` binaries: the
//! commands with a cleared environment, a database and an AMQP prefix of
//! the test's own, removed when the test ends (even when it fails), named
//! like the tests crate's so `deploy/clean-test-debris.sh` finds leftovers;
//! outbox rows written and read back with SQL.
#![allow(dead_code)] // each test binary uses a different subset
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::process::{Output, Stdio};
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use shared::topology::{self, Topology};
use tokio::process::Command;
use tokio_postgres::NoTls;

pub const IDVCTL: &str = env!("CARGO_BIN_EXE_idvctl");
pub const WORKER: &str = env!("CARGO_BIN_EXE_idv-worker");

/// How long a binary may take to do what a test asks.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// In a URL where a password goes: it must never reach the output.
pub const PASSWORD: &str = "hunter2-never-echoed";

/// RabbitMQ for the tests (`IDV_TEST_AMQP_URL`).
pub fn amqp_url() -> String {
    std::env::var("IDV_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// PostgreSQL for the tests, without a database (`IDV_TEST_POSTGRES_URL`).
pub fn postgres_url() -> String {
    std::env::var("IDV_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// This run's tag (`IDV_TEST_RUN`, lowercase alphanumerics), or `local`.
fn run_tag() -> String {
    let tag: String = std::env::var("IDV_TEST_RUN")
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase();
    if tag.is_empty() {
        "local".to_owned()
    } else {
        tag
    }
}

fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// `binary` with nothing from the test's environment but `vars`.
pub fn command(binary: &str, vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `command` to its end, within [`DEADLINE`].
pub async fn finish(command: &mut Command) -> Output {
    tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("the binary exits within the deadline")
        .expect("the binary runs")
}

/// Stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A database name this test owns, `idv_test_<tag>_<random>`, dropped when
/// the guard drops; something else (`idvctl migrate`, [`TestDb::migrated`])
/// creates it.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    /// `DATABASE_URL` for the binaries.
    pub url: String,
}

impl TestDb {
    /// The name and URL only: nothing exists yet.
    pub fn named() -> Self {
        let name = format!("idv_test_{}_{}", run_tag(), unique_suffix());
        let url = format!("{}/{name}", postgres_url());
        Self { name, url }
    }

    /// Created and migrated with the worker's own migrations.
    pub async fn migrated() -> Self {
        let db = Self::named();
        worker::migrate::migrate(&db.url.clone().into())
            .await
            .expect("the test database is created and migrated");
        db
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        cleanup(async move {
            let url = format!("{}/postgres", postgres_url());
            let Ok((client, connection)) = tokio_postgres::connect(&url, NoTls).await else {
                eprintln!("could not reach PostgreSQL to drop {name}");
                return;
            };
            tokio::spawn(connection);
            let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            if let Err(error) = client.batch_execute(&statement).await {
                eprintln!("could not drop {name}: {error}");
            }
        });
    }
}

/// An `AMQP_PREFIX` this test owns, `test-<tag>-<random>.`; whatever a
/// binary declared under it is deleted when the guard drops.
#[derive(Debug)]
pub struct TestPrefix {
    pub prefix: String,
}

impl TestPrefix {
    pub fn new() -> Self {
        Self {
            prefix: format!("test-{}-{}.", run_tag(), unique_suffix()),
        }
    }
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        let topology = Topology::new(&self.prefix).expect("a valid prefix");
        cleanup(async move {
            let Ok(connection) =
                Connection::connect(&amqp_url(), ConnectionProperties::default()).await
            else {
                eprintln!("could not reach RabbitMQ to delete the test topology");
                return;
            };
            if let Ok(channel) = connection.create_channel().await
                && let Err(error) = topology::delete(&channel, &topology).await
            {
                eprintln!("could not delete the test topology: {error}");
            }
            let _ = connection.close(200, "test done".into()).await;
        });
    }
}

/// Runs `work` to completion on a runtime of its own, from `Drop`, even
/// when the test's runtime is shutting down or the test panicked.
fn cleanup<F>(work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let thread = std::thread::spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(work),
            Err(error) => eprintln!("test cleanup could not start a runtime: {error}"),
        }
    });
    let _ = thread.join();
}

/// In every seeded row's payload: no output of `idvctl` may show it.
pub const PAYLOAD_TEXT: &str = "reason-about-a-person-never-shown";

/// An outbox row for [`seed_outbox`] to write: kind, status, attempts,
/// subject_key, session_id, due_at, done_at, last_error, claim_token (empty
/// text: NULL; a claim comes with a lease of an hour).
pub type Seed = (
    &'static str,
    &'static str,
    i32,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// Writes `rows`, each with a payload holding [`PAYLOAD_TEXT`]; returns
/// their ids in order.
pub async fn seed_outbox(client: &tokio_postgres::Client, rows: &[Seed]) -> Vec<i64> {
    let mut ids = Vec::new();
    for (n, (kind, status, attempts, subject, session, due, done, error, claim)) in
        rows.iter().enumerate()
    {
        let row = client
            .query_one(
                "INSERT INTO outbox (kind, idempotency_key, subject_key, session_id, payload, \
                   status, attempts, due_at, done_at, last_error, claim_token, claimed_until) \
                 VALUES ($1, $2, NULLIF($3, ''), NULLIF($4, ''), \
                   jsonb_build_object('reason', $5::text), $6, $7, $8::text::timestamptz, \
                   NULLIF($9, '')::timestamptz, NULLIF($10, ''), NULLIF($11, ''), \
                   CASE WHEN $11 = '' THEN NULL ELSE now() + interval '1 hour' END) \
                 RETURNING id",
                &[
                    kind,
                    &format!("test-key-{n}"),
                    subject,
                    session,
                    &PAYLOAD_TEXT,
                    status,
                    attempts,
                    due,
                    done,
                    error,
                    claim,
                ],
            )
            .await
            .unwrap();
        ids.push(row.get(0));
    }
    ids
}

/// Every column of every outbox row, by id: to see what a command changed.
pub async fn outbox_snapshot(client: &tokio_postgres::Client) -> Vec<(i64, serde_json::Value)> {
    client
        .query("SELECT id, to_jsonb(o) FROM outbox o ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}
