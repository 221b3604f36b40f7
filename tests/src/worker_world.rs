//! The worker's test world, shared by every worker and pipeline test:
//! settings for an isolated broker prefix and database, a migrated store, a
//! running worker, Identity events to feed it, and what the tests assert
//! with (the record, the queues settled, no message failed).
#![allow(clippy::unwrap_used)] // test support: a failed step should stop the test loudly

use crate::broker::TestBroker;
use crate::database::TestDatabase;
use serde_json::{Value, json};
use shared::config::Env;
use worker::incoming::{self, Incoming};
use worker::settings::Settings;
use worker::store::{EventOutcome, Rules, Store};

/// Settings that configure every action (none of them reachable: for
/// tests of which outbox rows are written, not of their dispatch).
pub const EVERY_SINK: [(&str, &str); 7] = [
    ("OUTCOME_WEBHOOK_URL", "http://127.0.0.1:9/unreachable"),
    ("OUTCOME_WEBHOOK_SECRET", "test-webhook-secret-0123456789"),
    ("SMTP_URL", "smtp://127.0.0.1:9"),
    ("EMAIL_FROM", "identity@example.com"),
    ("STRIPE_API_KEY", "sk_test_unreachable"),
    ("STRIPE_API_BASE", "http://127.0.0.1:9"),
    ("IDV_EXPECTED_MATCHING", "on"),
];

/// Worker settings for `database` (and `broker`, when there is one), plus
/// `extra`. The dispatcher is off (`WORKER_ROLE=consumer`) unless `extra`
/// says otherwise.
pub fn settings(
    broker: Option<&TestBroker>,
    database: &TestDatabase,
    extra: &[(&str, &str)],
) -> Settings {
    let mut pairs: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), database.url.clone()),
        ("WORKER_ADMIN_LISTEN".into(), "127.0.0.1:0".into()),
        ("WORKER_ROLE".into(), "consumer".into()),
    ];
    if let Some(broker) = broker {
        pairs.push(("AMQP_URL".into(), broker.url.clone()));
        pairs.push(("AMQP_PREFIX".into(), broker.prefix.clone()));
    }
    pairs.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Settings::from_env(&Env::from_pairs(pairs)).expect("valid test settings")
}

/// Applies the migrations to `database`.
pub async fn migrate(settings: &Settings) {
    worker::migrate::migrate(&settings.database_url)
        .await
        .expect("migrations apply");
}

/// A migrated store over `database`.
pub async fn store(settings: &Settings) -> Store {
    migrate(settings).await;
    let pool = worker::store::connect_pool(&settings.database_url, 4)
        .await
        .expect("pool");
    Store::new(pool, Rules::from_settings(settings))
}

/// Parses `body` as the worker would.
pub fn incoming(settings: &Settings, body: &[u8]) -> Incoming {
    incoming::parse(body, 0, settings).expect("a valid event")
}

/// Applies each body in its own batch and returns the outcomes.
pub async fn apply_each(
    store: &Store,
    settings: &Settings,
    bodies: &[Vec<u8>],
) -> Vec<EventOutcome> {
    let mut outcomes = Vec::new();
    for body in bodies {
        let event = incoming(settings, body);
        let mut result = store.apply(&[&event]).await.expect("database available");
        outcomes.push(result.remove(0).expect("event applies"));
    }
    outcomes
}

/// Applies all bodies in one batch.
pub async fn apply_batch(
    store: &Store,
    settings: &Settings,
    bodies: &[Vec<u8>],
) -> Vec<EventOutcome> {
    let events: Vec<Incoming> = bodies.iter().map(|b| incoming(settings, b)).collect();
    let refs: Vec<&Incoming> = events.iter().collect();
    store
        .apply(&refs)
        .await
        .expect("database available")
        .into_iter()
        .map(|r| r.expect("event applies"))
        .collect()
}

