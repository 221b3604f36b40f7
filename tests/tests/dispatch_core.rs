//! The dispatcher against a real PostgreSQL and RabbitMQ, with a local
//! HTTP server as the platform's webhook: the outcome message on
//! `idv.outcomes`, the signed webhook, retries with backoff, a permanent
//! refusal, a claim whose dispatcher died, and two dispatchers at once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::dispatch_world::*;
use idv_tests::worker_world::*;
use wiremock::matchers::{header_exists, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};
use worker::dispatch::message::OutcomeMessage;

const DEADLINE: Duration = Duration::from_secs(30);
const SECRET: &str = "outcome-webhook-secret-for-tests";

/// A person's failed submission, then a verified one: two outcomes.
fn failed_then_verified(user: &str, vs: &str) -> Vec<Vec<u8>> {
    vec![
        failed(&unique("evt_"), vs, user, 1_700_000_000, "document_expired"),
        event(
            &unique("evt_"),
            "verified",
            1_700_000_100,
            session(vs, "verified", Some(user), None),
        ),
    ]
}

/// A database and a broker of the test's own, and settings that point the
/// outcome webhook at `platform` (plus `extra`), with a migrated store.
struct WebhookWorld {
    /// Kept for its topology, deleted when the test ends.
    _broker: TestBroker,
    db: TestDatabase,
    settings: worker::settings::Settings,
    store: worker::store::Store,
}

impl WebhookWorld {
    async fn new(platform: &MockServer, extra: &[(&str, &str)]) -> Self {
        let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
        let url = platform.uri();
        let mut pairs = vec![
            ("OUTCOME_WEBHOOK_URL", url.as_str()),
            ("OUTCOME_WEBHOOK_SECRET", SECRET),
        ];
        pairs.extend(FAST_DISPATCH);
        // Later pairs win: `extra` may point the webhook elsewhere.
        pairs.extend(extra);
        let settings = settings(Some(&broker), &db, &pairs);
        let store = store(&settings).await;
        Self {
            _broker: broker,
            db,
            settings,
            store,
        }
    }
}

/// The platform's webhook, answering every POST with `response`.
async fn platform_answering(response: ResponseTemplate) -> MockServer {
    let platform = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(response)
        .mount(&platform)
        .await;
    platform
}

/// The webhook requests `server` received, as (idempotency key, message).
async fn webhook_requests(server: &MockServer) -> Vec<(String, OutcomeMessage, Request)> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|request| {
            let key = request
                .headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let message: OutcomeMessage = serde_json::from_slice(&request.body).unwrap();
            (key, message, request)
        })
        .collect()
}

/// Checks `request`'s `IDV-Signature` as a platform would: recompute the
/// HMAC over "<t>.<body>" and compare.
fn assert_signed(request: &Request) {
    let header = request
        .headers
        .get("idv-signature")
        .and_then(|v| v.to_str().ok())
        .expect("an IDV-Signature header");
    let t: i64 = header
        .split(',')
        .find_map(|part| part.strip_prefix("t="))
        .and_then(|t| t.parse().ok())
        .expect("a timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(t.unsigned_abs()) < 300, "a fresh timestamp");
    assert_eq!(
        header,
        shared::signature::sign_header(SECRET.as_bytes(), &request.body, t),
        "the signature is HMAC-SHA256 of \"<t>.<body>\" under the secret"
    );
}

#[tokio::test]
async fn each_outcome_is_published_to_idv_outcomes_once_with_its_key() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let settings = settings(Some(&broker), &db, &FAST_DISPATCH);
    let store = store(&settings).await;
    // The platform's queue, bound to every outcome.
    let queue = broker.outcomes_queue("platform-outcomes", "#").await;
    let (user, vs) = (unique("user_"), unique("vs_"));
    apply_each(&store, &settings, &failed_then_verified(&user, &vs)).await;
    let (dispatcher, metrics) = dispatcher(&settings).await;
    assert_eq!(dispatch_until_idle(&dispatcher, DEADLINE).await, 2);

    let first = broker.get(&queue, DEADLINE).await;
    let second = broker.get(&queue, DEADLINE).await;
    assert!(
        broker.try_get(&queue).await.is_none(),
        "exactly two messages"
    );
    let mut received = [first, second];
    received.sort_by(|a, b| a.routing_key.cmp(&b.routing_key));
    assert_eq!(received[0].routing_key, "requires_input");
    assert_eq!(received[1].routing_key, "verified");
    let failure: OutcomeMessage = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(failure.version, 1);
    assert_eq!(failure.subject.as_deref(), Some(user.as_str()));
    assert_eq!(failure.session.as_deref(), Some(vs.as_str()));
    assert_eq!(failure.outcome, "requires_input");
    assert_eq!(failure.last_error_code.as_deref(), Some("document_expired"));
    assert_eq!(
        failure.reason.as_deref(),
        Some("reason for document_expired")
    );
    assert_eq!((failure.failed_attempts, failure.attempts_left), (1, 2));
    assert_eq!(failure.occurred_at, "2023-11-14T22:13:20Z");
    assert_eq!(
        received[0]
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string()),
        Some(worker::dispatch::outcome_exchange::message_id(
            &failure.idempotency_key
        )),
        "message_id is the SHA-256 of the row's idempotency key"
    );
    assert_eq!(
        received[0].properties.delivery_mode(),
        &Some(2),
        "persistent"
    );
    let states = outbox_states(&db.client().await, "%").await;
    assert!(states.iter().all(|s| s.status == "sent"), "{states:#?}");
    assert!(
        metrics.encode().contains(
            "idv_worker_outbox_actions_total{kind=\"outcome_message\",result=\"sent\"} 2"
        )
    );
    // Nothing is claimed again.
    assert_eq!(dispatch_until_idle(&dispatcher, DEADLINE).await, 0);
}

