//! `idvctl resync` against a mock Stripe (wiremock), the real PostgreSQL
//! and the real RabbitMQ: the Events API asked as Stripe documents it
//! (Bearer key, pinned `Stripe-Version`, the six `types[]`, `created[gte]`,
//! `limit`, `starting_after` from page 2 on, `delivery_success=false` only
//! with `--only-undelivered`), at most 30 days back; only the events the
//! inbox has not seen published, byte for byte, to the test topology's
//! `idv.events`, and none again once the worker applied them; 401 not
//! retried, 429 retried, 5xx and timeouts retried a bounded number of
//! times; a missing or malformed key a usage error; the key never shown.
//!
//! The command's `run` is called in-process (the tests crate cannot run
//! another package's binary); `exit_code` is `idvctl`'s own rule: a
//! `UsageError` or `ConfigError` is 2, any other error 1.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::fixtures::fixture;
use idv_tests::worker_world;
use lapin::types::AMQPValue;
use shared::config::{ConfigError, Env};
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};
use worker::ctl::resync::Resync;
use worker::ctl::{CtlSettings, UsageError};
use worker::dispatch::stripe::STRIPE_VERSION;
use worker::settings::Settings;
use worker::store::Store;

const API_KEY: &str = "sk_test_idvResync4242secretKEY";
const DEADLINE: Duration = Duration::from_secs(20);

/// The four events of one session, newest first as Stripe lists them.
const SELFIE: &str = "evt_requires_input_selfie_face_mismatch.json";
const VERIFIED: &str = "evt_verified.json";
const EXPIRED: &str = "evt_requires_input_document_expired.json";
const PROCESSING: &str = "evt_processing.json";

const SIX_TYPES: [&str; 6] = [
    "identity.verification_session.created",
    "identity.verification_session.processing",
    "identity.verification_session.requires_input",
    "identity.verification_session.verified",
    "identity.verification_session.canceled",
    "identity.verification_session.redacted",
];

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: Resync,
}

/// A database with the schema, a test topology, a mock Stripe.
struct World {
    db: TestDatabase,
    broker: TestBroker,
    stripe: MockServer,
    ctl: CtlSettings,
    worker: Settings,
    store: Store,
}

impl World {
    async fn new() -> Self {
        let db = TestDatabase::new().await;
        let broker = TestBroker::new().await;
        let stripe = MockServer::start().await;
        let worker = worker_world::settings(Some(&broker), &db, &[]);
        let store = worker_world::store(&worker).await;
        let ctl = CtlSettings::from_env(&Env::from_pairs([
            ("DATABASE_URL", db.url.as_str()),
            ("AMQP_URL", broker.url.as_str()),
            ("AMQP_PREFIX", broker.prefix.as_str()),
        ]))
        .expect("valid idvctl settings");
        Self {
            db,
            broker,
            stripe,
            ctl,
            worker,
            store,
        }
    }

    /// `idvctl resync args…` with the key, the mock's URL, fast retries
    /// and `extra` (which wins).
    async fn resync(&self, args: &[&str], extra: &[(&str, &str)]) -> anyhow::Result<String> {
        let uri = self.stripe.uri();
        let mut pairs: Vec<(&str, &str)> = vec![
            ("STRIPE_API_KEY", API_KEY),
            ("STRIPE_API_BASE", &uri),
            ("STRIPE_API_BACKOFF_MS", "10"),
        ];
        pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        pairs.extend_from_slice(extra);
        let cli = Cli::try_parse_from(std::iter::once("resync").chain(args.iter().copied()))
            .expect("valid arguments");
        let result = worker::ctl::resync::run(&self.ctl, &Env::from_pairs(pairs), &cli.args).await;
        if let Err(error) = &result {
            let shown = format!("{error:#} {error:?}");
            assert!(!shown.contains(API_KEY), "the key is shown: {shown}");
        }
        if let Ok(output) = &result {
            assert!(!output.contains(API_KEY), "the key is shown: {output}");
        }
        result
    }

    /// Serves `pages` (each a list of fixture names, newest first) as
    /// `GET /v1/events`: page 1 without `starting_after`, page n+1 after
    /// the last id of page n.
    async fn serve_pages(&self, pages: &[&[&str]]) {
        let mut after: Option<String> = None;
        for (i, page) in pages.iter().enumerate() {
            let has_more = i + 1 < pages.len();
            let mock = Mock::given(method("GET")).and(path("/v1/events"));
            let mock = match &after {
                None => mock.and(query_param_is_missing("starting_after")),
                Some(id) => mock.and(query_param("starting_after", id.as_str())),
            };
            mock.respond_with(list(page, has_more))
                .mount(&self.stripe)
                .await;
            after = page.last().map(|name| id_of(&fixture(name)));
        }
    }