/// A session object in `status`, for `user`, with an optional failure code.
pub fn session(id: &str, status: &str, user: Option<&str>, code: Option<&str>) -> Value {
    let last_error = code.map(|code| json!({"code": code, "reason": format!("reason for {code}")}));
    json!({
        "id": id,
        "object": "identity.verification_session",
        "status": status,
        "type": "document",
        "client_reference_id": user,
        "metadata": {},
        "last_error": last_error,
        "redaction": null,
    })
}

/// An `identity.verification_session.<kind>` event body.
pub fn event(id: &str, kind: &str, created: i64, session_json: Value) -> Vec<u8> {
    crate::fixtures::session_event(
        id,
        &format!("identity.verification_session.{kind}"),
        created,
        session_json,
    )
}

/// A `requires_input` event with `code` for `session_id` of `user`.
pub fn failed(id: &str, session_id: &str, user: &str, created: i64, code: &str) -> Vec<u8> {
    event(
        id,
        "requires_input",
        created,
        session(session_id, "requires_input", Some(user), Some(code)),
    )
}

/// A unique suffix for ids, so tests sharing a database never collide.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", crate::unique_suffix())
}

/// One column of one row, as JSON text, for assertions.
pub async fn query_json(client: &tokio_postgres::Client, sql: &str, key: &str) -> Value {
    let wrapped = format!("SELECT coalesce(json_agg(t), '[]'::json)::text FROM ({sql}) t");
    let row = client.query_one(&wrapped, &[&key]).await.expect(&wrapped);
    let text: String = row.get(0);
    serde_json::from_str(&text).expect("json")
}

