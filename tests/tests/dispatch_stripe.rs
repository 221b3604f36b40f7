//! The Stripe sinks against a mock Stripe (wiremock) and a real
//! PostgreSQL: sessions canceled at the limit (a processing one when it
//! comes back to requires_input, a verified one never), Stripe's answers
//! read as the issue says (429 and Retry-After, a permanent refusal, a
//! session already canceled), verified outputs compared and a mismatch
//! put in manual review without keeping a verified value, a repeat after a
//! crash carrying the same Idempotency-Key, and two dispatchers never
//! sending one cancel twice.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a failure should stop the test loudly

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use idv_tests::database::TestDatabase;
use idv_tests::dispatch_world::*;
use idv_tests::worker_world::*;
use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};
use worker::dispatch::claim::{self, Mark};
use worker::dispatch::message::OutcomeMessage;
use worker::dispatch::stripe::{STRIPE_VERSION, StripeClient, cancel::CancelSession};
use worker::dispatch::{Dispatcher, Job, Performed, Sink};
use worker::domain::outbox::ActionKind;
use worker::settings::Settings;
use worker::store::Store;

const API_KEY: &str = "sk_test_idv_dispatch_stripe";
const DEADLINE: Duration = Duration::from_secs(20);
const CANCEL_PATH: &str = r"^/v1/identity/verification_sessions/[A-Za-z0-9_]+/cancel$";

/// Records the outcome messages the platform is told (instead of
/// publishing them to RabbitMQ): (idempotency key, outcome, session).
#[derive(Debug, Default)]
struct Told(Mutex<Vec<(String, String, Option<String>)>>);

impl Sink for Told {
    fn kinds(&self) -> &'static [ActionKind] {
        &[ActionKind::OutcomeMessage]
    }

    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed> {
        async move {
            self.0.lock().unwrap().push((
                job.message.idempotency_key.clone(),
                job.message.outcome.clone(),
                job.message.session.clone(),
            ));
            Performed::Done
        }
        .boxed()
    }
}

struct World {
    /// Dropped with the world.
    _db: TestDatabase,
    settings: Settings,
    store: Store,
    client: tokio_postgres::Client,
    stripe: MockServer,
    told: Arc<Told>,
}

impl World {
    async fn new(extra: &[(&str, &str)]) -> Self {
        let db = TestDatabase::new().await;
        let stripe = MockServer::start().await;
        let uri = stripe.uri();
        let mut pairs: Vec<(&str, &str)> =
            vec![("STRIPE_API_KEY", API_KEY), ("STRIPE_API_BASE", &uri)];
        pairs.extend(FAST_DISPATCH);
        pairs.extend(extra);
        let settings = settings(None, &db, &pairs);
        let store = store(&settings).await;
        let client = db.client().await;
        Self {
            _db: db,
            settings,
            store,
            client,
            stripe,
            told: Arc::new(Told::default()),
        }
    }

    /// A dispatcher of this world's (its own pool), telling the platform
    /// through [`Told`].
    async fn dispatcher(&self) -> Dispatcher {
        let (dispatcher, _) = dispatcher(&self.settings).await;
        dispatcher.with_sink(Arc::clone(&self.told) as Arc<dyn Sink>)
    }

    async fn apply(&self, bodies: &[Vec<u8>]) {
        apply_each(&self.store, &self.settings, bodies).await;
    }

    /// Stripe answers every cancel with the canceled session.
    async fn cancels_succeed(&self) {
        Mock::given(method("POST"))
            .and(path_regex(CANCEL_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "object": "identity.verification_session", "status": "canceled"})))
            .mount(&self.stripe)
            .await;
    }

    /// The requests Stripe received whose path ends with `suffix`.
    async fn requests(&self, suffix: &str) -> Vec<Request> {
        self.stripe
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path().ends_with(suffix))
            .collect()
    }

    /// `status`, whether it waits (due no sooner than a minute from now),
    /// attempts and `last_error` of the row `key`.
    async fn row(&self, key: &str) -> (String, bool, i32, Option<String>) {
        let row = self
            .client
            .query_one(
                "SELECT status, due_at > now() + interval '1 minute', attempts, last_error \
                 FROM outbox \
                 WHERE idempotency_key = $1",
                &[&key],
            )
            .await
            .unwrap_or_else(|e| panic!("row {key}: {e}"));
        (row.get(0), row.get(1), row.get(2), row.get(3))
    }
}