    async fn requests(&self) -> Vec<Request> {
        self.stripe.received_requests().await.unwrap_or_default()
    }

    /// Applies `bodies` with the worker's own store (as a worker would).
    async fn apply(&self, bodies: &[Vec<u8>]) {
        worker_world::apply_each(&self.store, &self.worker, bodies).await;
    }

    /// Takes exactly `count` messages from `idv.events`, and proves no
    /// more are there (every publish was confirmed before `run` returned).
    async fn take(&self, count: usize) -> Vec<idv_tests::broker::Received> {
        let queue = self.broker.topology.events_queue();
        let mut taken = Vec::new();
        for _ in 0..count {
            taken.push(self.broker.get(&queue, DEADLINE).await);
        }
        let extra = self.broker.try_get(&queue).await;
        assert!(
            extra.is_none(),
            "more than {count} messages were published: {:?}",
            extra.map(|m| m.routing_key)
        );
        taken
    }
}

/// `idvctl`'s exit code for `result`.
fn exit_code(result: &anyhow::Result<String>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(error)
            if error.downcast_ref::<UsageError>().is_some()
                || error.downcast_ref::<ConfigError>().is_some() =>
        {
            2
        }
        Err(_) => 1,
    }
}

fn shown(result: &anyhow::Result<String>) -> String {
    match result {
        Ok(output) => output.clone(),
        Err(error) => format!("{error:#}"),
    }
}

/// A fixture as an element of a list answer: indented as Stripe's pretty
/// printing nests it, so that only a slice (not a re-serialisation) of
/// the answer equals it.
fn element(name: &str) -> String {
    let text = String::from_utf8(fixture(name)).unwrap();
    text.trim_end().replace('\n', "\n    ")
}

/// `GET /v1/events`'s answer holding `names`.
fn list(names: &[&str], has_more: bool) -> ResponseTemplate {
    let data: Vec<String> = names.iter().map(|n| element(n)).collect();
    let body = format!(
        "{{\n  \"object\": \"list\",\n  \"data\": [\n    {}\n  ],\n  \"has_more\": {has_more},\n  \
         \"url\": \"/v1/events\"\n}}",
        data.join(",\n    ")
    );
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/json")
        .set_body_string(body)
}

fn id_of(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["id"].as_str().unwrap().to_owned()
}