#[tokio::test]
async fn the_webhook_is_signed_retried_while_down_and_delivered_once_back() {
    let platform = MockServer::start().await;
    // Down for the first two requests, then up.
    Mock::given(method("POST"))
        .and(path("/idv"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&platform)
        .await;
    Mock::given(method("POST"))
        .and(path("/idv"))
        .and(header_exists("idempotency-key"))
        .respond_with(ResponseTemplate::new(204))
        .with_priority(2)
        .mount(&platform)
        .await;
    let url = format!("{}/idv", platform.uri());
    let world = WebhookWorld::new(&platform, &[("OUTCOME_WEBHOOK_URL", url.as_str())]).await;
    let (user, vs) = (unique("user_"), unique("vs_"));
    apply_each(
        &world.store,
        &world.settings,
        &failed_then_verified(&user, &vs)[..1],
    )
    .await;
    let (dispatcher, _) = dispatcher(&world.settings).await;
    let client = world.db.client().await;
    let states = dispatch_until(&dispatcher, &client, "%outcome_webhook", DEADLINE, |s| {
        s.iter().all(|s| s.status == "sent")
    })
    .await;
    assert_eq!(states[0].attempts, 3, "two refusals, then delivered");
    let requests = webhook_requests(&platform).await;
    assert_eq!(requests.len(), 3);
    for (key, message, request) in &requests {
        assert_eq!(
            key, &states[0].idempotency_key,
            "every attempt carries the row's key"
        );
        assert_eq!(&message.idempotency_key, key);
        assert_signed(request);
    }
}

#[tokio::test]
async fn a_permanent_refusal_fails_the_row_at_once_and_the_reason_is_kept() {
    let platform = platform_answering(ResponseTemplate::new(410)).await;
    let world = WebhookWorld::new(&platform, &[]).await;
    let (user, vs) = (unique("user_"), unique("vs_"));
    apply_each(
        &world.store,
        &world.settings,
        &failed_then_verified(&user, &vs)[..1],
    )
    .await;
    let (dispatcher, _) = dispatcher(&world.settings).await;
    dispatch_until_idle(&dispatcher, DEADLINE).await;
    let states = outbox_states(&world.db.client().await, "%outcome_webhook").await;
    assert_eq!(states.len(), 1);
    assert_eq!(
        (states[0].status.as_str(), states[0].attempts),
        ("failed", 1)
    );
    assert!(
        states[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("410"),
        "{states:?}"
    );
    assert_eq!(platform.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_claim_whose_dispatcher_died_is_taken_again_after_its_lease_with_the_same_key() {
    let platform = platform_answering(ResponseTemplate::new(200)).await;
    let world = WebhookWorld::new(&platform, &[]).await;
    let (user, vs) = (unique("user_"), unique("vs_"));
    apply_each(
        &world.store,
        &world.settings,
        &failed_then_verified(&user, &vs)[..1],
    )
    .await;
    let client = world.db.client().await;
    // A dispatcher claims the rows, performs the webhook and dies before
    // marking: its claim stands until the lease runs out.
    let pool = worker::store::connect_pool(&world.settings.database_url, 1)
        .await
        .unwrap();
    let claimed = worker::dispatch::claim::claim(
        &pool.get().await.unwrap(),
        10,
        // Long enough that no stall of the test outlives it; it is moved
        // to the past below rather than waited for.
        Duration::from_secs(600),
        "the-dead-dispatcher",
    )
    .await
    .unwrap();
    assert_eq!(claimed.len(), 2);
    let (dispatcher, _) = dispatcher(&world.settings).await;
    assert_eq!(
        dispatcher.dispatch_once().await.unwrap().claimed,
        0,
        "a row under a live claim is not claimed again"
    );
    // The lease runs out (moved to the past rather than waited for).
    client
        .execute(
            "UPDATE outbox SET claimed_until = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let states = dispatch_until(&dispatcher, &client, "%", DEADLINE, |s| {
        s.iter().all(|s| s.status == "sent")
    })
    .await;
    assert!(states.iter().all(|s| s.attempts == 2), "{states:?}");
    // The dead dispatcher's late mark no longer holds the row.
    let stale = worker::dispatch::claim::mark(
        &pool.get().await.unwrap(),
        claimed[0].id,
        "the-dead-dispatcher",
        &worker::dispatch::claim::Mark::Finished("failed", "late".to_owned()),
    )
    .await
    .unwrap();
    assert!(!stale, "a mark under a lost claim changes nothing");
    assert_eq!(outbox_states(&client, "%").await, states);
}

#[tokio::test]
async fn two_dispatchers_at_once_never_perform_a_row_twice() {
    let platform =
        platform_answering(ResponseTemplate::new(200).set_delay(Duration::from_millis(20))).await;
    let world = WebhookWorld::new(&platform, &[("DISPATCH_BATCH_SIZE", "4")]).await;
    let people = 40;
    let bodies: Vec<Vec<u8>> = (0..people)
        .flat_map(|_| failed_then_verified(&unique("user_"), &unique("vs_")))
        .collect();
    apply_batch(&world.store, &world.settings, &bodies).await;
    let (one, _) = dispatcher(&world.settings).await;
    let (two, _) = dispatcher(&world.settings).await;
    let (a, b) = tokio::join!(
        dispatch_until_idle(&one, DEADLINE),
        dispatch_until_idle(&two, DEADLINE)
    );
    assert_eq!(a + b, people * 4, "every row claimed exactly once");
    assert!(a > 0 && b > 0, "both dispatchers took rows ({a}, {b})");
    let mut keys: Vec<String> = webhook_requests(&platform)
        .await
        .into_iter()
        .map(|(key, ..)| key)
        .collect();
    assert_eq!(keys.len(), people * 2);
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), people * 2, "no webhook sent twice");
    let states = outbox_states(&world.db.client().await, "%").await;
    assert!(states.iter().all(|s| s.status == "sent" && s.attempts == 1));
}

/// A subject key near its 255-byte limit makes idempotency keys longer
/// than an AMQP short string: the message still goes (its `message_id` is
/// the key's hash), and no dispatcher panics on it.
#[tokio::test]
async fn a_subject_key_of_the_longest_kind_is_published_like_any() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let settings = settings(Some(&broker), &db, &FAST_DISPATCH);
    let store = store(&settings).await;
    let queue = broker.outcomes_queue("platform-outcomes", "#").await;
    let user = format!("user_{}", "x".repeat(245));
    let vs = unique("vs_");
    let bodies: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            failed(
                &unique("evt_"),
                &vs,
                &user,
                1_700_000_000 + i,
                "document_expired",
            )
        })
        .collect();
    apply_each(&store, &settings, &bodies).await;
    let (dispatcher, _) = dispatcher(&settings).await;
    dispatch_until_idle(&dispatcher, DEADLINE).await;
    let states = outbox_states(&db.client().await, "%").await;
    assert_eq!(states.len(), 4, "three failures and the limit: {states:#?}");
    assert!(states.iter().all(|s| s.status == "sent"), "{states:#?}");
    let mut routing_keys = Vec::new();
    for _ in 0..4 {
        routing_keys.push(broker.get(&queue, DEADLINE).await.routing_key);
    }
    assert!(routing_keys.contains(&"manual_review".to_owned()));
}