/// `count` failed submissions of `session` of `user` (the default limit
/// is 3), from `created` on.
fn failures(prefix: &str, session: &str, user: &str, created: i64, count: i64) -> Vec<Vec<u8>> {
    (0..count)
        .map(|n| {
            failed(
                &format!("evt_{prefix}_{session}_{n}"),
                session,
                user,
                created + n,
                "document_unverified_other",
            )
        })
        .collect()
}

fn header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

/// What every request to Stripe carries: the key as a Bearer token, the
/// pinned version; a POST its row's key (for a cancel, followed by the
/// session's last event: `<row key>:<event id>`) and a form body, a GET no
/// key.
fn assert_shape(request: &Request, idempotency_key: Option<&str>) {
    let bearer = format!("Bearer {API_KEY}");
    assert_eq!(header(request, "authorization"), Some(bearer.as_str()));
    assert_eq!(header(request, "stripe-version"), Some(STRIPE_VERSION));
    match (header(request, "idempotency-key"), idempotency_key) {
        (Some(sent), Some(row)) => assert!(
            sent == row || sent.starts_with(&format!("{row}:evt_")),
            "{sent} is the row's key {row}"
        ),
        (sent, row) => assert_eq!(sent, row),
    }
    if request.method.as_str() == "POST" {
        assert_eq!(
            header(request, "content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert!(request.body.is_empty(), "a cancel has no parameters");
    } else {
        assert_eq!(request.method.as_str(), "GET");
        assert!(request.body.is_empty());
    }
}

fn cancel_key(session: &str) -> String {
    format!("{session}:cancel_stripe_session")
}

#[tokio::test]
async fn the_limit_cancels_every_open_session_and_a_processing_one_when_it_can() {
    let world = World::new(&[]).await;
    world.cancels_succeed().await;
    let user = unique("user_lim");
    let (open, busy, done) = (unique("vs_open"), unique("vs_busy"), unique("vs_done"));
    let t = 1_700_000_000;
    let mut bodies = vec![
        event(
            &unique("evt_v"),
            "verified",
            t,
            session(&done, "verified", Some(&user), None),
        ),
        event(
            &unique("evt_p"),
            "processing",
            t + 1,
            session(&busy, "processing", Some(&user), None),
        ),
    ];
    bodies.extend(failures("lim", &open, &user, t + 2, 3));
    world.apply(&bodies).await;

    let dispatcher = world.dispatcher().await;
    dispatch_until_idle(&dispatcher, DEADLINE).await;
    assert_eq!(world.row(&cancel_key(&open)).await.0, "sent");
    let (status, _, _, why) = world.row(&cancel_key(&done)).await;
    assert_eq!(status, "superseded", "a verified session is not canceled");
    assert!(why.unwrap().contains("verified"));
    let (status, waits, attempts, _) = world.row(&cancel_key(&busy)).await;
    assert_eq!(
        (status.as_str(), waits, attempts),
        ("pending", true, 0),
        "the processing session's cancel waits, and the wait is no attempt"
    );
    let cancels = world.requests("/cancel").await;
    assert_eq!(cancels.len(), 1, "only the open session is canceled now");
    assert_eq!(
        cancels[0].url.path(),
        format!("/v1/identity/verification_sessions/{open}/cancel")
    );
    assert_shape(&cancels[0], Some(&cancel_key(&open)));
    // The person verified in another session (verified wins over the
    // limit): the platform is not told of a manual review.
    let told = world.told.0.lock().unwrap().clone();
    let limit_told = format!("{user}:manual_review:outcome_message");
    assert!(!told.iter().any(|(key, ..)| *key == limit_told), "{told:?}");
    assert_eq!(world.row(&limit_told).await.0, "superseded");

    // Back to requires_input (no failure this time): the cancel is due again.
    world
        .apply(&[event(
            &unique("evt_r"),
            "requires_input",
            t + 10,
            session(&busy, "requires_input", Some(&user), None),
        )])
        .await;
    let busy_key = cancel_key(&busy);
    dispatch_until(&dispatcher, &world.client, &busy_key, DEADLINE, |rows| {
        rows.iter().all(|r| r.status == "sent")
    })
    .await;
    let cancels = world.requests("/cancel").await;
    assert_eq!(cancels.len(), 2);
    assert_eq!(
        cancels[1].url.path(),
        format!("/v1/identity/verification_sessions/{busy}/cancel")
    );
    assert_shape(&cancels[1], Some(&busy_key));
}

/// A subject at its limit with one session: the session's cancel key.
async fn one_at_the_limit(world: &World, tag: &str) -> (String, String) {
    let user = unique(&format!("user_{tag}"));
    let vs = unique(&format!("vs_{tag}"));
    world
        .apply(&failures(tag, &vs, &user, 1_700_000_000, 3))
        .await;
    (vs.clone(), cancel_key(&vs))
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after_then_done() {
    let world = World::new(&[]).await;
    Mock::given(method("POST"))
        .and(path_regex(CANCEL_PATH))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "2"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&world.stripe)
        .await;
    world.cancels_succeed().await;
    let (_, key) = one_at_the_limit(&world, "busy").await;

    let dispatcher = world.dispatcher().await;
    // The database's clock before the 429 was marked: the row is due 2 s
    // after the mark, so at least 2 s after this, however slow the steps.
    let before: f64 = world
        .client
        .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
        .await
        .unwrap()
        .get(0);
    let started = Instant::now();
    dispatch_until_idle(&dispatcher, DEADLINE).await;
    let (status, _, attempts, why) = world.row(&key).await;
    assert_eq!((status.as_str(), attempts), ("pending", 1));
    assert!(why.unwrap().contains("429"));
    let due: f64 = world
        .client
        .query_one(
            "SELECT extract(epoch FROM due_at)::float8 FROM outbox WHERE idempotency_key = $1",
            &[&key],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        due - before >= 2.0,
        "due again no sooner than Retry-After says ({}s after the dispatch began)",
        due - before
    );

    dispatch_until(&dispatcher, &world.client, &key, DEADLINE, |rows| {
        rows.iter().all(|r| r.status == "sent")
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    let cancels = world.requests("/cancel").await;
    assert_eq!(cancels.len(), 2);
    for request in &cancels {
        assert_shape(request, Some(&key));
    }
    assert_eq!(world.row(&key).await.2, 2);
}

#[tokio::test]
async fn a_permanent_refusal_fails_the_row_naming_only_status_type_and_code() {
    let world = World::new(&[]).await;
    let (gone, gone_key) = one_at_the_limit(&world, "gone").await;
    let (odd, odd_key) = one_at_the_limit(&world, "odd").await;
    let refusal = |code: &str| {
        json!({"error": {"type": "invalid_request_error", "code": code,
            "message": "Jenny Rosen cannot do that", "param": "session"}})
    };
    Mock::given(method("POST"))
        .and(path(format!(
            "/v1/identity/verification_sessions/{gone}/cancel"
        )))
        .respond_with(ResponseTemplate::new(404).set_body_json(refusal("resource_missing")))
        .mount(&world.stripe)
        .await;
    // Refused though the session is requires_input at Stripe: not ours to fix.
    Mock::given(method("POST"))
        .and(path(format!(
            "/v1/identity/verification_sessions/{odd}/cancel"
        )))
        .respond_with(ResponseTemplate::new(400).set_body_json(refusal("parameter_unknown")))
        .mount(&world.stripe)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/identity/verification_sessions/{odd}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "requires_input"})))
        .mount(&world.stripe)
        .await;

    let dispatcher = world.dispatcher().await;
    dispatch_until_idle(&dispatcher, DEADLINE).await;
    let (status, _, attempts, why) = world.row(&gone_key).await;
    assert_eq!((status.as_str(), attempts), ("failed", 1));
    assert_eq!(
        why.as_deref(),
        Some("Stripe's cancel refused it: HTTP 404 (invalid_request_error, resource_missing)")
    );
    let (status, _, attempts, why) = world.row(&odd_key).await;
    assert_eq!((status.as_str(), attempts), ("failed", 1));
    let why = why.unwrap();
    assert!(
        why.contains("400") && why.contains("parameter_unknown"),
        "{why}"
    );
    assert!(!why.contains("Jenny"), "{why}");
    let cancels = world.requests("/cancel").await;
    assert_eq!(cancels.len(), 2, "no retry");
    for request in &cancels {
        assert_shape(request, header(request, "idempotency-key"));
    }
}

