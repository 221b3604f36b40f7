//! Hostile input at volume against the real ingest (in-process, debug
//! build) and the real RabbitMQ: the whole corpus of 10,800 bad requests
//! (see `idv_tests::hostile`), sent while good signed events flow at a
//! steady rate. Every bad request is refused as its family expects,
//! nothing of them is published, every good event is answered 200 and is
//! in the queue exactly once. The release build's figures come from
//! `deploy/hostile.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::fixtures::TEST_SECRET;
use idv_tests::hostile::corpus::Context;
use idv_tests::hostile::family::Family;
use idv_tests::hostile::good_stream::GoodLoad;
use idv_tests::hostile::run::{Plan, run};
use idv_tests::ingest_app::TestIngest;
use shared::WebhookSecret;

/// Ingest's head and body timeouts here: shorter than the defaults, so the
/// slow senders are cut off sooner, yet long enough that a body sent at
/// once is always read within it on a busy machine (with 1 s, one in
/// 10,000 was answered 408 in a debug build under load).
const SLOW_TIMEOUT: Duration = Duration::from_millis(3_000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_is_refused_and_none_published_while_good_events_are_all_taken() {
    let broker = TestBroker::new().await;
    let timeout_ms = SLOW_TIMEOUT.as_millis().to_string();
    let ingest = TestIngest::spawn(
        &broker,
        &[
            ("EXPECTED_LIVEMODE", "false"),
            ("INGEST_HEAD_TIMEOUT_MS", &timeout_ms),
            ("INGEST_BODY_TIMEOUT_MS", &timeout_ms),
        ],
    )
    .await;
    let secret = WebhookSecret::parse(TEST_SECRET).unwrap();
    let plan = Plan {
        addr: ingest
            .address
            .trim_start_matches("http://")
            .parse()
            .unwrap(),
        context: Context {
            secret: secret.clone(),
            now: 0,
            tolerance_secs: 300,
            max_body_bytes: 1024 * 1024,
            dribble_every: Duration::from_millis(50),
        },
        per_family: Family::ALL.iter().map(|&f| (f, f.full_count())).collect(),
        concurrency: 8,
        slow_concurrency: 40,
        slow_timeout: SLOW_TIMEOUT,
        good: GoodLoad {
            url: format!("{}/webhook", ingest.address),
            secret,
            rate: 50.0,
            connections: 2,
            body_bytes: 2048,
            timeout: Duration::from_secs(30),
        },
        baseline: Duration::from_secs(3),
    };
    let report = run(&plan, &broker).await.unwrap();
    eprintln!("{}", report.table());
    let total: usize = report.families.values().map(|t| t.requests).sum();
    assert!(total >= 10_000, "only {total} hostile requests were sent");
    assert!(
        report.under_attack.accepted.len() >= 50,
        "the good stream barely ran during the attack"
    );
    let failures = report.failures();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
