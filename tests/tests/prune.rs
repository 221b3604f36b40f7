//! `idvctl prune` on a real database whose rows the worker's own store
//! made, dated back with SQL: what is past the age goes, in batches; what
//! deduplication, the attempt count and a pending e-mail still read stays,
//! so that the record after a new event is the one an unpruned twin makes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use clap::Parser;
use idv_tests::database::TestDatabase;
use idv_tests::worker_world::{self, EVERY_SINK, event, failed, session, unique};
use serde_json::Value;
use shared::config::Env;
use tokio_postgres::Client;
use worker::ctl::{CtlSettings, UsageError};
use worker::settings::Settings;
use worker::store::{Applied, Store};

/// `idvctl prune`'s command line.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    prune: worker::ctl::prune::Prune,
}

/// `idvctl prune args… --json` against `db`: its report, or its error.
async fn prune(db: &TestDatabase, args: &[&str]) -> anyhow::Result<Value> {
    let line = ["prune"].iter().chain(args).chain(&["--json"]).copied();
    let cli = Cli::try_parse_from(line)?;
    let settings = CtlSettings::from_env(&Env::from_pairs([("DATABASE_URL", db.url.as_str())]))?;
    let output = worker::ctl::prune::run(&settings, &cli.prune).await?;
    Ok(serde_json::from_str(&output)?)
}

/// A database with the worker's schema and store; e-mail configured, so
/// that e-mail rows exist (nothing is sent: no dispatcher runs).
struct World {
    db: TestDatabase,
    settings: Settings,
    store: Store,
    client: Client,
}

impl World {
    async fn new() -> Self {
        let db = TestDatabase::new().await;
        let settings = worker_world::settings(None, &db, &EVERY_SINK[2..4]);
        let store = worker_world::store(&settings).await;
        let client = db.client().await;
        Self {
            db,
            settings,
            store,
            client,
        }
    }

    /// Applies each body in its own batch, received now, as the worker
    /// would; returns the outcomes.
    async fn apply(&self, bodies: &[Vec<u8>]) -> Vec<Applied> {
        let mut outcomes = Vec::new();
        for body in bodies {
            let event =
                worker::incoming::parse(body, worker::consume::now_ms(), &self.settings).unwrap();
            let mut result = self.store.apply(&[&event]).await.unwrap();
            outcomes.push(result.remove(0).unwrap().applied);
        }
        outcomes
    }

    async fn execute(&self, sql: &str, param: &str) -> u64 {
        self.client.execute(sql, &[&param]).await.expect(sql)
    }

    /// Ids (or keys) of `sql`'s first column, sorted.
    async fn ids(&self, sql: &str, like: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .client
            .query(sql, &[&like])
            .await
            .expect(sql)
            .iter()
            .map(|row| row.get(0))
            .collect();
        ids.sort();
        ids
    }

    async fn count(&self, table: &str) -> i64 {
        self.client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }
}

/// The names of one story, under a unique prefix `p`.
struct Names {
    p: String,
}

impl Names {
    fn new() -> Self {
        Self { p: unique("p") }
    }
    fn user(&self, n: u8) -> String {
        format!("user_{}{n}", self.p)
    }
    fn session(&self, n: u8) -> String {
        format!("vs_{}{n}", self.p)
    }
    fn event(&self, name: &str) -> String {
        format!("evt_{}{name}", self.p)
    }
}

const T: i64 = 1_767_225_600;