#[tokio::test]
async fn a_session_already_canceled_at_stripe_is_done_and_a_processing_one_retried() {
    let world = World::new(&[]).await;
    let (canceled, canceled_key) = one_at_the_limit(&world, "gone").await;
    let (busy, busy_key) = one_at_the_limit(&world, "busy").await;
    let not_cancelable = json!({"error": {"type": "invalid_request_error",
        "code": "session_not_cancelable",
        "message": "This VerificationSession cannot be canceled in its status."}});
    Mock::given(method("POST"))
        .and(path_regex(CANCEL_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(not_cancelable))
        .mount(&world.stripe)
        .await;
    for (vs, status) in [(&canceled, "canceled"), (&busy, "processing")] {
        Mock::given(method("GET"))
            .and(path(format!("/v1/identity/verification_sessions/{vs}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": vs, "object": "identity.verification_session", "status": status})))
            .mount(&world.stripe)
            .await;
    }

    let dispatcher = world.dispatcher().await;
    dispatch_until_idle(&dispatcher, DEADLINE).await;
    assert_eq!(world.row(&canceled_key).await.0, "sent");
    let (status, _, _, why) = world.row(&busy_key).await;
    assert_eq!(status, "pending", "processing at Stripe: tried again");
    assert!(why.unwrap().contains("processing"));
    let lookups = world.requests(&canceled).await;
    assert_eq!(lookups.len(), 1, "the status is asked for");
    assert_shape(&lookups[0], None);
}

