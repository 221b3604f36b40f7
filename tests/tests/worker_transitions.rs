//! The transition, driven through `Store::apply` (the step apart from the
//! consume loop) against a real PostgreSQL: the seed scenarios, each
//! `last_error.code` family, the attempt limit, duplicates and redaction.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a failure should stop the test loudly

use idv_tests::database::TestDatabase;
use idv_tests::fixtures::fixture;
use idv_tests::worker_world::*;
use shared::LastErrorCode;
use worker::store::{Applied, read};

async fn outbox_kinds(client: &tokio_postgres::Client, subject: &str) -> Vec<String> {
    client
        .query(
            "SELECT kind FROM outbox WHERE subject_key = $1 ORDER BY id",
            &[&subject],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn seed_scenario_verified_after_one_failed_submission() {
    let db = TestDatabase::new().await;
    let settings = settings(None, &db, &EVERY_SINK);
    let store = store(&settings).await;
    let bodies: Vec<_> = [
        "evt_processing.json",
        "evt_requires_input_document_expired.json",
        "evt_verified.json",
    ]
    .map(fixture)
    .to_vec();
    let outcomes = apply_each(&store, &settings, &bodies).await;
    assert!(outcomes.iter().all(|o| o.applied == Applied::Applied));
    assert_eq!(
        outcomes[1].counted_failure.as_deref(),
        Some("document_expired")
    );

    let client = db.client().await;
    let subject = read::subject(&client, "user_8f14e45fceea", 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(subject.status, "verified");
    assert_eq!(subject.failed_attempts, 1);
    assert_eq!(subject.last_error_code.as_deref(), Some("document_expired"));
    assert_eq!(
        subject.decided_by_session.as_deref(),
        Some("vs_1Sk3Gh2eZvKYlo2CqR8tNw4P")
    );
    assert_eq!(subject.sessions.len(), 1);
    let session = &subject.sessions[0];
    assert_eq!(session.status, "verified");
    assert_eq!(
        session.last_event_id.as_deref(),
        Some("evt_1Sk3Ke2eZvKYlo2CwQ9nFs4d")
    );
    assert_eq!(session.last_error_code, None);
    assert_eq!(
        outbox_kinds(&client, "user_8f14e45fceea").await,
        [
            "outcome_message",
            "outcome_webhook",
            "notify_user_retry",
            "outcome_message",
            "outcome_webhook",
            "notify_user_verified",
            "compare_verified_outputs",
        ]
    );
}

#[tokio::test]
async fn seed_scenario_requires_input_keeps_code_and_reason() {
    let db = TestDatabase::new().await;
    let settings = settings(None, &db, &EVERY_SINK);
    let store = store(&settings).await;
    let body = fixture("evt_requires_input_selfie_face_mismatch.json");
    apply_each(&store, &settings, &[body]).await;
    let client = db.client().await;
    let session = read::session(&client, "vs_1Sk3Jm2eZvKYlo2CxW5bLq7D")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.status, "requires_input");
    assert_eq!(
        session.last_error_code.as_deref(),
        Some("selfie_face_mismatch")
    );
    assert!(session.last_error_reason.unwrap().contains("face image"));
    let subject = read::subject(&client, "user_c9f0f895fb98", 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (subject.status.as_str(), subject.failed_attempts),
        ("requires_input", 1)
    );
    let retry = client
        .query_one(
            "SELECT idempotency_key, payload FROM outbox WHERE kind = 'notify_user_retry'",
            &[],
        )
        .await
        .unwrap();
    let payload: serde_json::Value = retry.get(1);
    assert_eq!(payload["code"], "selfie_face_mismatch");
    assert_eq!(payload["outcome"], "requires_input");
    assert!(payload["reason"].as_str().is_some());
}

#[tokio::test]
async fn every_code_family_gets_its_policy() {
    let db = TestDatabase::new().await;
    let settings = settings(
        None,
        &db,
        &[
            ("SMTP_URL", "smtp://127.0.0.1:9"),
            ("EMAIL_FROM", "identity@example.com"),
            ("STRIPE_API_KEY", "sk_test_unreachable"),
        ],
    );
    let store = store(&settings).await;
    let client = db.client().await;
    let mut codes: Vec<String> = LastErrorCode::KNOWN.iter().map(|c| c.to_string()).collect();
    codes.push("a_code_from_the_future".into());
    for code in codes {
        let user = unique("user_");
        let body = failed(&unique("evt_"), &unique("vs_"), &user, 1_700_000_000, &code);
        apply_each(&store, &settings, &[body]).await;
        let subject = read::subject(&client, &user, 3).await.unwrap().unwrap();
        let expected = match code.as_str() {
            "abandoned" => ("requires_input", 0),
            "under_supported_age" | "country_not_supported" | "consent_declined" => {
                ("manual_review", 1)
            }
            _ => ("requires_input", 1),
        };
        assert_eq!(
            (subject.status.as_str(), subject.failed_attempts),
            expected,
            "code {code}"
        );
        let kinds = outbox_kinds(&client, &user).await;
        // Every failure is told (the dispatcher judges whether it still is
        // true); a subject at its limit is told once and its session canceled.
        let told = ["outcome_message", "notify_user_retry"];
        match expected.0 {
            "manual_review" => assert_eq!(
                kinds,
                [
                    told.as_slice(),
                    &[
                        "outcome_message",
                        "notify_user_alternative",
                        "cancel_stripe_session"
                    ]
                ]
                .concat(),
                "code {code}"
            ),
            _ => assert_eq!(kinds, told, "code {code}"),
        }
    }
}

#[tokio::test]
async fn three_failures_reach_manual_review_and_a_fourth_changes_nothing() {
    let db = TestDatabase::new().await;
    let settings = settings(None, &db, &EVERY_SINK);
    let store = store(&settings).await;
    let client = db.client().await;
    let (user, vs) = (unique("user_"), unique("vs_"));
    let bodies: Vec<_> = (0..3)
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
    let outcomes = apply_each(&store, &settings, &bodies).await;
    assert_eq!(
        outcomes
            .iter()
            .map(|o| o.reached_manual_review)
            .collect::<Vec<_>>(),
        [false, false, true]
    );
    let subject = read::subject(&client, &user, 3).await.unwrap().unwrap();
    assert_eq!(
        (subject.status.as_str(), subject.failed_attempts),
        ("manual_review", 3)
    );
    let limit_rows: Vec<(String, Option<String>)> = client
        .query(
            "SELECT idempotency_key, session_id FROM outbox WHERE from_limit ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        limit_rows,
        [
            (format!("{user}:manual_review:outcome_message"), None),
            (format!("{user}:manual_review:outcome_webhook"), None),
            (
                format!("{user}:manual_review:notify_user_alternative"),
                None
            ),
            (format!("{vs}:cancel_stripe_session"), Some(vs.clone())),
        ]
    );
    let rows_at_limit = outbox_kinds(&client, &user).await.len();

    let fourth = failed(
        &unique("evt_"),
        &vs,
        &user,
        1_700_000_010,
        "selfie_face_mismatch",
    );
    apply_each(&store, &settings, &[fourth]).await;
    let after = read::subject(&client, &user, 3).await.unwrap().unwrap();
    assert_eq!(
        (
            after.status.as_str(),
            after.failed_attempts,
            after.decided_by_session.as_deref()
        ),
        ("manual_review", 3, subject.decided_by_session.as_deref())
    );
    // The fourth failure is told like any (the dispatcher supersedes it:
    // the subject no longer requires input); the limit rows stay as they were.
    assert_eq!(outbox_kinds(&client, &user).await.len(), rows_at_limit + 3);
}

#[tokio::test]
async fn a_non_retryable_code_goes_to_manual_review_at_once() {
    let db = TestDatabase::new().await;
    let settings = settings(None, &db, &[]);
    let store = store(&settings).await;
    let (user, vs) = (unique("user_"), unique("vs_"));
    let body = failed(
        &unique("evt_"),
        &vs,
        &user,
        1_700_000_000,
        "under_supported_age",
    );
    let outcome = apply_each(&store, &settings, &[body]).await;
    assert!(outcome[0].reached_manual_review);
    let client = db.client().await;
    let subject = read::subject(&client, &user, 3).await.unwrap().unwrap();
    assert_eq!(
        (subject.status.as_str(), subject.failed_attempts),
        ("manual_review", 1)
    );
    let at_limit: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox WHERE from_limit AND subject_key = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        at_limit, 1,
        "the platform is told once (no other sink configured)"
    );
    // A later success still wins.
    let verified = event(
        &unique("evt_"),
        "verified",
        1_700_000_100,
        session(&vs, "verified", Some(&user), None),
    );
    apply_each(&store, &settings, &[verified]).await;
    let subject = read::subject(&client, &user, 3).await.unwrap().unwrap();
    assert_eq!(subject.status, "verified");
}

#[tokio::test]
async fn duplicates_apply_once_across_batches_and_within_one() {
    let db = TestDatabase::new().await;
    let settings = settings(None, &db, &[]);
    let store = store(&settings).await;
    let (user, vs) = (unique("user_"), unique("vs_"));
    let body = failed(
        &unique("evt_"),
        &vs,
        &user,
        1_700_000_000,
        "document_expired",
    );
    let many = vec![body.clone(); 5];
    let in_one = apply_batch(&store, &settings, &many).await;
    assert_eq!(in_one[0].applied, Applied::Applied);
    assert!(in_one[1..].iter().all(|o| o.applied == Applied::Duplicate));
    let again = apply_each(&store, &settings, &many).await;
    assert!(again.iter().all(|o| o.applied == Applied::Duplicate));
    let client = db.client().await;
    let subject = read::subject(&client, &user, 3).await.unwrap().unwrap();
    assert_eq!(subject.failed_attempts, 1);
    assert_eq!(outbox_kinds(&client, &user).await, ["outcome_message"]);
}

#[tokio::test]
async fn redaction_erases_personal_data_and_keeps_dedupe_and_counts() {
    let db = TestDatabase::new().await;
    let settings = settings(None, &db, &EVERY_SINK);
    let store = store(&settings).await;
    let bodies: Vec<_> = [
        "evt_requires_input_document_expired.json",
        "evt_verified.json",
        "evt_redacted.json",
    ]
    .map(fixture)
    .to_vec();
    let outcomes = apply_each(&store, &settings, &bodies).await;
    assert_eq!(outcomes[2].applied, Applied::Redacted);
    let vs = "vs_1Sk3Gh2eZvKYlo2CqR8tNw4P";
    let client = db.client().await;
    let payloads: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE session_id = $1 AND payload IS NOT NULL",
            &[&vs],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(payloads, 0, "no payload survives redaction");
    let reasons: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox WHERE session_id = $1 AND payload ? 'reason'",
            &[&vs],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(reasons, 0, "no reason text survives redaction");
    let session = read::session(&client, vs).await.unwrap().unwrap();
    assert!(session.redacted);
    assert_eq!(session.last_error_reason, None);
    assert_eq!(session.status, "verified");
    let subject = read::subject(&client, "user_8f14e45fceea", 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (subject.status.as_str(), subject.failed_attempts),
        ("verified", 1)
    );
    // Still deduplicated; a late event of a redacted session keeps no payload.
    let again = apply_each(
        &store,
        &settings,
        &[fixture("evt_requires_input_document_expired.json")],
    )
    .await;
    assert_eq!(again[0].applied, Applied::Duplicate);
    apply_each(&store, &settings, &[fixture("evt_processing.json")]).await;
    let late: Option<serde_json::Value> = client
        .query_one(
            "SELECT payload FROM events WHERE id = 'evt_1Sk3Hq2eZvKYlo2CgT0oRk5a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(late, None);
}

#[tokio::test]
async fn a_subject_whose_only_session_is_canceled_is_canceled() {
    let db = TestDatabase::new().await;
    let settings = settings(None, &db, &[]);
    let store = store(&settings).await;
    apply_each(&store, &settings, &[fixture("evt_canceled.json")]).await;
    let client = db.client().await;
    let subject = read::subject(&client, "user_45c48cce2e2d", 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(subject.status, "canceled");
    assert_eq!(subject.sessions[0].status, "canceled");
}

#[tokio::test]
async fn a_batch_the_database_refuses_is_redone_one_event_per_transaction() {
    let db = TestDatabase::new().await;
    let settings = settings(None, &db, &[]);
    let store = store(&settings).await;
    // PostgreSQL refuses a NUL character in text and in jsonb (SQLSTATE
    // class 22): the middle event can never be stored; its neighbours can.
    let mut poisoned = session("vs_split_b", "requires_input", Some("user_split_b"), None);
    poisoned["last_error"] =
        serde_json::json!({"code": "document_expired", "reason": "bad \u{0} byte"});
    let bodies = [
        failed(
            "evt_split_a",
            "vs_split_a",
            "user_split_a",
            1_700_000_000,
            "document_expired",
        ),
        event("evt_split_b", "requires_input", 1_700_000_000, poisoned),
        failed(
            "evt_split_c",
            "vs_split_c",
            "user_split_c",
            1_700_000_000,
            "selfie_face_mismatch",
        ),
    ];
    let events: Vec<_> = bodies.iter().map(|b| incoming(&settings, b)).collect();
    let refs: Vec<_> = events.iter().collect();
    let outcomes = store.apply(&refs).await.expect("the database is available");

    assert_eq!(outcomes.len(), 3, "one outcome per event, in order");
    assert!(
        matches!(&outcomes[0], Ok(o) if o.applied == Applied::Applied),
        "{:?}",
        outcomes[0]
    );
    assert!(
        matches!(
            &outcomes[1],
            Err(worker::incoming::MessageFailure::Refused(_))
        ),
        "{:?}",
        outcomes[1]
    );
    assert!(
        matches!(&outcomes[2], Ok(o) if o.applied == Applied::Applied),
        "{:?}",
        outcomes[2]
    );
    let client = db.client().await;
    let stored: Vec<String> = client
        .query("SELECT id FROM events ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(stored, ["evt_split_a", "evt_split_c"]);
    for user in ["user_split_a", "user_split_c"] {
        let subject = read::subject(&client, user, 3).await.unwrap().unwrap();
        assert_eq!(
            (subject.status.as_str(), subject.failed_attempts),
            ("requires_input", 1),
            "{user}"
        );
    }
    assert!(
        read::subject(&client, "user_split_b", 3)
            .await
            .unwrap()
            .is_none(),
        "nothing of the refused event was kept"
    );
}

/// The redacted copy of `body` as Stripe sends it once the session was
/// redacted: `client_reference_id` is `"[redacted]"`, the metadata erased,
/// `redaction` set (same event id, same type).
fn redacted_copy(body: &[u8]) -> Vec<u8> {
    let mut event: serde_json::Value = serde_json::from_slice(body).unwrap();
    let session = &mut event["data"]["object"];
    session["client_reference_id"] = "[redacted]".into();
    session["metadata"] = serde_json::json!({});
    session["redaction"] = serde_json::json!({"status": "redacted"});
    if session["last_error"].is_object() {
        session["last_error"]["reason"] = "[redacted]".into();
    }
    serde_json::to_vec(&event).unwrap()
}

/// Strangers whose failed submissions arrive first as redacted copies (the
/// original was answered 503, Stripe retried after the platform redacted
/// the session) never share a subject named by the placeholder: each
/// session stays unmapped until an event naming its person arrives, and
/// its failure then counts for that person only; a session nothing names
/// counts for nobody.
#[tokio::test]
async fn a_redacted_copy_first_names_nobody_and_strangers_never_add_up() {
    let db = TestDatabase::new().await;
    let settings = settings(None, &db, &[]);
    let store = store(&settings).await;
    let client = db.client().await;
    let strangers = 6;
    let mut bodies = Vec::new();
    for s in 0..strangers {
        let (user, vs) = (format!("user_red{s}"), format!("vs_red{s}"));
        let failure = failed(
            &format!("evt_red{s}_f"),
            &vs,
            &user,
            1_700_000_010,
            "document_expired",
        );
        bodies.push(redacted_copy(&failure));
        // Even strangers: the original arrives later (a duplicate by id,
        // changing nothing), then an unredacted event that names the person.
        if s % 2 == 0 {
            bodies.push(failure);
            bodies.push(event(
                &format!("evt_red{s}_p"),
                "processing",
                1_700_000_000,
                session(&vs, "processing", Some(&user), None),
            ));
        }
    }
    let outcomes = apply_each(&store, &settings, &bodies).await;
    assert!(outcomes.iter().all(|o| o.applied != Applied::Redacted));

    let placeholders: i64 = client
        .query_one(
            "SELECT count(*) FROM subjects WHERE key LIKE '%[%' OR key LIKE '%redacted%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(placeholders, 0, "no subject named by a placeholder");
    let subjects: Vec<String> = client
        .query("SELECT key FROM subjects ORDER BY key", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let named: Vec<String> = (0..strangers)
        .filter(|s| s % 2 == 0)
        .map(|s| format!("user_red{s}"))
        .collect();
    assert_eq!(subjects, named, "a subject for each person named, no other");
    for s in 0..strangers {
        let vs = format!("vs_red{s}");
        let session = read::session(&client, &vs).await.unwrap().unwrap();
        if s % 2 == 0 {
            assert_eq!(
                session.subject.as_deref(),
                Some(format!("user_red{s}").as_str())
            );
            let subject = read::subject(&client, &format!("user_red{s}"), 3)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (subject.status.as_str(), subject.failed_attempts),
                ("requires_input", 1),
                "the redacted copy's failure counts for its person once named"
            );
            assert_eq!(subject.last_error_code.as_deref(), Some("document_expired"));
        } else {
            assert_eq!(session.subject, None, "nothing names {vs}'s person");
            assert_eq!(session.status, "requires_input");
        }
    }
    let counted: i64 = client
        .query_one("SELECT count(*) FROM events WHERE counted_attempt", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        counted, strangers,
        "each failure is recorded as a counted attempt"
    );
}

/// Seeds, with plain SQL, a subject as the worker left it before migration
/// V2: `user` with one session `vs` whose one counted failure has `code`,
/// the subject blocked or not as the policy then in force said.
async fn seed_pre_v2_failure(
    client: &tokio_postgres::Client,
    user: &str,
    vs: &str,
    code: &str,
    blocked: bool,
) {
    let status = if blocked {
        "manual_review"
    } else {
        "requires_input"
    };
    let evt = format!("evt_{vs}_old");
    client
        .execute(
            "INSERT INTO subjects (key, status, failed_attempts, blocked, last_error_code, \
             last_error_created, last_error_event_id, decided_by_session) \
             VALUES ($1, $2, 1, $3, $4, 1700000000, $5, $6)",
            &[&user, &status, &blocked, &code, &evt, &vs],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO sessions (id, subject_key, status, last_error_code, last_event_id, \
             last_event_created, last_event_rank) \
             VALUES ($1, $2, 'requires_input', $3, $4, 1700000000, 2)",
            &[&vs, &user, &code, &evt],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO events (id, type, session_id, created, livemode, outcome, \
             counted_attempt, error_code, received_at) \
             VALUES ($1, 'identity.verification_session.requires_input', $2, 1700000000, \
             false, 'applied', true, $3, now())",
            &[&evt, &vs, &code],
        )
        .await
        .unwrap();
}

/// Whether a code blocks is the policy in force's call (IDV_CODE_POLICY),
/// also for failures counted before the class was stored: a subject blocked
/// under an override stays blocked when its next event recounts it, and
/// one whose code an override made retryable is not blocked by it. Before
/// V3, V2's backfill (the default table) decided: the first subject lost
/// its block on its next event, the second was sent to manual review.
#[tokio::test]
async fn failures_counted_before_the_class_was_stored_follow_the_current_policy() {
    let db = TestDatabase::new().await;
    let settings = settings(
        None,
        &db,
        &[(
            "IDV_CODE_POLICY",
            "document_expired=not_retryable,under_supported_age=retryable",
        )],
    );
    worker::migrate::migrate_to(&settings.database_url, Some(1))
        .await
        .unwrap();
    let client = db.client().await;
    seed_pre_v2_failure(&client, "user_pol_a", "vs_pol_a", "document_expired", true).await;
    seed_pre_v2_failure(
        &client,
        "user_pol_b",
        "vs_pol_b",
        "under_supported_age",
        false,
    )
    .await;
    let store = store(&settings).await;

    // A new session of each person: the subject is recounted.
    let bodies: Vec<Vec<u8>> = ["a", "b"]
        .iter()
        .map(|p| {
            event(
                &format!("evt_pol_{p}_new"),
                "created",
                1_700_000_100,
                session(
                    &format!("vs_pol_{p}2"),
                    "requires_input",
                    Some(&format!("user_pol_{p}")),
                    None,
                ),
            )
        })
        .collect();
    apply_each(&store, &settings, &bodies).await;
    let blocked = |key: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT blocked, status, failed_attempts FROM subjects WHERE key = $1",
                    &[&key],
                )
                .await
                .unwrap();
            (
                row.get::<_, bool>(0),
                row.get::<_, String>(1),
                row.get::<_, i32>(2),
            )
        }
    };
    assert_eq!(
        blocked("user_pol_a").await,
        (true, "manual_review".to_owned(), 1),
        "blocked under the override, still blocked"
    );
    let (blocked_b, status_b, failed_b) = blocked("user_pol_b").await;
    assert!(
        !blocked_b && status_b != "manual_review" && failed_b == 1,
        "retryable under the override, not blocked: {status_b}"
    );
}

/// A database the worker filled before V2 (placeholders taken for keys,
/// sessions mapped to their own id, no ranks): V3 unmaps the sessions of
/// a placeholder subject and deletes it (with the strangers' failures it
/// added up), and gives a session mapped to its own id the session id's
/// rank, so the first event naming its person moves it there. Before V3
/// the "[redacted]" subject stayed with its strangers' two failures, and
/// the session kept its own id as subject for good (rank i16::MIN).
#[tokio::test]
async fn v3_unmaps_placeholders_and_lets_session_id_fallbacks_move() {
    let db = TestDatabase::new().await;
    let settings = settings(None, &db, &[]);
    worker::migrate::migrate_to(&settings.database_url, Some(2))
        .await
        .unwrap();
    let client = db.client().await;
    // Two strangers' failures added up on "[redacted]", one session mapped
    // to its own id, as the worker before V2 left them (rank NULL).
    seed_pre_v2_failure(&client, "[redacted]", "vs_up_a", "document_expired", false).await;
    client
        .batch_execute(
            "UPDATE subjects SET failed_attempts = 2 WHERE key = '[redacted]';
             INSERT INTO sessions (id, subject_key, status, last_error_code, last_event_id,
               last_event_created, last_event_rank)
             VALUES ('vs_up_b', '[redacted]', 'requires_input', 'selfie_face_mismatch',
               'evt_vs_up_b_old', 1700000000, 2);
             INSERT INTO events (id, type, session_id, created, livemode, outcome,
               counted_attempt, error_code, received_at)
             VALUES ('evt_vs_up_b_old', 'identity.verification_session.requires_input',
               'vs_up_b', 1700000000, false, 'applied', true, 'selfie_face_mismatch', now());",
        )
        .await
        .unwrap();
    seed_pre_v2_failure(&client, "vs_up_c", "vs_up_c", "document_expired", false).await;
    let store = store(&settings).await;

    let placeholders: i64 = client
        .query_one(
            "SELECT count(*) FROM subjects WHERE key = '[redacted]'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(placeholders, 0, "the placeholder subject is gone");
    for vs in ["vs_up_a", "vs_up_b"] {
        let session = read::session(&client, vs).await.unwrap().unwrap();
        assert_eq!(session.subject, None, "{vs} is unmapped");
    }

    // Events that name the people: each failure counts for its person only,
    // and the session mapped to its own id moves to its person.
    let bodies = vec![
        event(
            "evt_up_a_p",
            "processing",
            1_699_999_000,
            session("vs_up_a", "processing", Some("user_up_a"), None),
        ),
        event(
            "evt_up_c_p",
            "processing",
            1_699_999_000,
            session("vs_up_c", "processing", Some("user_up_c"), None),
        ),
    ];
    apply_each(&store, &settings, &bodies).await;
    for (user, vs) in [("user_up_a", "vs_up_a"), ("user_up_c", "vs_up_c")] {
        let session = read::session(&client, vs).await.unwrap().unwrap();
        assert_eq!(session.subject.as_deref(), Some(user), "{vs} moved");
        let subject = read::subject(&client, user, 3).await.unwrap().unwrap();
        assert_eq!(
            (subject.status.as_str(), subject.failed_attempts),
            ("requires_input", 1),
            "{user}: its own failure only"
        );
    }
    let left: Vec<String> = client
        .query("SELECT key FROM subjects ORDER BY key", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        left,
        ["user_up_a", "user_up_c"],
        "the fallback subject went"
    );
}

/// Every statement of a batch that looks rows up (`worker::store::LOOKUPS`)
/// finds them through an index on tables of a realistic size and shape
/// (analysed): no plan may read a whole table, as a sequential scan or as
/// an index scan with no index condition (a full pass over an index).
/// Generic plans, as the worker's prepared statements get after five runs.
#[tokio::test]
async fn reads_of_a_batch_use_indexes() {
    let db = TestDatabase::new().await;
    let settings = settings(None, &db, &[]);
    migrate(&settings).await;
    let client = db.client().await;
    // 20 000 people with two sessions and ten events each, an outbox
    // with a pending backlog, and dead letters.
    client
        .batch_execute(
            "INSERT INTO subjects (key) SELECT 'user_' || g FROM generate_series(1, 20000) g; \
             INSERT INTO sessions (id, subject_key) \
               SELECT 'vs_' || g, 'user_' || (g % 20000 + 1) FROM generate_series(1, 40000) g; \
             INSERT INTO events (id, type, session_id, created, livemode, outcome, \
               counted_attempt, received_at) \
               SELECT 'evt_' || g, 'identity.verification_session.requires_input', \
                 'vs_' || (g % 40000 + 1), g, false, 'applied', g % 3 = 0, now() \
               FROM generate_series(1, 200000) g; \
             INSERT INTO outbox (kind, idempotency_key, subject_key, session_id, payload, \
               from_limit, status, due_at) \
               SELECT 'outcome_message', 'k' || g, 'user_' || (g % 20000 + 1), \
                 'vs_' || (g % 40000 + 1), '{}', g % 5 = 0, \
                 CASE WHEN g % 4 = 0 THEN 'pending' ELSE 'sent' END, \
                 CASE WHEN g % 8 = 0 THEN 'infinity'::timestamptz ELSE now() END \
               FROM generate_series(1, 100000) g; \
             INSERT INTO dead_letters (fingerprint, session_id, routing_key, reason, kind, \
               attempts, first_failure_at, last_failure_at, payload) \
               SELECT sha256(g::text::bytea), 'vs_' || (g % 40000 + 1), 'k', 'r', \
                 'unparseable', 4, now(), now(), 'x'::bytea \
               FROM generate_series(1, 20000) g; \
             ANALYZE; \
             SET plan_cache_mode = force_generic_plan",
        )
        .await
        .unwrap();
    for (index, (name, sql, types)) in worker::store::LOOKUPS.iter().enumerate() {
        let prepared = format!("lookup_{index}");
        client
            .batch_execute(&format!(
                "PREPARE {prepared}({}) AS {sql}",
                types.join(", ")
            ))
            .await
            .unwrap();
        let arguments = vec!["'{}'"; types.len()].join(", ");
        let row = client
            .query_one(
                &format!("EXPLAIN (FORMAT JSON) EXECUTE {prepared}({arguments})"),
                &[],
            )
            .await
            .unwrap();
        let plan: serde_json::Value = row.get(0);
        let mut whole_table = Vec::new();
        scans_of_whole_tables(&plan[0]["Plan"], &mut whole_table);
        assert!(
            whole_table.is_empty(),
            "\"{name}\" reads a whole table ({whole_table:?}):\n{plan:#}"
        );
    }
}

/// The nodes of `plan` that read a whole table or a whole index.
fn scans_of_whole_tables(plan: &serde_json::Value, found: &mut Vec<String>) {
    let node = plan["Node Type"].as_str().unwrap_or_default();
    let relation = plan["Relation Name"]
        .as_str()
        .or(plan["Index Name"].as_str())
        .unwrap_or_default();
    let index_scan = matches!(node, "Index Scan" | "Index Only Scan" | "Bitmap Index Scan");
    if node == "Seq Scan" || (index_scan && plan.get("Index Cond").is_none()) {
        found.push(format!("{node} on {relation}"));
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        scans_of_whole_tables(child, found);
    }
}