/// How long a stopping worker may take to finish its batches and close.
const STOP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// A worker running in this process.
#[derive(Debug)]
pub struct RunningWorker {
    pub admin_port: u16,
    pub metrics: std::sync::Arc<worker::metrics::Metrics>,
    token: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningWorker {
    /// Builds and starts a worker with `settings`.
    pub async fn start(settings: Settings) -> Self {
        let app = worker::startup::Application::build(settings)
            .await
            .expect("the worker builds");
        let admin_port = app.admin_port();
        let metrics = app.metrics();
        let token = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(app.run_until_stopped(token.clone().cancelled_owned()));
        Self {
            admin_port,
            metrics,
            token,
            handle,
        }
    }

    /// Graceful shutdown, as on SIGTERM.
    pub async fn stop(self) {
        self.request_stop();
        self.join().await;
    }

    /// Asks the worker to stop (as SIGTERM does) without waiting.
    pub fn request_stop(&self) {
        self.token.cancel();
    }

    /// Waits for a worker asked to stop to finish, cleanly.
    pub async fn join(self) {
        tokio::time::timeout(STOP_DEADLINE, self.handle)
            .await
            .unwrap_or_else(|_| panic!("the worker did not stop within {STOP_DEADLINE:?}"))
            .expect("worker task")
            .expect("worker stops cleanly");
    }

    /// The sum of every series of the metric `name` (all label values).
    pub fn metric_sum(&self, name: &str) -> f64 {
        metric_sum(&self.metrics.encode(), name)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", self.admin_port))
            .await
            .expect("admin answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }
}

/// The sum of every series of the metric `name` in Prometheus `text`.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let series_name = series.split('{').next()?;
            (series_name == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Short retry delays, so that a failing message reaches the DLQ within
/// a test's deadline instead of minutes after its assertions ran.
pub const FAST_RETRIES: (&str, &str) = ("WORKER_RETRY_DELAYS", "50ms,50ms,50ms");

/// No message failed: nothing dead-lettered or waiting in a retry queue,
/// and the workers' metrics (taken after they stopped) counted no retry,
/// no dead letter and no message drained from the DLQ. With
/// [`FAST_RETRIES`], a failure would have gone all the way to the DLQ
/// before this runs. A worker drains the DLQ into `dead_letters`: call
/// [`assert_no_dead_letters`] too, which also sees what a worker whose
/// metrics are not here (a killed child) drained.
pub async fn assert_no_message_failed(broker: &TestBroker, metrics: &[String]) {
    let t = &broker.topology;
    broker
        .assert_empty(&t.dead_letter_queue(), "dead letters")
        .await;
    for delay in shared::topology::RETRY_DELAYS {
        let queue = t.retry_queue(delay);
        broker.assert_empty(&queue, "waiting for a retry").await;
    }
    for text in metrics {
        for name in [
            "idv_worker_message_retries_total",
            "idv_worker_dead_letters_total",
            "idv_worker_dead_letters_drained_total",
        ] {
            assert_eq!(metric_sum(text, name), 0.0, "{name}: {text}");
        }
    }
}

/// Nothing in `database`'s `dead_letters` table: no worker drained a
/// dead letter from the DLQ (see [`assert_no_message_failed`]).
pub async fn assert_no_dead_letters(database: &TestDatabase) {
    let drained = crate::dead_letters::rows(&database.client().await).await;
    assert!(drained.is_empty(), "dead letters drained: {drained:?}");
}

/// Publishes `body` to the events exchange as ingest does (routing key =
/// event type, persistent, with ingest's receive-time header), and waits
/// for the broker's confirm.
pub async fn publish(broker: &TestBroker, event_type: &str, body: &[u8]) {
    let properties = shared::envelope::Envelope {
        event_type,
        event_id: None,
        created: None,
        request_id: None,
        received_at_ms: worker::consume::now_ms(),
    }
    .properties();
    broker
        .publish_confirmed(
            &broker.topology.events_exchange(),
            event_type,
            body,
            properties,
        )
        .await;
}

/// The `type` of an event body.
pub fn type_of(body: &[u8]) -> String {
    let value: Value = serde_json::from_slice(body).expect("json");
    value["type"].as_str().expect("type").to_owned()
}

/// Rows in `events`.
pub async fn event_count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .expect("count")
        .get(0)
}

/// The order-independent part of every table the platform reads, as
/// comparable text, for the sessions and events whose ids match `like`.
///
/// Subjects: every row whose key matches `like` (a phantom a batch left
/// with no session shows: the generated keys carry the prefix) and every
/// row the matching sessions belong to (a key such as `"[redacted]"` need
/// not match).
///
/// Events: every column that is a function of the event set. Not the
/// `outcome` of a lifecycle event: `applied` or `stale` says whether it
/// moved its session forward when it arrived, which depends on what arrived
/// before it (an older event after a newer one is stale, before it is
/// applied), so it is compared only as lifecycle against `redacted`; the
/// session's resulting state, which is order-independent, is compared in
/// full. Counts per session (events, counted failures, redactions) too.
pub async fn snapshot(client: &tokio_postgres::Client, like: &str) -> Value {
    json!({
        "subjects": query_json(client,
            "SELECT key, status, failed_attempts, blocked, last_error_code, last_error_created, \
             last_error_event_id, decided_by_session \
             FROM subjects WHERE key LIKE $1 \
             OR key IN (SELECT subject_key FROM sessions WHERE id LIKE $1) \
             ORDER BY key", like).await,
        "sessions": query_json(client,
            "SELECT id, subject_key, subject_key_rank, status, last_error_code, last_error_reason, \
             last_event_id, last_event_created, last_event_rank, verified_at IS NOT NULL AS verified, \
             canceled_at IS NOT NULL AS canceled, redacted_at IS NOT NULL AS redacted \
             FROM sessions WHERE id LIKE $1 ORDER BY id", like).await,
        "events": query_json(client,
            "SELECT id, type, session_id, created, livemode, counted_attempt, blocking_attempt, \
             error_code, outcome = 'redacted' AS redaction, payload IS NULL AS erased \
             FROM events WHERE session_id LIKE $1 ORDER BY id", like).await,
        "counts": query_json(client,
            "SELECT session_id, count(*) AS events, \
             count(*) FILTER (WHERE counted_attempt) AS counted, \
             count(*) FILTER (WHERE outcome = 'redacted') AS redactions \
             FROM events WHERE session_id LIKE $1 GROUP BY session_id ORDER BY session_id",
             like).await,
    })
}

/// The outbox rows whose key matches `like` (a key names its session or
/// its subject): kind, key and payload, the columns that follow from the
/// events alone (the subject a session row was written under may change).
pub async fn outbox(client: &tokio_postgres::Client, like: &str) -> Value {
    query_json(
        client,
        "SELECT kind, idempotency_key, payload \
         FROM outbox WHERE idempotency_key LIKE $1 ORDER BY idempotency_key",
        like,
    )
    .await
}

/// Every table the platform reads: [`snapshot`] and the [`outbox`].
pub async fn record(client: &tokio_postgres::Client, like: &str) -> Value {
    let mut record = snapshot(client, like).await;
    record["outbox"] = outbox(client, like).await;
    record
}

/// A realistic stream for `subjects` people (ids carry `prefix`): failures
/// with several codes, successes, a third failure reaching the limit, a
/// canceled session followed by a second one verified within one second of
/// its `processing` (the rank tie-break).
pub fn scenario(prefix: &str, subjects: usize) -> Vec<Vec<u8>> {
    let codes = [
        "document_expired",
        "selfie_face_mismatch",
        "id_number_mismatch",
    ];
    let mut bodies = Vec::new();
    for s in 0..subjects {
        let user = format!("user_{prefix}{s}");
        let vs = format!("vs_{prefix}{s}a");
        let base = 1_700_000_000 + i64::try_from(s).expect("small") * 10;
        let code = codes[s % codes.len()];
        let mut n = 0;
        let mut id = || {
            n += 1;
            format!("evt_{prefix}{s}_{n}")
        };
        let processing = |vs: &str| session(vs, "processing", Some(&user), None);
        bodies.push(event(&id(), "processing", base, processing(&vs)));
        bodies.push(failed(&id(), &vs, &user, base + 1, code));
        bodies.push(event(&id(), "processing", base + 2, processing(&vs)));
        bodies.push(failed(
            &id(),
            &vs,
            &user,
            base + 3,
            "document_unverified_other",
        ));
        match s % 3 {
            0 => bodies.push(event(
                &id(),
                "verified",
                base + 4,
                session(&vs, "verified", Some(&user), None),
            )),
            1 => bodies.push(failed(&id(), &vs, &user, base + 5, code)),
            _ => {
                bodies.push(event(
                    &id(),
                    "canceled",
                    base + 4,
                    session(&vs, "canceled", Some(&user), None),
                ));
                let second = format!("vs_{prefix}{s}b");
                bodies.push(event(&id(), "processing", base + 6, processing(&second)));
                bodies.push(event(
                    &id(),
                    "verified",
                    base + 6,
                    session(&second, "verified", Some(&user), None),
                ));
            }
        }
    }
    bodies
}

/// The expected subject statuses of [`scenario`].
pub fn scenario_status(s: usize) -> &'static str {
    match s % 3 {
        1 => "manual_review",
        _ => "verified",
    }
}

/// A transaction of the test's holding `key`'s subject row lock (until
/// it rolls back or the client drops).
pub async fn hold_subject_lock(db: &TestDatabase, key: &str) -> tokio_postgres::Client {
    let holder = db.client().await;
    holder.batch_execute("BEGIN").await.unwrap();
    let locked = holder
        .query(
            "SELECT key FROM subjects WHERE key = $1 FOR UPDATE",
            &[&key],
        )
        .await
        .unwrap();
    assert_eq!(locked.len(), 1, "the subject exists and is locked");
    holder
}

/// Backends of `db` waiting for a lock.
pub async fn waiting_on_a_lock(client: &tokio_postgres::Client, db: &TestDatabase) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0)
}

/// Set on a test binary re-run as a child worker process (the kill and
/// restart tests): its `child_worker_process` test then runs a worker.
pub const CHILD: &str = "IDV_WORKER_CHILD";

/// In a test binary re-run with [`CHILD`] set, runs [`worker::entry::main`]
/// (all that `idv-worker`'s `main` does) and exits with its code;
/// otherwise returns at once.
pub fn run_as_child_worker_if_asked() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    std::process::exit(match worker::entry::main(std::iter::empty()) {
        code if code == std::process::ExitCode::SUCCESS => 0,
        _ => 1,
    });
}