/// Four people, every event of the first three received 40 days ago:
///
/// - 1: session 1 processing, a failure (counted), processing, verified;
///   its outbox rows sent, superseded or skipped;
/// - 2: session 2, a failure and processing; its retry e-mail failed (an
///   operator may retry it: it reads the address from the payloads);
/// - 3: session 3, three failures: manual review; its rows sent, its limit
///   rows sent but the e-mail (a subject-level row), which failed;
/// - 4: session 4, processing and verified, received 2 days ago (within
///   Stripe's retries); its rows sent then.
///
/// Plus one row pending (with an old `done_at`, which no pending row has:
/// only its status keeps it) and dead letters: two replayed 40 days ago,
/// one replayed a day ago, one never replayed.
async fn story(world: &World, n: &Names) -> Vec<Vec<u8>> {
    let ok = |s: u8, id: &str, kind: &str, at: i64| {
        event(
            &n.event(id),
            kind,
            at,
            session(&n.session(s), kind, Some(&n.user(s)), None),
        )
    };
    let fail = |s: u8, id: &str, at: i64| {
        failed(
            &n.event(id),
            &n.session(s),
            &n.user(s),
            at,
            "document_expired",
        )
    };
    let bodies = vec![
        ok(1, "e1", "processing", T),
        fail(1, "e2", T + 1),
        ok(1, "e3", "processing", T + 2),
        ok(1, "e4", "verified", T + 3),
        fail(2, "f1", T),
        ok(2, "f2", "processing", T + 1),
        fail(3, "g1", T),
        fail(3, "g2", T + 1),
        fail(3, "g3", T + 2),
        ok(4, "y1", "processing", T),
        ok(4, "y2", "verified", T + 1),
    ];
    world.apply(&bodies).await;
    let like = format!("%{}%", n.p);
    world
        .execute(
            "UPDATE events SET received_at = now() - interval '40 days' \
             WHERE session_id LIKE $1 AND session_id NOT LIKE '%4'",
            &like,
        )
        .await;
    world
        .execute(
            "UPDATE events SET received_at = now() - interval '2 days' \
             WHERE session_id LIKE $1 AND session_id LIKE '%4'",
            &like,
        )
        .await;
    // What the dispatcher would have made of the rows.
    let mark = |status: &'static str, age: &'static str, key: String| async move {
        let sql = format!(
            "UPDATE outbox SET status = '{status}', done_at = now() - interval '{age}' \
             WHERE idempotency_key = $1"
        );
        assert_eq!(world.execute(&sql, &key).await, 1, "{key}");
    };
    let (s1, s2, s3, s4) = (n.session(1), n.session(2), n.session(3), n.session(4));
    let (e2, f1) = (n.event("e2"), n.event("f1"));
    mark(
        "sent",
        "40 days",
        format!("{s1}:requires_input:{e2}:outcome_message"),
    )
    .await;
    mark(
        "skipped",
        "40 days",
        format!("{s1}:requires_input:{e2}:notify_user_retry"),
    )
    .await;
    mark(
        "superseded",
        "40 days",
        format!("{s1}:verified:outcome_message"),
    )
    .await;
    mark(
        "sent",
        "40 days",
        format!("{s1}:verified:notify_user_verified"),
    )
    .await;
    mark(
        "sent",
        "40 days",
        format!("{s2}:requires_input:{f1}:outcome_message"),
    )
    .await;
    mark(
        "failed",
        "40 days",
        format!("{s2}:requires_input:{f1}:notify_user_retry"),
    )
    .await;
    for g in ["g1", "g2", "g3"] {
        let g = n.event(g);
        for kind in ["outcome_message", "notify_user_retry"] {
            mark("sent", "40 days", format!("{s3}:requires_input:{g}:{kind}")).await;
        }
    }
    let u3 = n.user(3);
    mark(
        "sent",
        "40 days",
        format!("{u3}:manual_review:outcome_message"),
    )
    .await;
    // A subject-level e-mail: its address comes from any of the subject's sessions.
    mark(
        "failed",
        "40 days",
        format!("{u3}:manual_review:notify_user_alternative"),
    )
    .await;
    mark("sent", "1 day", format!("{s4}:verified:outcome_message")).await;
    mark(
        "sent",
        "1 day",
        format!("{s4}:verified:notify_user_verified"),
    )
    .await;
    // Not realistic (a pending row has no done_at), so that only its status keeps it.
    world
        .execute(
            "INSERT INTO outbox (kind, idempotency_key, subject_key, session_id, payload, done_at) \
             VALUES ('outcome_message', $1 || ':pending', NULL, NULL, '{}', now() - interval '40 days')",
            &n.p,
        )
        .await;
    for (name, replayed) in [
        ("dl1", Some("40 days")),
        ("dl2", Some("41 days")),
        ("dl3", Some("1 day")),
        ("dl4", None),
    ] {
        let replayed_at =
            replayed.map_or("NULL".to_owned(), |age| format!("now() - interval '{age}'"));
        let sql = format!(
            "INSERT INTO dead_letters (fingerprint, event_id, routing_key, reason, kind, attempts, \
             first_failure_at, last_failure_at, dead_lettered_at, replayed_at, payload) \
             VALUES (convert_to($1, 'UTF8'), $1, 'idv.events', 'unparseable', 'unparseable', 4, \
             now() - interval '50 days', now() - interval '50 days', now() - interval '50 days', \
             {replayed_at}, '\\x7b7d')"
        );
        world.execute(&sql, &n.event(name)).await;
    }
    bodies
}

/// What [`story`] leaves after a prune at 35 days.
fn expected_report(dry_run: bool) -> Value {
    serde_json::json!({
        "dry_run": dry_run,
        // e1, e3, e4 (f2 is kept for the failed e-mail; y* are young)
        "inbox_rows_deleted": 3,
        // e2 (f1's and g*'s payloads are kept for the failed e-mails)
        "inbox_payloads_erased": 1,
        // s1's four, s2's outcome message, s3's six
        "outbox_rows_deleted": 11,
        "dead_letters_deleted": 2,
        // e2, f1, g1, g2, g3 counted; f1, f2, g1, g2, g3 read by a failed e-mail
        "inbox_rows_kept": {"counted_failures": 5, "payloads_for_an_email": 5},
    })
}

