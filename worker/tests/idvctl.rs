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
        "applied: V1__initial_schema, V2__subject_key_rank, V3__policy_decides_and_placeholders_go"
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
