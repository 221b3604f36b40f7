//! Rehearsal, as an operator runs it: `idvctl send-test-event` makes
//! events a Stripe verifier and the worker's parser take for Stripe's own,
//! and `idvctl scenario` sends whole stories through a real ingest to a
//! real worker and ends in the state the rules predict.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::collections::BTreeSet;
use std::time::Duration;

use idv_tests::ctl_binary::{code, idvctl, stderr, stdout};
use idv_tests::fixtures::now_unix;
use idv_tests::rehearsal::{Record, RehearsalWorld, keys_of};
use idv_tests::wait::eventually;
use serde_json::Value;
use shared::config::Env;
use shared::signature::{DEFAULT_TOLERANCE, SignatureVerifier};
use shared::{EventEnvelope, WebhookSecret};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};
use worker::incoming::{self, EventKind};
use worker::transition::Stage;

/// The secret `send-test-event` signs with in these tests: the first of
/// the variable's list (the second must not be the one used).
const SECRET: &str = "whsec_rehearsal_first";
const SECRETS: &str = "whsec_rehearsal_first,whsec_rehearsal_second";

/// How long a condition may take to hold.
const DEADLINE: Duration = Duration::from_secs(30);

// ----- send-test-event -----

/// A local endpoint that answers `status` with `body` and keeps what it got.
async fn endpoint(status: u16, body: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/webhook"))
        .respond_with(ResponseTemplate::new(status).set_body_string(body))
        .mount(&server)
        .await;
    server
}

async fn received(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap_or_default()
}

/// One `send-test-event` case: the command's flags and what the event
/// must say.
struct Case {
    args: Vec<&'static str>,
    event_type: &'static str,
    /// The fixture of the same type (a created event has none of its own:
    /// a processing one has its shape).
    fixture: &'static str,
    kind: EventKind,
    /// `last_error.code` the worker reads.
    code: Option<&'static str>,
    /// The subject the worker files it under.
    subject: Option<&'static str>,
    session: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    let case = |args: Vec<&'static str>, kind: &'static str, fixture, stage: Option<Stage>| Case {
        args,
        event_type: match kind {
            "created" => "identity.verification_session.created",
            "processing" => "identity.verification_session.processing",
            "requires_input" => "identity.verification_session.requires_input",
            "verified" => "identity.verification_session.verified",
            "canceled" => "identity.verification_session.canceled",
            _ => "identity.verification_session.redacted",
        },
        fixture,
        kind: stage.map_or(EventKind::Redacted, EventKind::Lifecycle),
        code: None,
        subject: Some("user_rehearsal_42"),
        session: None,
    };
    let subject = ["--subject", "user_rehearsal_42"];
    let with = |kind: &'static str, extra: &[&'static str]| {
        let mut args = vec![kind];
        args.extend(subject);
        args.extend(extra);
        args
    };
    vec![
        case(
            with("created", &[]),
            "created",
            "evt_processing.json",
            Some(Stage::Created),
        ),
        case(
            with("processing", &[]),
            "processing",
            "evt_processing.json",
            Some(Stage::Processing),
        ),
        Case {
            code: Some("document_unverified_other"),
            ..case(
                with("requires_input", &[]),
                "requires_input",
                "evt_requires_input_document_expired.json",
                Some(Stage::RequiresInput),
            )
        },
        Case {
            code: Some("selfie_face_mismatch"),
            session: Some("vs_rehearsalSession0000001"),
            ..case(
                with(
                    "requires_input",
                    &[
                        "--code",
                        "selfie_face_mismatch",
                        "--session",
                        "vs_rehearsalSession0000001",
                    ],
                ),
                "requires_input",
                "evt_requires_input_selfie_face_mismatch.json",
                Some(Stage::RequiresInput),
            )
        },
        Case {
            code: Some("a_code_stripe_adds_next_year"),
            ..case(
                with(
                    "requires_input",
                    &["--code", "a_code_stripe_adds_next_year"],
                ),
                "requires_input",
                "evt_requires_input_document_expired.json",
                Some(Stage::RequiresInput),
            )
        },
        case(
            with("verified", &[]),
            "verified",
            "evt_verified.json",
            Some(Stage::Verified),
        ),
        case(
            with("canceled", &[]),
            "canceled",
            "evt_canceled.json",
            Some(Stage::Canceled),
        ),
        // Stripe erases the person from a redacted session's events.
        Case {
            subject: None,
            ..case(with("redacted", &[]), "redacted", "evt_redacted.json", None)
        },
    ]
}