fn counts(report: &Value) -> Value {
    let mut report = report.clone();
    let object = report.as_object_mut().unwrap();
    for field in ["older_than", "cutoff"] {
        assert!(object.remove(field).is_some(), "{field} in {object:?}");
    }
    report
}

/// Every row of the tables a prune touches, as text, for "nothing changed".
async fn everything(world: &World) -> Vec<String> {
    let mut rows = Vec::new();
    for table in ["events", "outbox", "dead_letters"] {
        let sql = format!("SELECT t::text FROM {table} t ORDER BY 1");
        for row in world.client.query(&sql, &[]).await.unwrap() {
            rows.push(row.get(0));
        }
    }
    rows
}

#[tokio::test]
async fn a_dry_run_counts_what_would_go_and_changes_nothing() {
    let world = World::new().await;
    let n = Names::new();
    story(&world, &n).await;
    let before = everything(&world).await;
    let report = prune(&world.db, &["--older-than", "35d", "--dry-run"])
        .await
        .unwrap();
    assert_eq!(counts(&report), expected_report(true));
    assert_eq!(report["older_than"], "35d");
    assert_eq!(everything(&world).await, before, "a dry run changed rows");
}

#[tokio::test]
async fn what_is_past_its_use_goes_in_batches_and_what_is_still_read_stays() {
    let world = World::new().await;
    let n = Names::new();
    story(&world, &n).await;
    // Batches of 2: the inbox rows, the outbox rows and the dead letters
    // are more than that.
    let report = prune(
        &world.db,
        &["--older-than", "35d", "--yes", "--batch-size", "2"],
    )
    .await
    .unwrap();
    assert_eq!(counts(&report), expected_report(false));

    let like = format!("%{}%", n.p);
    let events = world
        .ids(
            "SELECT id || CASE WHEN payload IS NULL THEN ' erased' ELSE '' END \
             FROM events WHERE id LIKE $1",
            &like,
        )
        .await;
    let e = |name: &str| n.event(name);
    let mut expected: Vec<String> = vec![
        format!("{} erased", e("e2")),
        e("f1"),
        e("f2"),
        e("g1"),
        e("g2"),
        e("g3"),
        e("y1"),
        e("y2"),
    ];
    expected.sort();
    assert_eq!(events, expected, "inbox rows kept");

    let outbox = world
        .ids(
            "SELECT idempotency_key || ' ' || status FROM outbox WHERE idempotency_key LIKE $1",
            &like,
        )
        .await;
    let (s2, s4, u3) = (n.session(2), n.session(4), n.user(3));
    let mut expected = vec![
        format!("{s2}:requires_input:{}:notify_user_retry failed", e("f1")),
        format!("{u3}:manual_review:outcome_message sent"),
        format!("{u3}:manual_review:notify_user_alternative failed"),
        format!("{s4}:verified:outcome_message sent"),
        format!("{s4}:verified:notify_user_verified sent"),
        format!("{}:pending pending", n.p),
    ];
    expected.sort();
    assert_eq!(outbox, expected, "outbox rows kept");

    let dead = world
        .ids(
            "SELECT event_id FROM dead_letters WHERE event_id LIKE $1",
            &like,
        )
        .await;
    assert_eq!(dead, [e("dl3"), e("dl4")], "dead letters kept");

    // Nothing is left to prune.
    let again = prune(&world.db, &["--older-than", "35d", "--yes"])
        .await
        .unwrap();
    for field in [
        "inbox_rows_deleted",
        "inbox_payloads_erased",
        "outbox_rows_deleted",
        "dead_letters_deleted",
    ] {
        assert_eq!(again[field], 0, "{field}: {again}");
    }
}

/// The tables the platform reads, as a new event leaves them.
async fn record_after_new_events(world: &World, n: &Names) -> Value {
    let new = vec![
        // Person 1 fails on a new session: two counted failures in all.
        failed(
            &n.event("n1"),
            &format!("{}b", n.session(1)),
            &n.user(1),
            T + 100,
            "selfie_face_mismatch",
        ),
        // Person 3, in manual review, starts a new session.
        event(
            &n.event("n3"),
            "processing",
            T + 100,
            session(
                &format!("{}b", n.session(3)),
                "processing",
                Some(&n.user(3)),
                None,
            ),
        ),
        // Person 2 fails again: two counted failures.
        failed(
            &n.event("n2"),
            &n.session(2),
            &n.user(2),
            T + 100,
            "document_expired",
        ),
    ];
    let outcomes = world.apply(&new).await;
    assert!(
        outcomes.iter().all(|o| *o == Applied::Applied),
        "{outcomes:?}"
    );
    let like = format!("%{}%", n.p);
    let snapshot = worker_world::snapshot(&world.client, &like).await;
    let pending = worker_world::query_json(
        &world.client,
        "SELECT kind, idempotency_key, payload FROM outbox \
         WHERE idempotency_key LIKE $1 AND status = 'pending' ORDER BY idempotency_key",
        &like,
    )
    .await;
    serde_json::json!({
        "subjects": snapshot["subjects"],
        "sessions": snapshot["sessions"],
        "pending_actions": pending,
    })
}

