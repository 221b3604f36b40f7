//! The `idvctl` binary as an operator runs it: exit 0 with the record in
//! text or JSON, 1 when it is not found or a dependency is unreachable, 2
//! for bad input or a bad setting (naming the variable, never echoing a
//! password), and a quiet exit when the reader of its output goes away.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

mod support;

use std::process::Output;

use serde_json::Value;
use shared::config::Env;
use support::*;
use worker::settings::Settings;
use worker::store::{Rules, Store};

const SUBJECT: &str = "user_8f14e45fceea";
const SESSION: &str = "vs_1Sk3Gh2eZvKYlo2CqR8tNw4P";

/// Nothing listens there: a command that got that far exits 1, not 2.
const UNREACHABLE_DATABASE: &str = "postgres://postgres@127.0.0.1:1/idv";

/// `idvctl args…` against `database_url`, with `extra` variables.
async fn idvctl(database_url: &str, extra: &[(&str, &str)], args: &[&str]) -> Output {
    let amqp_url = amqp_url();
    let mut vars = vec![("DATABASE_URL", database_url), ("AMQP_URL", &amqp_url)];
    vars.extend_from_slice(extra);
    finish(command(IDVCTL, &vars).args(args)).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Exit code `code`, stderr saying `says` and holding no password.
fn assert_exit(output: &Output, code: i32, says: &str, case: &str) {
    let stderr = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{case}: {stderr}");
    assert!(stderr.contains(says), "{case}: says {says:?}: {stderr}");
    assert!(
        !stderr.contains(PASSWORD),
        "{case}: echoes a password: {stderr}"
    );
}

/// A database migrated by `idvctl migrate`, holding one subject with one
/// failed submission: the `processing` and `document_expired` fixtures,
/// applied by the worker's own store.
async fn seeded() -> TestDb {
    let db = TestDb::named();
    let output = idvctl(&db.url, &[], &["migrate"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output).trim(),
        "applied: V1__initial_schema, V2__subject_key_rank, V3__policy_decides_and_placeholders_go, \
         V4__outbox_dispatch, V5__dead_letters"
    );
    let settings = Settings::from_env(&Env::from_pairs([("DATABASE_URL", db.url.as_str())]))
        .expect("valid settings");
    let pool = worker::store::connect_pool(&settings.database_url, 1)
        .await
        .unwrap();
    let store = Store::new(pool, Rules::from_settings(&settings));
    for name in [
        "evt_processing.json",
        "evt_requires_input_document_expired.json",
    ] {
        let path = format!("{}/../shared/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let body = std::fs::read(&path).unwrap();
        let event = worker::incoming::parse(&body, 0, &settings).unwrap();
        let outcomes = store.apply(&[&event]).await.unwrap();
        assert!(outcomes[0].is_ok(), "{name} applies: {outcomes:?}");
    }
    db
}

#[tokio::test]
async fn migrate_twice_then_show_the_record_as_text() {
    let db = seeded().await;
    let again = idvctl(&db.url, &[], &["migrate"]).await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(
        stdout(&again).trim(),
        "schema up to date; no migration applied"
    );

    let extra = [("IDV_MAX_FAILED_ATTEMPTS", "5")];
    let subject = idvctl(&db.url, &extra, &["subject", "show", SUBJECT]).await;
    assert_eq!(subject.status.code(), Some(0), "{}", stderr(&subject));
    let text = stdout(&subject);
    for line in [
        format!("subject {SUBJECT}"),
        "  status: requires_input".to_owned(),
        "  failed attempts: 1 of 5".to_owned(),
        "  last error: document_expired".to_owned(),
        format!("  decided by: {SESSION}"),
        format!("  session {SESSION}"),
        "    status: requires_input".to_owned(),
        "    last event: evt_1Sk3Hr2eZvKYlo2CdX7mWq2b (created 1767225960)".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
    }

    let session = idvctl(&db.url, &[], &["session", "show", SESSION]).await;
    assert_eq!(session.status.code(), Some(0), "{}", stderr(&session));
    let text = stdout(&session);
    for line in [
        format!("session {SESSION}"),
        format!("  subject: {SUBJECT}"),
        "  status: requires_input".to_owned(),
        "  last error: document_expired".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
    }
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn show_json_has_the_documented_fields() {
    let db = seeded().await;
    let extra = [("IDV_MAX_FAILED_ATTEMPTS", "5")];
    let output = idvctl(&db.url, &extra, &["subject", "show", SUBJECT, "--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let subject: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(
        keys(&subject),
        [
            "actions",
            "decided_by_session",
            "failed_attempts",
            "key",
            "last_error_code",
            "max_attempts",
            "sessions",
            "status"
        ]
    );
    assert_eq!(subject["key"], SUBJECT);
    assert_eq!(subject["status"], "requires_input");
    assert_eq!(subject["failed_attempts"], 1);
    assert_eq!(
        subject["max_attempts"], 5,
        "IDV_MAX_FAILED_ATTEMPTS is read"
    );
    assert_eq!(subject["last_error_code"], "document_expired");
    assert_eq!(subject["decided_by_session"], SESSION);
    assert_eq!(subject["sessions"].as_array().map(Vec::len), Some(1));

    let output = idvctl(&db.url, &[], &["session", "show", SESSION, "--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let session: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(
        keys(&session),
        [
            "id",
            "last_error_code",
            "last_error_reason",
            "last_event_created",
            "last_event_id",
            "redacted",
            "status",
            "subject"
        ]
    );
    assert_eq!(session["id"], SESSION);
    assert_eq!(session["subject"], SUBJECT);
    assert_eq!(session["status"], "requires_input");
    assert_eq!(session["last_error_code"], "document_expired");
    assert_eq!(
        session["last_error_reason"],
        "The provided identity document has expired."
    );
    assert_eq!(session["last_event_id"], "evt_1Sk3Hr2eZvKYlo2CdX7mWq2b");
    assert_eq!(session["last_event_created"], 1_767_225_960);
    assert_eq!(session["redacted"], false);
    assert_eq!(subject["sessions"][0], session, "the same view in both");
}

#[tokio::test]
async fn not_found_exits_1() {
    let db = seeded().await;
    for args in [
        ["subject", "show", "user_nobody"],
        ["session", "show", "vs_nobody"],
    ] {
        let output = idvctl(&db.url, &[], &args).await;
        assert_exit(&output, 1, "no s", &format!("{args:?}"));
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

/// Bad input is refused before any connection: the database here is
/// unreachable, so reaching it would exit 1, not 2.
#[tokio::test]
async fn bad_input_exits_2() {
    for (args, says) in [
        (&["subject", "show", ""][..], "subject key"),
        (&["subject", "show", "   "][..], "subject key"),
        (
            &["session", "show", "not_a_vs_id"][..],
            "VerificationSession id",
        ),
        (&["frobnicate"][..], "unrecognized subcommand"),
        (
            &["subject", "show", "user_1", "--yaml"][..],
            "unexpected argument",
        ),
        (&["subject", "show"][..], "required"),
    ] {
        let output = idvctl(UNREACHABLE_DATABASE, &[], args).await;
        assert_exit(&output, 2, says, &format!("{args:?}"));
    }
}

#[tokio::test]
async fn a_bad_setting_exits_2_naming_it_without_echoing_a_password() {
    let bad_database = format!("postgres://postgres:{PASSWORD}@127.0.0.1:port/idv");
    let bad_amqp = format!("amqp://guest:{PASSWORD}@127.0.0.1:port/%2f");
    let no_scheme = format!("guest:{PASSWORD}@127.0.0.1/%2f");
    for (variable, value) in [
        ("DATABASE_URL", bad_database.as_str()),
        ("DATABASE_URL", "mysql://root@127.0.0.1/idv"),
        ("AMQP_URL", bad_amqp.as_str()),
        ("AMQP_URL", no_scheme.as_str()),
        ("RUST_LOG", "info,lapin=loud"),
        ("IDV_MAX_FAILED_ATTEMPTS", "0"),
        ("IDV_MAX_FAILED_ATTEMPTS", "many"),
        ("AMQP_PREFIX", "a b"),
    ] {
        for args in [&["subject", "show", SUBJECT][..], &["migrate"][..]] {
            let output = idvctl(UNREACHABLE_DATABASE, &[(variable, value)], args).await;
            let says = format!("invalid {variable}: expected ");
            assert_exit(&output, 2, &says, &format!("{variable} {args:?}"));
        }
    }
}

#[tokio::test]
async fn unreachable_dependencies_exit_1_naming_the_variable_without_the_password() {
    let database = format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/idv");
    for args in [&["subject", "show", SUBJECT][..], &["migrate"][..]] {
        let output = idvctl(&database, &[], args).await;
        assert_exit(&output, 1, "DATABASE_URL", &format!("{args:?}"));
    }
    let broker = format!("amqp://guest:{PASSWORD}@127.0.0.1:1/%2f");
    let output = idvctl(&database, &[("AMQP_URL", &broker)], &["topology"]).await;
    assert_exit(&output, 1, "AMQP_URL", "topology");
}

#[tokio::test]
async fn topology_declares_under_the_prefix_and_exits_0() {
    let prefix = TestPrefix::new();
    let extra = [("AMQP_PREFIX", prefix.prefix.as_str())];
    let output = idvctl(UNREACHABLE_DATABASE, &extra, &["topology"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(&format!("queues {}idv.events,", prefix.prefix)),
        "{}",
        stdout(&output)
    );
}

/// `idvctl … --json | head`: the reader is gone before idvctl writes (its
/// end of the pipe is closed before idvctl starts), so every write fails
/// with a broken pipe. That is a quiet, successful exit, not a panic.
#[tokio::test]
async fn a_reader_that_went_away_is_a_quiet_exit() {
    let db = seeded().await;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let amqp_url = amqp_url();
    let mut command = command(
        IDVCTL,
        &[("DATABASE_URL", &db.url), ("AMQP_URL", &amqp_url)],
    );
    // Spawned, not `output()`: tokio's `output()` would pipe stdout itself.
    let child = command
        .args(["subject", "show", SUBJECT, "--json"])
        .stdout(writer)
        .spawn()
        .unwrap();
    drop(command); // the test's copy of the write end
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("idvctl exits")
        .unwrap();
    assert!(output.stdout.is_empty(), "stdout went to the closed pipe");
    let stderr = stderr(&output);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.to_lowercase().contains("broken pipe"), "{stderr}");
    assert_eq!(
        output.status.code(),
        Some(0),
        "exited by itself, 0: {stderr}"
    );
}

#[tokio::test]
async fn a_closed_stderr_keeps_the_exit_code() {
    let amqp_url = amqp_url();
    for (args, code) in [
        (&["session", "show", "not_a_vs_id"][..], 2),
        (&["subject", "show", "user_nobody"][..], 1),
    ] {
        let mut child = command(
            IDVCTL,
            &[
                ("DATABASE_URL", UNREACHABLE_DATABASE),
                ("AMQP_URL", &amqp_url),
            ],
        )
        .args(args)
        .spawn()
        .unwrap();
        // The reader of its stderr is gone: writing there fails with EPIPE.
        drop(child.stderr.take());
        let status = tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("idvctl exits")
            .unwrap();
        assert_eq!(status.code(), Some(code), "{args:?} with stderr closed");
    }
}

/// The rows [`with_outbox`] writes, oldest first, ids 1 to 7. Row 1 is
/// failed but still carries a stale claim; row 7 is being performed.
#[rustfmt::skip]
const SEEDED_ROWS: [Seed; 7] = [
    ("outcome_message", "failed", 5, "user_a", "vs_a1", "2000-01-01", "2000-01-02", "broker refused", "stale-claim"),
    ("notify_user_retry", "failed", 3, "user_b", "vs_b1", "2000-01-01", "2000-01-02", "smtp 550", ""),
    ("cancel_stripe_session", "pending", 0, "user_a", "vs_a1", "infinity", "", "waiting for requires_input", ""),
    ("outcome_webhook", "sent", 1, "user_a", "vs_a1", "2000-01-01", "2000-01-02", "", ""),
    ("notify_user_verified", "superseded", 1, "user_b", "vs_b1", "2000-01-01", "2000-01-02", "session canceled", ""),
    ("notify_user_alternative", "skipped", 1, "user_b", "", "2000-01-01", "2000-01-02", "no e-mail address", ""),
    ("outcome_message", "pending", 2, "user_c", "vs_c1", "2000-01-01", "", "broker unreachable", "in-flight"),
];

/// A database migrated by `idvctl migrate` (no events) holding [`SEEDED_ROWS`].
async fn with_outbox() -> (TestDb, tokio_postgres::Client) {
    let db = TestDb::named();
    let output = idvctl(&db.url, &[], &["migrate"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let client = db.client().await;
    let ids = seed_outbox(&client, &SEEDED_ROWS).await;
    assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7], "a fresh table numbers from 1");
    (db, client)
}

/// The ids in the first column of a table, under its header.
fn table_ids(text: &str) -> Vec<i64> {
    text.lines()
        .skip(1)
        .map(|line| {
            line.split_whitespace()
                .next()
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("an id first in {line:?} of:\n{text}"))
        })
        .collect()
}

fn json_ids(output: &Output) -> Vec<i64> {
    let rows: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    rows.as_array()
        .expect("an array")
        .iter()
        .map(|row| row["id"].as_i64().expect("an id"))
        .collect()
}

#[tokio::test]
async fn outbox_list_filters_by_status_and_kind_newest_first() {
    let (db, _client) = with_outbox().await;
    for (args, ids) in [
        (&[][..], &[7, 6, 5, 4, 3, 2, 1][..]),
        (&["--status", "failed"][..], &[2, 1][..]),
        (&["--status", "pending"][..], &[7, 3][..]),
        (&["--status", "sent"][..], &[4][..]),
        (&["--kind", "outcome_message"][..], &[7, 1][..]),
        (
            &["--kind", "outcome_message", "--status", "failed"][..],
            &[1][..],
        ),
        (&["--limit", "2"][..], &[7, 6][..]),
        (&["--status", "failed", "--limit", "1"][..], &[2][..]),
    ] {
        let mut all = vec!["outbox", "list"];
        all.extend_from_slice(args);
        let output = idvctl(&db.url, &[], &all).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        let text = stdout(&output);
        assert!(
            !text.contains(PAYLOAD_TEXT),
            "{args:?} shows a payload:\n{text}"
        );
        assert_eq!(table_ids(&text), ids, "{args:?}:\n{text}");

        all.push("--json");
        let output = idvctl(&db.url, &[], &all).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(json_ids(&output), ids, "{args:?} --json");
    }

    let output = idvctl(
        &db.url,
        &[],
        &["outbox", "list", "--kind", "compare_verified_outputs"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "no outbox rows");
}

#[tokio::test]
async fn outbox_list_is_an_aligned_table_that_says_when() {
    let (db, _client) = with_outbox().await;
    let output = idvctl(&db.url, &[], &["outbox", "list"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    let header = lines[0];
    let columns = [
        "ID",
        "KIND",
        "STATUS",
        "ATTEMPTS",
        "DUE/DONE",
        "SUBJECT",
        "SESSION",
        "LAST_ERROR",
    ];
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        columns,
        "{text}"
    );
    // Each column starts where its header does, in every line.
    for column in &columns[1..] {
        let at = header.find(column).unwrap();
        for line in &lines[1..] {
            let (before, cell) = line.split_at(at);
            assert!(
                before.ends_with(' ') && !cell.starts_with(' '),
                "{column} at {at} in {line:?}:\n{text}"
            );
        }
    }
    let row = |id: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        row("1"),
        "1 outcome_message failed 5 done 2000-01-02T00:00:00Z user_a vs_a1 broker refused"
    );
    assert_eq!(
        row("3"),
        "3 cancel_stripe_session pending 0 due on next event user_a vs_a1 waiting for requires_input"
    );
    assert_eq!(
        row("6"),
        "6 notify_user_alternative skipped 1 done 2000-01-02T00:00:00Z user_b - no e-mail address"
    );
    assert_eq!(
        row("7"),
        "7 outcome_message pending 2 due 2000-01-01T00:00:00Z user_c vs_c1 broker unreachable"
    );
}

const ROW_FIELDS: [&str; 11] = [
    "attempts",
    "created_at",
    "done_at",
    "due_at",
    "id",
    "idempotency_key",
    "kind",
    "last_error",
    "session_id",
    "status",
    "subject_key",
];

#[tokio::test]
async fn outbox_list_json_has_the_documented_fields_and_never_the_payload() {
    let (db, _client) = with_outbox().await;
    let output = idvctl(&db.url, &[], &["outbox", "list", "--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(!text.contains(PAYLOAD_TEXT), "{text}");
    assert!(!text.contains("payload"), "{text}");
    let rows: Value = serde_json::from_str(&text).expect("JSON on stdout");
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 7);
    for row in rows {
        assert_eq!(keys(row), ROW_FIELDS, "{row}");
        let created = row["created_at"].as_str().expect("created_at is text");
        assert!(
            created.len() == 20 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
            "UTC as 2026-01-01T00:00:00Z: {created}"
        );
    }
    let failed = &rows[6];
    assert_eq!(failed["id"], 1);
    assert_eq!(failed["kind"], "outcome_message");
    assert_eq!(failed["idempotency_key"], "test-key-0");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempts"], 5);
    assert_eq!(failed["subject_key"], "user_a");
    assert_eq!(failed["session_id"], "vs_a1");
    assert_eq!(failed["due_at"], "2000-01-01T00:00:00Z");
    assert_eq!(failed["done_at"], "2000-01-02T00:00:00Z");
    assert_eq!(failed["last_error"], "broker refused");
    let waiting = &rows[4];
    assert_eq!(waiting["id"], 3);
    assert_eq!(waiting["due_at"], "infinity", "waits for an event");
    assert_eq!(waiting["done_at"], Value::Null);
    let sent = &rows[3];
    assert_eq!(sent["id"], 4);
    assert_eq!(sent["last_error"], Value::Null);
    assert_eq!(rows[1]["session_id"], Value::Null, "a subject's row");

    let output = idvctl(
        &db.url,
        &[],
        &[
            "outbox",
            "list",
            "--json",
            "--kind",
            "compare_verified_outputs",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "[]");
}

/// Checked before any connection (the database here is unreachable, so
/// reaching it would exit 1): nothing is read or changed.
#[tokio::test]
async fn outbox_bad_input_exits_2_naming_the_allowed_values() {
    let kinds = worker::domain::outbox::ActionKind::ALL
        .map(|k| k.as_str().to_owned())
        .join(", ");
    for (args, says) in [
        (
            &["outbox", "list", "--status", "waiting"][..],
            "unknown --status \"waiting\": expected one of pending, sent, superseded, skipped, failed",
        ),
        (
            &["outbox", "list", "--status", "FAILED", "--json"][..],
            "expected one of pending, sent, superseded, skipped, failed",
        ),
        (
            &["outbox", "list", "--kind", "email"][..],
            &format!("unknown --kind \"email\": expected one of {kinds}"),
        ),
        (
            &["outbox", "list", "--kind", "platform_follow_up"][..],
            &format!("expected one of {kinds}"),
        ),
        (
            &["outbox", "list", "--limit", "0"][..],
            "--limit is 1 to 10000",
        ),
        (&["outbox", "list", "--limit", "many"][..], "invalid value"),
        (&["outbox", "retry"][..], "required"),
        (
            &["outbox", "retry", "1", "--all-failed"][..],
            "cannot be used with",
        ),
        (&["outbox", "retry", "one"][..], "invalid value"),
    ] {
        let output = idvctl(UNREACHABLE_DATABASE, &[], args).await;
        assert_exit(&output, 2, says, &format!("{args:?}"));
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    for kind in worker::domain::outbox::ActionKind::ALL {
        assert!(kinds.contains(kind.as_str()));
    }
}

/// The columns a retry resets, for the row `id`.
async fn redriven(client: &tokio_postgres::Client, id: i64) {
    let row = client
        .query_one(
            "SELECT status, attempts, last_error IS NULL, done_at IS NULL, \
                    claimed_until IS NULL, claim_token IS NULL, \
                    due_at BETWEEN now() - interval '1 minute' AND now() \
             FROM outbox WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let status: String = row.get(0);
    let attempts: i32 = row.get(1);
    assert_eq!(status, "pending", "row {id}");
    assert_eq!(attempts, 0, "row {id}");
    for (n, what) in [
        (2, "last_error is NULL"),
        (3, "done_at is NULL"),
        (4, "claimed_until is NULL"),
        (5, "claim_token is NULL"),
        (6, "due now"),
    ] {
        assert!(row.get::<_, bool>(n), "row {id}: {what}");
    }
}

/// The snapshot without the rows `ids`.
fn without(snapshot: &[(i64, Value)], ids: &[i64]) -> Vec<(i64, Value)> {
    snapshot
        .iter()
        .filter(|(id, _)| !ids.contains(id))
        .cloned()
        .collect()
}

#[tokio::test]
async fn outbox_retry_redrives_one_failed_row() {
    let (db, client) = with_outbox().await;
    let before = outbox_snapshot(&client).await;
    let output = idvctl(&db.url, &[], &["outbox", "retry", "1"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output).trim(),
        "re-driven: 1 failed row, now pending and due"
    );
    redriven(&client, 1).await;
    let after = outbox_snapshot(&client).await;
    assert_eq!(
        without(&after, &[1]),
        without(&before, &[1]),
        "only row 1 changed"
    );
    let (_, row) = &after[0];
    assert_eq!(
        row["payload"]["reason"], PAYLOAD_TEXT,
        "the payload is kept"
    );
    assert_eq!(row["idempotency_key"], "test-key-0", "so is the key");

    let output = idvctl(
        &db.url,
        &[],
        &["outbox", "list", "--status", "failed", "--json"],
    )
    .await;
    assert_eq!(
        json_ids(&output),
        [2],
        "the other failed row is still failed"
    );
}

#[tokio::test]
async fn outbox_retry_refuses_a_row_that_is_not_failed_and_changes_nothing() {
    let (db, client) = with_outbox().await;
    let before = outbox_snapshot(&client).await;
    for (id, says) in [
        ("4", "outbox row 4 is sent, not failed"),
        ("5", "outbox row 5 is superseded, not failed"),
        ("6", "outbox row 6 is skipped, not failed"),
        ("3", "outbox row 3 is pending, not failed"),
        ("7", "outbox row 7 is pending, not failed"),
        ("999", "no outbox row 999"),
    ] {
        let output = idvctl(&db.url, &[], &["outbox", "retry", id]).await;
        assert_exit(&output, 1, says, id);
        assert!(output.stdout.is_empty(), "{id}: {}", stdout(&output));
        assert_eq!(
            outbox_snapshot(&client).await,
            before,
            "{id}: nothing changed"
        );
    }
}

#[tokio::test]
async fn outbox_retry_all_failed_redrives_every_failed_row_and_only_those() {
    let (db, client) = with_outbox().await;
    let before = outbox_snapshot(&client).await;
    let output = idvctl(&db.url, &[], &["outbox", "retry", "--all-failed"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output).trim(),
        "re-driven: 2 failed rows, now pending and due"
    );
    redriven(&client, 1).await;
    redriven(&client, 2).await;
    let after = outbox_snapshot(&client).await;
    assert_eq!(
        without(&after, &[1, 2]),
        without(&before, &[1, 2]),
        "the others are as they were"
    );

    let again = idvctl(&db.url, &[], &["outbox", "retry", "--all-failed"]).await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(stdout(&again).trim(), "re-driven: 0 rows (none was failed)");
    assert_eq!(
        outbox_snapshot(&client).await,
        after,
        "nothing left to re-drive"
    );
}

/// Written beside the worker's rows of [`seeded`]: a limit row of the
/// subject (no session), a row of its session written under another key
/// (the session moved), and someone else's row.
#[rustfmt::skip]
const SUBJECT_ROWS: [Seed; 3] = [
    ("notify_user_alternative", "failed", 4, SUBJECT, "", "2000-01-01", "2000-01-02", "smtp refused", ""),
    ("cancel_stripe_session", "pending", 0, "user_moved", SESSION, "infinity", "", "waiting for requires_input", ""),
    ("outcome_message", "failed", 1, "user_someone_else", "vs_someone_else", "2000-01-01", "2000-01-02", "not theirs", ""),
];

/// `subject show` lists the subject's own rows (a limit row names no
/// session), those of its sessions (whoever the row named when written),
/// and no one else's.
#[tokio::test]
async fn subject_show_lists_its_actions() {
    let db = seeded().await;
    let client = db.client().await;
    let worker_rows: Vec<i64> = client
        .query("SELECT id FROM outbox ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(!worker_rows.is_empty(), "the events called for rows");
    let ours = seed_outbox(&client, &SUBJECT_ROWS).await;
    let (limit_row, session_row, other_row) = (ours[0], ours[1], ours[2]);
    let mut expected = worker_rows.clone();
    expected.extend([limit_row, session_row]);

    let output = idvctl(&db.url, &[], &["subject", "show", SUBJECT, "--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        !stdout(&output).contains(PAYLOAD_TEXT),
        "{}",
        stdout(&output)
    );
    let subject: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let actions = subject["actions"].as_array().expect("actions");
    let ids: Vec<i64> = actions.iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, expected, "oldest first, not row {other_row}");
    for action in actions {
        assert_eq!(keys(action), ROW_FIELDS, "{action}");
    }
    let listed = idvctl(&db.url, &[], &["outbox", "list", "--json"]).await;
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("JSON on stdout");
    for action in actions {
        let same = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == action["id"]);
        assert_eq!(same, Some(action), "the same view as outbox list");
    }
    let limit = actions.iter().find(|a| a["id"] == limit_row).unwrap();
    assert_eq!(limit["kind"], "notify_user_alternative");
    assert_eq!(limit["status"], "failed");
    assert_eq!(limit["attempts"], 4);
    assert_eq!(limit["last_error"], "smtp refused");
    assert_eq!(limit["session_id"], Value::Null);
    assert_eq!(limit["done_at"], "2000-01-02T00:00:00Z");

    let output = idvctl(&db.url, &[], &["subject", "show", SUBJECT]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(!text.contains(PAYLOAD_TEXT), "{text}");
    assert!(!text.contains("not theirs"), "{text}");
    for id in &worker_rows {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("  action {id} "))),
            "worker row {id}:\n{text}"
        );
    }
    let block = |id: i64| -> Vec<String> {
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with(&format!("  action {id} ")))
            .unwrap_or_else(|| panic!("action {id} in:\n{text}"));
        lines[at..at + 6].iter().map(|l| (*l).to_owned()).collect()
    };
    assert_eq!(
        block(limit_row),
        [
            format!("  action {limit_row} notify_user_alternative"),
            "    session: -".to_owned(),
            "    status: failed".to_owned(),
            "    attempts: 4".to_owned(),
            "    done: 2000-01-02T00:00:00Z".to_owned(),
            "    last error: smtp refused".to_owned(),
        ],
        "{text}"
    );
    assert_eq!(
        block(session_row),
        [
            format!("  action {session_row} cancel_stripe_session"),
            format!("    session: {SESSION}"),
            "    status: pending".to_owned(),
            "    attempts: 0".to_owned(),
            "    due: on next event".to_owned(),
            "    last error: waiting for requires_input".to_owned(),
        ],
        "{text}"
    );
    assert!(!text.contains(&format!("action {other_row} ")), "{text}");
}
