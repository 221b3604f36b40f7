//! Helpers shared by the `worker_*` tests: settings for an isolated broker
//! prefix and database, a migrated store, and Identity events to feed it.
#![allow(dead_code)] // each test binary uses a different subset
#![allow(clippy::expect_used)] // test support: a failed set-up should stop the test loudly

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use serde_json::{Value, json};
use shared::config::Env;
use worker::incoming::{self, Incoming};
use worker::settings::Settings;
use worker::store::{EventOutcome, Rules, Store};

/// Worker settings for `database` (and `broker`, when there is one), plus `extra`.
pub fn settings(
    broker: Option<&TestBroker>,
    database: &TestDatabase,
    extra: &[(&str, &str)],
) -> Settings {
    let mut pairs: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), database.url.clone()),
        ("WORKER_ADMIN_LISTEN".into(), "127.0.0.1:0".into()),
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
    idv_tests::fixtures::session_event(
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
    format!("{prefix}{}", idv_tests::unique_suffix())
}

/// One column of one row, as JSON text, for assertions.
pub async fn query_json(client: &tokio_postgres::Client, sql: &str, key: &str) -> Value {
    let wrapped = format!("SELECT coalesce(json_agg(t), '[]'::json)::text FROM ({sql}) t");
    let row = client.query_one(&wrapped, &[&key]).await.expect(&wrapped);
    let text: String = row.get(0);
    serde_json::from_str(&text).expect("json")
}