#[tokio::test]
async fn send_test_event_signs_every_kind_as_stripe_and_the_worker_reads_it() {
    let server = endpoint(200, r#"{"received":true}"#).await;
    let to = format!("{}/webhook", server.uri());
    let verifier = SignatureVerifier::new(
        vec![WebhookSecret::parse(SECRET).unwrap()],
        DEFAULT_TOLERANCE,
    );
    let worker_settings = worker::settings::Settings::from_env(&Env::default()).unwrap();
    let cases = cases();
    for (n, case) in cases.iter().enumerate() {
        let mut args = vec!["send-test-event"];
        args.extend(&case.args);
        args.extend(["--to", &to, "--json"]);
        let output = idvctl(&args, &[("STRIPE_WEBHOOK_SECRET", SECRETS)]).await;
        assert_eq!(code(&output), 0, "{args:?}: {}", stderr(&output));
        let printed: Value = serde_json::from_str(&stdout(&output)).unwrap();

        let requests = received(&server).await;
        assert_eq!(requests.len(), n + 1, "one POST per run");
        let request = requests.last().unwrap();
        let body = request.body.as_slice();
        let header = request
            .headers
            .get("stripe-signature")
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            request
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        // Signed as Stripe signs: the shared verifier takes it.
        verifier.check_header(header, now_unix()).unwrap();
        verifier.verify(header, body, now_unix()).unwrap();

        // Ingest's envelope and the worker's own parser both read it.
        let envelope = EventEnvelope::parse(body).unwrap();
        assert_eq!(envelope.event_type, case.event_type);
        assert_eq!(envelope.livemode, Some(false));
        assert_eq!(printed["event_id"], envelope.id.as_str());
        assert_eq!(printed["status"], 200);
        assert_eq!(printed["body"], r#"{"received":true}"#);
        let event = incoming::parse(body, 0, &worker_settings).unwrap();
        assert_eq!(event.kind, case.kind, "{args:?}");
        assert_eq!(
            event.failure.as_ref().map(|f| f.code.as_str()),
            case.code,
            "{args:?}"
        );
        assert_eq!(event.subject_key.as_deref(), case.subject, "{args:?}");
        if let Some(session) = case.session {
            assert_eq!(event.session_id, session);
        }
        assert!(shared::SessionId::parse(&event.session_id).is_ok());
        assert_eq!(printed["session"], event.session_id.as_str());

        // Stripe's shape: the keys of the fixture of the same type.
        let fixture = idv_tests::fixtures::fixture(case.fixture);
        assert_eq!(keys_of(body), keys_of(&fixture), "{args:?}");
        let value: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(value["object"], "event");
        assert_eq!(value["api_version"], "2026-07-29.dahlia");
        assert_eq!(
            value["data"]["object"]["object"],
            "identity.verification_session"
        );
        let id = envelope.id.as_str();
        assert_eq!(id.len(), "evt_".len() + 24, "{id}");
    }
}

#[tokio::test]
async fn send_test_event_text_output_names_the_event_and_the_answer() {
    let server = endpoint(200, r#"{"received":true}"#).await;
    let to = format!("{}/webhook", server.uri());
    let created = (now_unix() - 3600).to_string();
    let output = idvctl(
        &[
            "send-test-event",
            "verified",
            "--subject",
            "user_7",
            "--to",
            &to,
            "--created",
            &created,
        ],
        &[("STRIPE_WEBHOOK_SECRET", SECRETS)],
    )
    .await;
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let text = stdout(&output);
    let body: Value = serde_json::from_slice(&received(&server).await[0].body).unwrap();
    assert_eq!(body["created"].as_i64().unwrap().to_string(), created);
    for expected in [
        "sent identity.verification_session.verified",
        body["id"].as_str().unwrap(),
        body["data"]["object"]["id"].as_str().unwrap(),
        "subject: user_7",
        r#"ingest:  200 OK {"received":true}"#,
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    assert!(!text.contains(SECRET) && !stderr(&output).contains(SECRET));
}

#[tokio::test]
async fn send_test_event_without_a_good_secret_is_a_usage_error_and_sends_nothing() {
    let server = endpoint(200, r#"{"received":true}"#).await;
    let to = format!("{}/webhook", server.uri());
    let run = |vars: &'static [(&'static str, &'static str)], extra: &'static [&'static str]| {
        let to = to.clone();
        async move {
            let mut args = vec!["send-test-event", "verified", "--to", &to];
            args.extend(extra);
            idvctl(&args, vars).await
        }
    };

    let missing = run(&[], &[]).await;
    assert_eq!(code(&missing), 2, "{}", stderr(&missing));
    let said = stderr(&missing);
    assert!(
        said.contains("--secret") && said.contains("STRIPE_WEBHOOK_SECRET"),
        "{said}"
    );

    let bad_variable = run(
        &[("STRIPE_WEBHOOK_SECRET", "sk_live_not_a_secret,whsec_x")],
        &[],
    )
    .await;
    assert_eq!(code(&bad_variable), 2);
    let said = stderr(&bad_variable);
    assert!(said.contains("STRIPE_WEBHOOK_SECRET"), "{said}");
    assert!(
        !said.contains("sk_live_not_a_secret"),
        "never echoed: {said}"
    );

    let bad_flag = run(&[], &["--secret", "sk_live_not_a_secret"]).await;
    assert_eq!(code(&bad_flag), 2);
    assert!(stderr(&bad_flag).contains("--secret"));
    assert!(!stderr(&bad_flag).contains("sk_live_not_a_secret"));

    let bad_to = idvctl(
        &[
            "send-test-event",
            "verified",
            "--to",
            "ftp://127.0.0.1/webhook",
        ],
        &[("STRIPE_WEBHOOK_SECRET", SECRETS)],
    )
    .await;
    assert_eq!(code(&bad_to), 2);
    assert!(stderr(&bad_to).contains("--to"));

    assert!(received(&server).await.is_empty(), "nothing was sent");
}

#[tokio::test]
async fn send_test_event_refused_or_unreachable_is_exit_1_saying_why() {
    let server = endpoint(400, r#"{"error":"no signature matches the payload"}"#).await;
    let to = format!("{}/webhook", server.uri());
    let refused = idvctl(
        &["send-test-event", "processing", "--to", &to],
        &[("STRIPE_WEBHOOK_SECRET", SECRETS)],
    )
    .await;
    assert_eq!(code(&refused), 1, "{}", stderr(&refused));
    let said = stderr(&refused);
    assert!(said.contains("400 Bad Request"), "{said}");
    assert!(said.contains("no signature matches the payload"), "{said}");

    // A port nothing listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/webhook", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = idvctl(
        &["send-test-event", "processing", "--to", &url],
        &[("STRIPE_WEBHOOK_SECRET", SECRETS)],
    )
    .await;
    assert_eq!(code(&unreachable), 1, "{}", stderr(&unreachable));
    assert!(
        stderr(&unreachable).contains(&url),
        "{}",
        stderr(&unreachable)
    );
}

// ----- scenario -----

fn subject_key(name: &str) -> String {
    format!("rehearsal_{name}_{}", idv_tests::unique_suffix())
}

/// What a scenario must leave in the record, as the test reads it.
struct Expect<'a> {
    status: &'a str,
    attempts: i32,
    blocked: bool,
    sessions: &'a [(&'a str, bool)],
    /// Events in the inbox.
    events: usize,
}

/// Runs scenario `name` end to end and checks, apart from idvctl's own
/// verdict, that the record and the inbox are as `expect` says. Returns
/// the world and the subject for further checks.
async fn scenario_ends_as_predicted(
    name: &str,
    max_attempts: &str,
    expect: Expect<'_>,
) -> (RehearsalWorld, String) {
    let world = RehearsalWorld::new(true, max_attempts).await;
    let subject = subject_key(name);
    let output = world.scenario(name, &subject, max_attempts, &[]).await;
    let text = stdout(&output);
    assert_eq!(code(&output), 0, "{text}\n{}", stderr(&output));
    let attempts_text = if expect.attempts == 1 {
        "1 failed attempt".to_owned()
    } else {
        format!("{} failed attempts", expect.attempts)
    };
    assert_eq!(
        text.lines().last(),
        Some(format!("as the rules predict: {}, {attempts_text}", expect.status).as_str()),
        "{text}"
    );
    assert!(
        text.contains(&format!("subject {subject}")),
        "the record: {text}"
    );

    let mut sessions: Vec<(String, bool)> = expect
        .sessions
        .iter()
        .map(|&(status, redacted)| (status.to_owned(), redacted))
        .collect();
    sessions.sort();
    let expected = Record {
        status: expect.status.to_owned(),
        failed_attempts: expect.attempts,
        blocked: expect.blocked,
        sessions,
    };
    assert_eq!(world.record(&subject).await, expected, "{name}");
    assert_eq!(
        world.inbox_types(&subject).await.len(),
        expect.events,
        "{name}"
    );
    (world, subject)
}

const VERIFIED: (&str, bool) = ("verified", false);
const FAILED: (&str, bool) = ("requires_input", false);

fn expect<'a>(status: &'a str, attempts: i32, sessions: &'a [(&'a str, bool)]) -> Expect<'a> {
    Expect {
        status,
        attempts,
        blocked: false,
        sessions,
        events: 3 * sessions.len(),
    }
}