fn now_unix() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// Every query parameter of `request`, as (name, value).
fn query(request: &Request) -> Vec<(String, String)> {
    request
        .url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn values(query: &[(String, String)], name: &str) -> Vec<String> {
    query
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

/// `created[gte]` of `request`.
fn created_gte(request: &Request) -> i64 {
    let query = query(request);
    let found = values(&query, "created[gte]");
    assert_eq!(found.len(), 1, "one created[gte]: {query:?}");
    found[0].parse().unwrap()
}

/// The shape every request of resync has.
fn assert_events_request(request: &Request, undelivered: bool) {
    assert_eq!(request.method.as_str(), "GET");
    assert_eq!(request.url.path(), "/v1/events");
    assert_eq!(
        header(request, "authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(header(request, "stripe-version"), Some(STRIPE_VERSION));
    let query = query(request);
    let mut types = values(&query, "types[]");
    types.sort();
    let mut six: Vec<String> = SIX_TYPES.iter().map(|t| (*t).to_owned()).collect();
    six.sort();
    assert_eq!(types, six, "types[] × 6: {query:?}");
    assert_eq!(values(&query, "limit"), ["100"], "{query:?}");
    let delivery = values(&query, "delivery_success");
    if undelivered {
        assert_eq!(delivery, ["false"], "{query:?}");
    } else {
        assert!(delivery.is_empty(), "no delivery_success: {query:?}");
    }
}

#[tokio::test]
async fn publishes_only_unseen_events_byte_for_byte_and_nothing_once_applied() {
    let world = World::new().await;
    world.apply(&[fixture(PROCESSING)]).await;
    world
        .serve_pages(&[&[SELFIE, VERIFIED], &[EXPIRED, PROCESSING]])
        .await;

    let result = world.resync(&["--since", "7d"], &[]).await;
    assert_eq!(exit_code(&result), 0, "{}", shown(&result));
    let output = shown(&result);
    assert_eq!(
        output.lines().last(),
        Some("listed 4, already in the inbox or waiting as dead letters 1, published 3"),
        "{output}"
    );
    assert!(
        output.starts_with("Identity events created at Stripe since "),
        "{output}"
    );
    assert!(!output.contains("30 days"), "not clamped: {output}");

    // The unseen three, oldest of each page first, exactly as listed.
    let taken = world.take(3).await;
    let expected = [VERIFIED, SELFIE, EXPIRED];
    for (message, name) in taken.iter().zip(expected) {
        assert_eq!(
            String::from_utf8_lossy(&message.body),
            element(name),
            "{name}: the bytes Stripe listed"
        );
        assert_eq!(message.routing_key, worker_world::type_of(&fixture(name)));
        let replay = message
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-idv-replay").cloned());
        assert!(
            matches!(&replay, Some(AMQPValue::LongString(s)) if s.to_string() == "resync"),
            "x-idv-replay: {replay:?}"
        );
    }

    let requests = world.requests().await;
    assert_eq!(requests.len(), 2, "two pages");
    let week_ago = now_unix() - 7 * 86_400;
    for request in &requests {
        assert_events_request(request, false);
        let from = created_gte(request);
        assert!((week_ago - 60..=week_ago + 5).contains(&from), "{from}");
    }
    assert!(values(&query(&requests[0]), "starting_after").is_empty());
    assert_eq!(
        values(&query(&requests[1]), "starting_after"),
        [id_of(&fixture(VERIFIED))],
        "page 2 starts after page 1's last (oldest) event"
    );

    // Once the worker applied them, a second run publishes nothing.
    let bodies: Vec<Vec<u8>> = taken.into_iter().map(|m| m.body).collect();
    world.apply(&bodies).await;
    let again = world.resync(&["--since", "7d"], &[]).await;
    assert_eq!(
        shown(&again).lines().last(),
        Some("listed 4, already in the inbox or waiting as dead letters 4, published 0"),
        "{}",
        shown(&again)
    );
    world.take(0).await;
    let client = world.db.client().await;
    let inbox: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(inbox, 4);
}

#[tokio::test]
async fn only_undelivered_asks_for_failed_deliveries_and_dry_run_publishes_nothing() {
    let world = World::new().await;
    world.serve_pages(&[&[VERIFIED, PROCESSING]]).await;

    let result = world
        .resync(&["--since", "3d", "--only-undelivered", "--dry-run"], &[])
        .await;
    assert_eq!(exit_code(&result), 0, "{}", shown(&result));
    let output = shown(&result);
    for name in [VERIFIED, PROCESSING] {
        let id = id_of(&fixture(name));
        assert!(output.lines().any(|l| l.starts_with(&id)), "{id}: {output}");
    }
    assert!(
        output.ends_with(
            "listed 2, already in the inbox or waiting as dead letters 0, would publish 2 (dry run: nothing published)"
        ) && output.contains(", only those Stripe failed to deliver\n"),
        "{output}"
    );

    let json = world
        .resync(
            &["--since", "3d", "--only-undelivered", "--dry-run", "--json"],
            &[],
        )
        .await;
    let json: serde_json::Value = serde_json::from_str(&shown(&json)).unwrap();
    assert_eq!(json["listed"], 2);
    assert_eq!(json["published"], 0);
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["events"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["events"][0]["id"], id_of(&fixture(PROCESSING)));

    world.take(0).await;
    let requests = world.requests().await;
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_events_request(request, true);
    }
}

#[tokio::test]
async fn a_since_beyond_30_days_is_clamped_and_says_so() {
    let world = World::new().await;
    world.serve_pages(&[&[]]).await;

    let result = world.resync(&["--since", "90d"], &[]).await;
    assert_eq!(exit_code(&result), 0, "{}", shown(&result));
    let output = shown(&result);
    assert!(
        output.contains("further back than the 30 days Stripe keeps events"),
        "{output}"
    );
    assert!(
        output
            .ends_with("listed 0, already in the inbox or waiting as dead letters 0, published 0")
    );
    let requests = world.requests().await;
    assert_eq!(requests.len(), 1);
    let floor = now_unix() - 30 * 86_400;
    let from = created_gte(&requests[0]);
    assert!(
        (floor - 60..=floor + 5).contains(&from),
        "created[gte] {from} is 30 days ago ({floor})"
    );
}

#[tokio::test]
async fn a_refused_key_is_exit_1_at_once_without_showing_it() {
    let world = World::new().await;
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .respond_with(ResponseTemplate::new(401).set_body_string(format!(
            r#"{{"error":{{"message":"Invalid API Key provided: {API_KEY}","type":"invalid_request_error"}}}}"#
        )))
        .mount(&world.stripe)
        .await;

    let result = world.resync(&["--since", "1d"], &[]).await;
    assert_eq!(exit_code(&result), 1, "{}", shown(&result));
    assert!(
        shown(&result).contains("Stripe refused STRIPE_API_KEY (401 Unauthorized)"),
        "{}",
        shown(&result)
    );
    assert_eq!(world.requests().await.len(), 1, "a 401 is not retried");
    world.take(0).await;
}

#[tokio::test]
async fn a_rate_limit_is_retried_then_succeeds() {
    let world = World::new().await;
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .respond_with(
            ResponseTemplate::new(429).set_body_string(
                r#"{"error":{"type":"invalid_request_error","code":"rate_limit"}}"#,
            ),
        )
        .up_to_n_times(1)
        .mount(&world.stripe)
        .await;
    world.serve_pages(&[&[VERIFIED]]).await;

    let result = world.resync(&["--since", "1d"], &[]).await;
    assert_eq!(exit_code(&result), 0, "{}", shown(&result));
    assert!(
        shown(&result)
            .ends_with("listed 1, already in the inbox or waiting as dead letters 0, published 1")
    );
    assert_eq!(world.requests().await.len(), 2, "429, then the page");
    world.take(1).await;
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times_then_exit_1() {
    let world = World::new().await;
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .respond_with(
            ResponseTemplate::new(500).set_body_string(
                r#"{"error":{"type":"api_error","message":"Something went wrong"}}"#,
            ),
        )
        .mount(&world.stripe)
        .await;

    let result = world
        .resync(&["--since", "1d"], &[("STRIPE_API_RETRIES", "2")])
        .await;
    assert_eq!(exit_code(&result), 1, "{}", shown(&result));
    let message = shown(&result);
    assert!(
        message.contains("Stripe answered 500 (api_error) to GET /v1/events after 3 tries"),
        "{message}"
    );
    assert_eq!(world.requests().await.len(), 3, "1 try + 2 retries");
    world.take(0).await;
}

#[tokio::test]
async fn a_timeout_is_retried_then_reported() {
    let world = World::new().await;
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(1)))
        .mount(&world.stripe)
        .await;

    let result = world
        .resync(
            &["--since", "1d"],
            &[
                ("STRIPE_API_RETRIES", "1"),
                ("STRIPE_API_TIMEOUT_MS", "200"),
            ],
        )
        .await;
    assert_eq!(exit_code(&result), 1, "{}", shown(&result));
    let message = shown(&result);
    assert!(
        message.contains("timed out") && message.contains("2 tries"),
        "{message}"
    );
    assert_eq!(world.requests().await.len(), 2);
    world.take(0).await;
}

#[tokio::test]
async fn a_missing_or_malformed_key_is_exit_2_naming_it() {
    let world = World::new().await;
    for (value, says) in [
        ("", "STRIPE_API_KEY is not set"),
        ("pk_test_publishable123", "invalid STRIPE_API_KEY"),
        ("sk_test_has space", "invalid STRIPE_API_KEY"),
    ] {
        let result = world
            .resync(&["--since", "1d"], &[("STRIPE_API_KEY", value)])
            .await;
        assert_eq!(exit_code(&result), 2, "{value:?}: {}", shown(&result));
        let message = shown(&result);
        assert!(message.contains(says), "{value:?}: {message}");
        assert!(
            value.is_empty() || !message.contains(value),
            "{value:?} echoed: {message}"
        );
    }
    let bad_base = world
        .resync(&["--since", "1d"], &[("STRIPE_API_BASE", "api.stripe.com")])
        .await;
    assert_eq!(exit_code(&bad_base), 2, "{}", shown(&bad_base));
    assert!(shown(&bad_base).contains("STRIPE_API_BASE"));
    assert!(world.requests().await.is_empty(), "Stripe was not called");
}

#[tokio::test]
async fn an_event_waiting_as_a_dead_letter_is_not_published_again() {
    let world = World::new().await;
    let verified: serde_json::Value = serde_json::from_slice(&fixture(VERIFIED)).unwrap();
    let verified_id = verified["id"].as_str().unwrap().to_owned();
    let client = world.db.client().await;
    client
        .execute(
            "INSERT INTO dead_letters (fingerprint, event_id, event_type, routing_key, reason, \
             kind, attempts, first_failure_at, last_failure_at, payload) \
             VALUES ('\\x01', $1, 'identity.verification_session.verified', \
             'identity.verification_session.verified', 'the database refused the event', \
             'refused', 4, now(), now(), '\\x7b7d')",
            &[&verified_id],
        )
        .await
        .unwrap();
    world.serve_pages(&[&[SELFIE, VERIFIED]]).await;

    // Waiting: a run on a schedule does not dead-letter it once more.
    let result = world.resync(&["--since", "7d"], &[]).await;
    assert_eq!(exit_code(&result), 0, "{}", shown(&result));
    let output = shown(&result);
    assert!(
        output
            .ends_with("listed 2, already in the inbox or waiting as dead letters 1, published 1"),
        "{output}"
    );
    let taken = world.take(1).await;
    assert_eq!(String::from_utf8_lossy(&taken[0].body), element(SELFIE));

    // Replayed (and not in the inbox): it is missing again, so published.
    client
        .execute("UPDATE dead_letters SET replayed_at = now()", &[])
        .await
        .unwrap();
    let result = world.resync(&["--since", "7d"], &[]).await;
    let output = shown(&result);
    assert!(output.contains("published 2"), "{output}");
}