async fn expect(world: &World, user: &str, first: &str, last: &str, dob: &str) {
    world
        .client
        .execute(
            "INSERT INTO expected_identity (subject_key, first_name, last_name, dob) \
             VALUES ($1, $2, $3, $4::text::date)",
            &[&user, &first, &last, &dob],
        )
        .await
        .unwrap();
}

async fn verified_outputs(world: &World, vs: &str, first: &str, last: &str, dob: [i64; 3]) {
    Mock::given(method("GET"))
        .and(path(format!("/v1/identity/verification_sessions/{vs}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
        "id": vs, "object": "identity.verification_session", "status": "verified",
        "redaction": null,
        "verified_outputs": {
            "first_name": first, "last_name": last,
            "dob": {"year": dob[0], "month": dob[1], "day": dob[2]},
            "address": null, "email": null, "phone": null, "id_number_type": null,
        }})))
        .mount(&world.stripe)
        .await;
}

#[tokio::test]
async fn verified_outputs_that_differ_put_the_subject_in_manual_review_keeping_no_value() {
    let world = World::new(&[("IDV_EXPECTED_MATCHING", "on")]).await;
    world.cancels_succeed().await;
    let t = 1_700_000_000;
    let verified = |user: &str, vs: &str, created: i64| {
        event(
            &unique("evt_v"),
            "verified",
            created,
            session(vs, "verified", Some(user), None),
        )
    };
    // Same person, written otherwise: a match.
    let (same, same_vs) = (unique("user_same"), unique("vs_same"));
    expect(&world, &same, "José María", "Müller", "1990-12-01").await;
    verified_outputs(&world, &same_vs, "JOSE  maria", "muller", [1990, 12, 1]).await;
    // The names match, the date of birth does not; a second session open.
    let (other, other_vs, open_vs) = (unique("user_other"), unique("vs_other"), unique("vs_open"));
    expect(&world, &other, "Zoë", "Ångström", "1985-03-04").await;
    verified_outputs(&world, &other_vs, "ZOE", "ANGSTROM", [1985, 3, 5]).await;
    // Nothing expected: not even asked.
    let (nobody, nobody_vs) = (unique("user_nobody"), unique("vs_nobody"));
    world
        .apply(&[
            event(
                &unique("evt_o"),
                "requires_input",
                t,
                session(&open_vs, "requires_input", Some(&other), None),
            ),
            verified(&same, &same_vs, t),
            verified(&other, &other_vs, t + 1),
            verified(&nobody, &nobody_vs, t + 2),
        ])
        .await;

    let dispatcher = world.dispatcher().await;
    dispatch_until_idle(&dispatcher, DEADLINE).await;

    let compare = |vs: &str| format!("{vs}:verified:compare_verified_outputs");
    for vs in [&same_vs, &other_vs] {
        assert_eq!(world.row(&compare(vs)).await.0, "sent");
        let lookups = world.requests(vs).await;
        assert_eq!(lookups.len(), 1);
        assert_shape(&lookups[0], None);
        let expand: Vec<String> = lookups[0]
            .url
            .query_pairs()
            .filter(|(k, _)| k == "expand[]")
            .map(|(_, v)| v.into_owned())
            .collect();
        assert_eq!(expand, ["verified_outputs", "verified_outputs.dob"]);
    }
    let (status, _, _, why) = world.row(&compare(&nobody_vs)).await;
    assert_eq!(
        (status.as_str(), why.as_deref()),
        ("skipped", Some("nothing expected to compare with"))
    );
    assert!(world.requests(&nobody_vs).await.is_empty());

    let checks = query_json(
        &world.client,
        "SELECT session_id, subject_key, matched, differing FROM verified_output_checks \
         WHERE subject_key = ANY(string_to_array($1, ',')) ORDER BY matched",
        &format!("{same},{other}"),
    )
    .await;
    assert_eq!(
        checks,
        json!([
            {"session_id": other_vs, "subject_key": other, "matched": false, "differing": ["dob"]},
            {"session_id": same_vs, "subject_key": same, "matched": true, "differing": []},
        ])
    );
    let subjects = query_json(
        &world.client,
        "SELECT key, status, decided_by_session, mismatch_session FROM subjects \
         WHERE key = ANY(string_to_array($1, ',')) ORDER BY key",
        &format!("{same},{other}"),
    )
    .await;
    let by_key: HashMap<String, serde_json::Value> = subjects
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["key"].as_str().unwrap().to_owned(), s.clone()))
        .collect();
    assert_eq!(by_key[&same]["status"], "verified");
    assert_eq!(by_key[&same]["mismatch_session"], json!(null));
    assert_eq!(
        by_key[&other],
        json!({"key": other, "status": "manual_review", "decided_by_session": other_vs,
               "mismatch_session": other_vs})
    );

    // The platform was told, the open session canceled, the verified one
    // left alone.
    let told = world.told.0.lock().unwrap().clone();
    assert!(
        told.contains(&(
            format!("{other}:manual_review:outcome_message"),
            "manual_review".to_owned(),
            Some(other_vs.clone())
        )),
        "{told:?}"
    );
    assert!(
        !told
            .iter()
            .any(|t| t.0.starts_with(&format!("{same}:manual_review")))
    );
    assert_eq!(world.row(&cancel_key(&open_vs)).await.0, "sent");
    assert_eq!(world.row(&cancel_key(&other_vs)).await.0, "superseded");

    // No verified value is kept anywhere the pipeline writes: the names,
    // and the years as numbers standing alone, whatever surrounds them
    // (JSON, quoted, ISO or other dates, a Debug print). Not `…1985…`
    // inside a longer run: ids carry random hex and rows carry timestamps
    // with microseconds, and one of them held `1985` once.
    for table in [
        "verified_output_checks",
        "outbox",
        "subjects",
        "sessions",
        "events",
    ] {
        let found: Vec<String> = world
            .client
            .query(
                &format!(
                    "SELECT t::text FROM {table} t WHERE t::text ILIKE '%zoe%' \
                     OR t::text ILIKE '%angstrom%' OR t::text ILIKE '%jose%' \
                     OR t::text ILIKE '%muller%' \
                     OR t::text ~ '(^|[^[:alnum:].])(1985|1990)([^[:alnum:]]|$)'"
                ),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert!(found.is_empty(), "a verified value in {table}: {found:?}");
    }

    // The worker's recount keeps the subject in manual review, and its
    // limit rows, whatever comes next.
    world
        .apply(&[event(
            &unique("evt_p"),
            "processing",
            t + 5,
            session(&open_vs, "processing", Some(&other), None),
        )])
        .await;
    let subject = query_json(
        &world.client,
        "SELECT status, decided_by_session FROM subjects WHERE key = $1",
        &other,
    )
    .await;
    assert_eq!(
        subject,
        json!([{"status": "manual_review", "decided_by_session": other_vs}])
    );
    assert_eq!(
        world
            .row(&format!("{other}:manual_review:outcome_message"))
            .await
            .0,
        "sent"
    );
}