#[tokio::test]
async fn scenario_happy_ends_verified() {
    let (world, _) =
        scenario_ends_as_predicted("happy", "3", expect("verified", 0, &[VERIFIED])).await;
    world.stop().await;
}

#[tokio::test]
async fn scenario_retry_then_verified_counts_one_fixable_failure_and_ends_verified() {
    let expected = expect("verified", 1, &[FAILED, VERIFIED]);
    let (world, _) = scenario_ends_as_predicted("retry-then-verified", "3", expected).await;
    world.stop().await;
}

#[tokio::test]
async fn scenario_attempts_exhausted_follows_the_configured_limit() {
    // Two, not the default three: the story follows IDV_MAX_FAILED_ATTEMPTS.
    let expected = expect("manual_review", 2, &[FAILED, FAILED]);
    let (world, _) = scenario_ends_as_predicted("attempts-exhausted", "2", expected).await;
    world.stop().await;
}

#[tokio::test]
async fn scenario_not_retryable_goes_to_manual_review_at_once() {
    let expected = Expect {
        blocked: true,
        ..expect("manual_review", 1, &[FAILED])
    };
    let (world, _) = scenario_ends_as_predicted("not-retryable", "3", expected).await;
    world.stop().await;
}

#[tokio::test]
async fn scenario_out_of_order_sends_newest_first_and_ends_verified() {
    let (world, subject) =
        scenario_ends_as_predicted("out-of-order", "3", expect("verified", 0, &[VERIFIED])).await;
    let types = world.inbox_types(&subject).await;
    let received: Vec<&str> = types
        .iter()
        .map(|t| t.trim_start_matches("identity.verification_session."))
        .collect();
    assert_eq!(received, ["verified", "processing", "created"]);
    world.stop().await;
}

