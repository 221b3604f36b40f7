//! The whole pipeline: signed fixtures POSTed to `idv-ingest` flow through
//! RabbitMQ to `idv-worker`'s committed record, whatever the order and
//! however often Stripe delivers them, and on to the person's e-mail and
//! the platform's `idv.outcomes`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::dispatch_world::FAST_DISPATCH;
use idv_tests::fixtures::{EVENT_FIXTURES, fixture};
use idv_tests::ingest_app::TestIngest;
use idv_tests::smtp::SmtpServer;
use idv_tests::wait::{eventually, eventually_some};
use idv_tests::worker_world::{
    FAST_RETRIES, RunningWorker, assert_no_dead_letters, assert_no_message_failed, event_count,
    migrate, settings,
};
use rand::seq::SliceRandom;
use worker::dispatch::message::OutcomeMessage;
use worker::store::read;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn signed_fixtures_posted_to_ingest_end_in_the_workers_record() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let worker_settings = settings(
        Some(&broker),
        &db,
        &[("WORKER_CONSUMERS", "2"), FAST_RETRIES],
    );
    migrate(&worker_settings).await;
    let worker = RunningWorker::start(worker_settings).await;
    let ingest = TestIngest::spawn(&broker, &[]).await;

    // Stripe retries and does not order: every fixture twice, shuffled.
    let mut deliveries: Vec<&str> = EVENT_FIXTURES
        .iter()
        .chain(&EVENT_FIXTURES)
        .copied()
        .collect();
    deliveries.shuffle(&mut rand::rng());
    for name in deliveries {
        let response = ingest.post_signed(fixture(name)).await;
        assert_eq!(response.status(), 200, "{name}");
    }

    let client = db.client().await;
    eventually(
        DEADLINE,
        "the worker to take all twelve deliveries",
        || async {
            worker.metric_sum("idv_worker_events_total") == 12.0
                && worker.metric_sum("idv_worker_duplicates_total") == 6.0
        },
    )
    .await;
    assert_eq!(event_count(&client).await, 6, "each event recorded once");

    let subject = read::subject(&client, "user_8f14e45fceea", 3)
        .await
        .unwrap()
        .expect("the person of the main session");
    assert_eq!(subject.status, "verified");
    assert_eq!(subject.failed_attempts, 1);
    let session = read::session(&client, "vs_1Sk3Gh2eZvKYlo2CqR8tNw4P")
        .await
        .unwrap()
        .expect("the main session");
    assert_eq!(session.status, "verified");
    assert!(
        session.redacted,
        "the redacted event erased its personal data"
    );
    let canceled = read::subject(&client, "user_45c48cce2e2d", 3)
        .await
        .unwrap()
        .expect("the person whose session was canceled");
    assert_eq!(canceled.status, "canceled");

    ingest.stop().await.expect("ingest stops cleanly");
    let metrics = worker.metrics.clone();
    worker.stop().await;
    broker
        .assert_all_acked(&broker.topology.events_queue(), DEADLINE)
        .await;
    assert_no_message_failed(&broker, &[metrics.encode()]).await;
    assert_no_dead_letters(&db).await;
}

/// The whole pipeline acting on outcomes: signed fixtures POSTed to ingest
/// end, through the worker and its dispatcher, in an e-mail to the person
/// (a real SMTP server on loopback) and a message on `idv.outcomes`.
#[tokio::test]
async fn a_verified_person_gets_an_email_and_the_platform_a_message() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let smtp = SmtpServer::start().await;
    let smtp_url = smtp.url();
    let mut extra = vec![
        ("WORKER_ROLE", "all"),
        ("SMTP_URL", smtp_url.as_str()),
        ("EMAIL_FROM", "identity@example.com"),
        FAST_RETRIES,
    ];
    extra.extend(FAST_DISPATCH);
    let worker_settings = settings(Some(&broker), &db, &extra);
    migrate(&worker_settings).await;
    // The platform's contact for the person, and its queue of outcomes.
    let person = "user_8f14e45fceea";
    let client = db.client().await;
    client
        .execute(
            "INSERT INTO subject_contacts (subject_key, email) VALUES ($1, 'person@example.com')",
            &[&person],
        )
        .await
        .unwrap();
    let queue = broker.outcomes_queue("platform-outcomes", "verified").await;
    let worker = RunningWorker::start(worker_settings).await;
    let ingest = TestIngest::spawn(&broker, &[]).await;
    for name in EVENT_FIXTURES {
        let response = ingest.post_signed(fixture(name)).await;
        assert_eq!(response.status(), 200, "{name}");
    }

    let message = broker.get(&queue, DEADLINE).await;
    let outcome: OutcomeMessage = serde_json::from_slice(&message.body).unwrap();
    assert_eq!(
        (outcome.outcome.as_str(), outcome.subject.as_deref()),
        ("verified", Some(person))
    );
    assert_eq!(
        outcome.session.as_deref(),
        Some("vs_1Sk3Gh2eZvKYlo2CqR8tNw4P")
    );
    // The retry notice may come first (sent before the verified event was
    // applied) or be superseded: wait for the "verified" one itself.
    let emails = eventually_some(DEADLINE, "the \"You are verified\" e-mail", || async {
        let emails = smtp.messages().await;
        emails
            .iter()
            .any(|e| e.subject() == "You are verified")
            .then_some(emails)
    })
    .await;
    let verified: Vec<_> = emails
        .iter()
        .filter(|e| e.subject() == "You are verified")
        .collect();
    assert_eq!(verified.len(), 1, "{emails:#?}");
    assert_eq!(verified[0].header("To"), Some("person@example.com"));

    ingest.stop().await.expect("ingest stops cleanly");
    worker.stop().await;
    assert!(
        broker.try_get(&queue).await.is_none(),
        "one verified message"
    );
}