#[tokio::test]
async fn a_crash_between_perform_and_mark_repeats_once_with_the_same_key() {
    let world = World::new(&[]).await;
    world.cancels_succeed().await;
    let (_, key) = one_at_the_limit(&world, "crash").await;

    // A dispatcher claims the row, performs it, and dies before marking.
    let pool = worker::store::connect_pool(&world.settings.database_url, 2)
        .await
        .unwrap();
    let client = pool.get().await.unwrap();
    let token = "the-dead-dispatchers-claim";
    let rows = claim::claim(&client, 100, Duration::from_secs(60), token)
        .await
        .unwrap();
    let row = rows
        .into_iter()
        .find(|r| r.idempotency_key == key)
        .expect("the cancel is claimed");
    let mut facts = claim::facts(&client, &[row.id], 3).await.unwrap();
    let facts = facts.remove(&row.id).unwrap();
    let stripe = world.settings.dispatch.stripe.clone().unwrap();
    let sink = CancelSession::new(StripeClient::new(stripe, reqwest::Client::new()));
    let job = Job {
        kind: ActionKind::CancelStripeSession,
        message: OutcomeMessage::new(&row, &facts, 3),
        row: row.clone(),
        facts,
    };
    assert_eq!(sink.perform(&job).await, Performed::Done);
    // Its lease runs out.
    world
        .client
        .execute(
            "UPDATE outbox SET claimed_until = now() - interval '1 second' \
             WHERE claim_token = $1",
            &[&token],
        )
        .await
        .unwrap();

    let dispatcher = world.dispatcher().await;
    dispatch_until(&dispatcher, &world.client, &key, DEADLINE, |rows| {
        rows.iter().all(|r| r.status == "sent")
    })
    .await;
    let cancels = world.requests("/cancel").await;
    assert_eq!(cancels.len(), 2, "performed again once, no more");
    for request in &cancels {
        assert_shape(request, Some(&key));
    }
    assert_eq!(world.row(&key).await.2, 2);
    // The dead dispatcher's claim no longer marks anything.
    assert!(
        !claim::mark(&client, row.id, token, &Mark::Sent)
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_dispatchers_never_send_one_cancel_twice() {
    let world = World::new(&[("DISPATCH_BATCH_SIZE", "3")]).await;
    Mock::given(method("POST"))
        .and(path_regex(CANCEL_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"status": "canceled"}))
                .set_delay(Duration::from_millis(15)),
        )
        .mount(&world.stripe)
        .await;
    let tag = unique("many");
    let sessions: Vec<String> = (0..30).map(|n| format!("vs_{tag}_{n}")).collect();
    let mut bodies = Vec::new();
    for (n, vs) in sessions.iter().enumerate() {
        let user = format!("user_{tag}_{n}");
        bodies.extend(failures(&tag, vs, &user, 1_700_000_000, 3));
    }
    apply_batch(&world.store, &world.settings, &bodies).await;

    let (one, two) = (world.dispatcher().await, world.dispatcher().await);
    let run = |d: Dispatcher| tokio::spawn(async move { dispatch_until_idle(&d, DEADLINE).await });
    let (a, b) = tokio::join!(run(one), run(two));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a > 0 && b > 0, "both dispatchers took part ({a}, {b})");

    let states = outbox_states(&world.client, &format!("vs_{tag}%:cancel_stripe_session")).await;
    assert_eq!(states.len(), sessions.len());
    assert!(
        states.iter().all(|s| s.status == "sent" && s.attempts == 1),
        "{states:#?}"
    );
    let mut per_session: HashMap<String, usize> = HashMap::new();
    for request in world.requests("/cancel").await {
        assert_shape(&request, header(&request, "idempotency-key"));
        *per_session
            .entry(request.url.path().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_session.len(), sessions.len());
    assert!(
        per_session.values().all(|n| *n == 1),
        "a cancel sent twice: {per_session:?}"
    );
}