#[tokio::test]
async fn scenario_duplicates_sends_each_event_twice_and_applies_it_once() {
    let (world, _) =
        scenario_ends_as_predicted("duplicates", "3", expect("verified", 0, &[VERIFIED])).await;
    let worker = world.worker.as_ref().expect("a worker");
    eventually(
        DEADLINE,
        "the worker to take the three duplicates",
        || async { worker.metric_sum("idv_worker_duplicates_total") == 3.0 },
    )
    .await;
    world.stop().await;
}

#[tokio::test]
async fn scenario_redacted_stays_verified_and_erases_the_session() {
    let expected = Expect {
        events: 4,
        ..expect("verified", 0, &[("verified", true)])
    };
    let (world, _) = scenario_ends_as_predicted("redacted", "3", expected).await;
    world.stop().await;
}

#[tokio::test]
async fn scenario_json_carries_the_verdict_the_deliveries_and_the_record() {
    let world = RehearsalWorld::new(true, "3").await;
    let subject = subject_key("json");
    let output = world
        .scenario("duplicates", &subject, "3", &["--json"])
        .await;
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["scenario"], "duplicates");
    assert_eq!(report["as_predicted"], true);
    assert_eq!(
        report["verdict"],
        "as the rules predict: verified, 0 failed attempts"
    );
    assert_eq!(report["record"]["key"], subject.as_str());
    assert_eq!(report["record"]["status"], "verified");
    let sent = report["sent"].as_array().unwrap();
    assert_eq!(sent.len(), 6, "each of the three events twice");
    let ids: BTreeSet<&str> = sent
        .iter()
        .map(|d| d["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(sent.iter().all(|d| d["status"] == 200));
    world.stop().await;
}

#[tokio::test]
async fn scenario_not_as_predicted_prints_the_record_and_exits_1() {
    // The worker allows five attempts; idvctl was told two: two failures
    // leave the person able to retry, not in manual review.
    let world = RehearsalWorld::new(true, "5").await;
    let subject = subject_key("mismatch");
    let output = world
        .scenario("attempts-exhausted", &subject, "2", &[])
        .await;
    assert_eq!(code(&output), 1, "{}", stdout(&output));
    assert!(
        stdout(&output).contains(&format!("subject {subject}")),
        "{}",
        stdout(&output)
    );
    let said = stderr(&output);
    assert!(
        said.contains(
            "NOT as the rules predict: expected manual_review, 2 failed attempts, \
             found requires_input, 2 failed attempts"
        ),
        "{said}"
    );
    world.stop().await;
}

#[tokio::test]
async fn scenario_without_a_worker_times_out_naming_the_events_not_applied() {
    let world = RehearsalWorld::new(false, "3").await;
    let subject = subject_key("noworker");
    let started = std::time::Instant::now();
    let output = world
        .scenario("happy", &subject, "3", &["--timeout", "2"])
        .await;
    assert_eq!(code(&output), 1, "{}", stdout(&output));
    assert!(started.elapsed() < Duration::from_secs(60));
    let said = stderr(&output);
    assert!(said.contains("applied 0 of 3 events within 2 s"), "{said}");
    assert!(said.contains("Is idv-worker running"), "{said}");
    for event_type in ["created", "processing", "verified"] {
        assert!(
            said.contains(&format!("(identity.verification_session.{event_type})")),
            "{said}"
        );
    }
    assert_eq!(
        said.matches("evt_").count(),
        3,
        "each event not applied is named: {said}"
    );
    // Ingest took them all: they wait in the queue for a worker.
    let queue = world.broker.topology.events_queue();
    // Awaited: a quorum queue's count reads 0 while its leader is slow.
    world.broker.wait_for_count(&queue, 3, DEADLINE).await;
    world.stop().await;
}