#[tokio::test]
async fn the_record_after_a_new_event_is_the_one_an_unpruned_twin_makes() {
    let (pruned, twin) = (World::new().await, World::new().await);
    let n = Names::new();
    story(&pruned, &n).await;
    story(&twin, &n).await;
    prune(&pruned.db, &["--older-than", "35d", "--yes"])
        .await
        .unwrap();
    let after_prune = record_after_new_events(&pruned, &n).await;
    let unpruned = record_after_new_events(&twin, &n).await;
    assert_eq!(after_prune, unpruned);
    // And the counts really come from the kept failures.
    let subjects = after_prune["subjects"].as_array().unwrap();
    let counters = |user: String| {
        subjects
            .iter()
            .find(|s| s["key"] == user.as_str())
            .map(|s| (s["failed_attempts"].clone(), s["status"].clone()))
    };
    assert_eq!(counters(n.user(1)).map(|c| c.0), Some(2.into()));
    assert_eq!(counters(n.user(2)).map(|c| c.0), Some(2.into()));
    assert_eq!(
        counters(n.user(3)),
        Some((3.into(), "manual_review".into()))
    );
}

#[tokio::test]
async fn an_event_redelivered_within_stripes_retries_is_still_a_duplicate() {
    let world = World::new().await;
    let n = Names::new();
    let bodies = story(&world, &n).await;
    prune(&world.db, &["--older-than", "31d", "--yes"])
        .await
        .unwrap();
    // y1 and y2 were received 2 days ago: Stripe may still send them.
    let young: Vec<Vec<u8>> = bodies[9..].to_vec();
    assert_eq!(
        world.apply(&young).await,
        [Applied::Duplicate, Applied::Duplicate]
    );
    // A counted failure received 40 days ago is kept, so also a duplicate;
    // a pruned one is recorded again (stale: its session has moved on).
    assert_eq!(world.apply(&bodies[1..2]).await, [Applied::Duplicate]);
    assert_eq!(world.apply(&bodies[0..1]).await, [Applied::Stale]);
}

#[tokio::test]
async fn an_age_under_31_days_and_a_bad_batch_size_are_usage_errors() {
    let world = World::new().await;
    for args in [
        &["--older-than", "2d", "--yes"][..],
        &["--older-than", "30days 23h", "--dry-run"],
        &["--older-than", "35d", "--yes", "--batch-size", "0"],
    ] {
        let error = prune(&world.db, args).await.unwrap_err();
        assert!(
            error.downcast_ref::<UsageError>().is_some(),
            "{args:?}: exit 2 expected, got {error:#}"
        );
    }
    let error = prune(&world.db, &["--older-than", "2d", "--yes"])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("3 days"), "{error}");
    // Without --yes, and no terminal to ask on (as under cron): refused.
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let error = prune(&world.db, &["--older-than", "35d"])
            .await
            .unwrap_err();
        assert!(
            error.downcast_ref::<UsageError>().is_some(),
            "no --yes: {error:#}"
        );
        assert!(error.to_string().contains("--yes"), "{error}");
    }
    assert!(
        prune(&world.db, &["--older-than", "31d", "--dry-run"])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn more_rows_than_the_batch_size_are_all_pruned() {
    let world = World::new().await;
    let n = Names::new();
    let bodies: Vec<Vec<u8>> = (0..23)
        .map(|i| {
            event(
                &n.event(&format!("b{i:02}")),
                "processing",
                T + i,
                session(&n.session(9), "processing", Some(&n.user(9)), None),
            )
        })
        .collect();
    world.apply(&bodies).await;
    let like = format!("%{}%", n.p);
    world
        .execute(
            "UPDATE events SET received_at = now() - interval '40 days' WHERE id LIKE $1",
            &like,
        )
        .await;
    let report = prune(
        &world.db,
        &["--older-than", "35d", "--yes", "--batch-size", "5"],
    )
    .await
    .unwrap();
    assert_eq!(report["inbox_rows_deleted"], 23, "{report}");
    assert_eq!(world.count("events").await, 0);
}