/// A person told of a manual review, who then verified in another session
/// whose outputs do not match: the mismatch is news, and the platform is
/// told of the manual review again, under a key of its own.
#[tokio::test]
async fn a_mismatch_after_a_manual_review_was_told_is_told_again() {
    let world = World::new(&[("IDV_EXPECTED_MATCHING", "on")]).await;
    world.cancels_succeed().await;
    let (user, failed_vs, verified_vs) = (unique("user_"), unique("vs_f"), unique("vs_v"));
    world
        .apply(&failures("mm", &failed_vs, &user, 1_700_000_000, 3))
        .await;
    let dispatcher = world.dispatcher().await;
    dispatch_until_idle(&dispatcher, DEADLINE).await;
    let limit_told = format!("{user}:manual_review:outcome_message");
    assert_eq!(world.row(&limit_told).await.0, "sent");

    expect(&world, &user, "Ada", "Lovelace", "1815-12-10").await;
    verified_outputs(&world, &verified_vs, "Ada", "Lovelace", [1815, 12, 11]).await;
    world
        .apply(&[event(
            &unique("evt_v"),
            "verified",
            1_700_000_100,
            session(&verified_vs, "verified", Some(&user), None),
        )])
        .await;
    dispatch_until_idle(&dispatcher, DEADLINE).await;
    let again = format!("{user}:mismatch:{verified_vs}:outcome_message");
    assert_eq!(world.row(&again).await.0, "sent");
    let told = world.told.0.lock().unwrap().clone();
    let reviews: Vec<&String> = told
        .iter()
        .filter(|(_, outcome, _)| outcome == "manual_review")
        .map(|(key, ..)| key)
        .collect();
    assert_eq!(reviews, [&limit_told, &again], "{told:?}");
}

/// The race between a dispatcher judging a cancel "wait" (its session
/// processing) and the worker applying the event that brings the session
/// back to `requires_input` in between: the wait recorded afterwards makes
/// the row due at once, not in five minutes.
#[tokio::test]
async fn a_cancel_re_armed_while_it_was_judged_is_due_at_once() {
    let world = World::new(&[]).await;
    let (user, open, busy) = (unique("user_"), unique("vs_open"), unique("vs_busy"));
    let t = 1_700_000_000;
    let mut bodies = vec![event(
        &unique("evt_p"),
        "processing",
        t,
        session(&busy, "processing", Some(&user), None),
    )];
    bodies.extend(failures("race", &open, &user, t + 1, 3));
    world.apply(&bodies).await;
    let key = cancel_key(&busy);
    let pool = worker::store::connect_pool(&world.settings.database_url, 1)
        .await
        .unwrap();
    let client = pool.get().await.unwrap();
    // A dispatcher claims every due row, reads the facts (busy: processing)…
    let claimed = claim::claim(&client, 100, Duration::from_secs(60), "judging")
        .await
        .unwrap();
    let row = claimed
        .iter()
        .find(|r| r.idempotency_key == key)
        .expect("the busy session's cancel is claimed");
    // …the worker applies the event that brings the session back…
    world
        .apply(&[event(
            &unique("evt_r"),
            "requires_input",
            t + 10,
            session(&busy, "requires_input", Some(&user), None),
        )])
        .await;
    // …and the dispatcher records the wait it judged on the older state.
    let wait = Mark::Wait("processing".to_owned(), claim::WAIT_RECHECK);
    assert!(
        claim::mark(&client, row.id, "judging", &wait)
            .await
            .unwrap()
    );
    let due_now: bool = world
        .client
        .query_one(
            "SELECT due_at <= now() FROM outbox WHERE idempotency_key = $1",
            &[&key],
        )
        .await
        .unwrap()
        .get(0);
    assert!(due_now, "the re-armed cancel is due at once");
}
