//! `idvctl dlq list | replay | purge`, run as an operator runs them
//! (`idvctl`'s own `main`, a child process with a clean environment)
//! against the real broker and database: filters take only what they
//! match, a dry run moves nothing and judges as the worker would, a purge
//! asks first, a replay marks a dead letter only once the broker confirmed
//! its copy, and an interrupted or concurrent replay loses nothing and
//! publishes nothing twice that the worker's dedupe cannot absorb.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

#[path = "dlq_cli/support.rs"]
mod support;

#[path = "dlq_cli/replay.rs"]
mod replay;

#[path = "dlq_cli/end_to_end.rs"]
mod end_to_end;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// The documented fields of `dlq list --json`, and nothing else (never
/// the payload).
const LIST_FIELDS: [&str; 13] = [
    "attempts",
    "dead_lettered_at",
    "event_id",
    "event_type",
    "first_failure_at",
    "id",
    "kind",
    "last_failure_at",
    "payload_erased_at",
    "reason",
    "replayed_at",
    "routing_key",
    "session_id",
];

fn ids_of(list: &Value) -> Vec<i64> {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .map(|row| row["id"].as_i64().expect("an id"))
        .collect()
}

#[tokio::test]
async fn list_filters_newest_first_with_the_documented_fields() {
    let world = World::new().await;
    let a = world
        .insert(&Letter::event("evt_la", "verified", "vs_la", 100, "refused").minutes_ago(10))
        .await;
    let mut mismatch = Letter::event("evt_lb", "processing", "vs_lb", 100, "status_mismatch");
    mismatch.reason = "a `x` event carries a session in status `y`".to_owned();
    let b = world.insert(&mismatch).await;
    let mut garbled = Letter::unparseable().minutes_ago(2 * 24 * 60);
    garbled.reason = "line\nbreak\u{1b}[31m red".to_owned();
    let c = world.insert(&garbled).await;
    let d = world
        .insert(&Letter::event("evt_ld", "verified", "vs_ld", 100, "delivery_limit").minutes_ago(1))
        .await;
    world
        .client
        .execute(
            "UPDATE dead_letters SET replayed_at = now() WHERE id = $1",
            &[&d],
        )
        .await
        .unwrap();

    let list = |args: &'static [&'static str]| {
        let world = &world;
        async move {
            let mut all = vec!["dlq", "list", "--json"];
            all.extend_from_slice(args);
            let output = world.idvctl(&all, &[]).await;
            assert_code(&output, 0, &format!("{args:?}"));
            serde_json::from_str::<Value>(&stdout(&output)).unwrap()
        }
    };
    let everything = list(&[]).await;
    assert_eq!(ids_of(&everything), vec![d, b, a, c], "newest first");
    for row in everything.as_array().unwrap() {
        let keys: BTreeSet<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, LIST_FIELDS.into_iter().collect(), "{row}");
    }
    let first = &everything[0];
    assert_eq!(first["event_id"], "evt_ld");
    assert_eq!(first["event_type"], VERIFIED);
    assert_eq!(first["session_id"], "vs_ld");
    assert_eq!(first["kind"], "delivery_limit");
    assert_eq!(first["routing_key"], VERIFIED);
    assert_eq!(first["attempts"], 4);
    assert!(
        first["replayed_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(everything[1]["replayed_at"].is_null());
    assert_eq!(everything[3]["event_id"], Value::Null);

    assert_eq!(ids_of(&list(&["--kind", "refused"]).await), vec![a]);
    assert_eq!(ids_of(&list(&["--type", PROCESSING]).await), vec![b]);
    assert_eq!(
        ids_of(&list(&["--reason", "carries a session"]).await),
        vec![b]
    );
    assert_eq!(ids_of(&list(&["--since", "1h"]).await), vec![d, b, a]);
    assert_eq!(ids_of(&list(&["--limit", "2"]).await), vec![d, b]);
    assert_eq!(
        ids_of(&list(&["--since", "1h", "--type", VERIFIED]).await),
        vec![d, a]
    );
    assert_eq!(
        ids_of(&list(&["--kind", "expired"]).await),
        Vec::<i64>::new()
    );

    // The table: one line per row whatever a reason holds, every column.
    let table = world.idvctl(&["dlq", "list"], &[]).await;
    assert_code(&table, 0, "table");
    let text = stdout(&table);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "a header and four rows:\n{text}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "EVENT_ID",
            "TYPE",
            "SESSION",
            "KIND",
            "REASON",
            "ATTEMPTS",
            "FIRST_FAILURE",
            "LAST_FAILURE",
            "DEAD_LETTERED",
            "REPLAYED"
        ]
    );
    assert!(lines[1].starts_with(&format!("{d} ")), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no escape sequence reaches the terminal"
    );
    assert!(lines[4].contains("line break"), "{text}");
    let empty = world
        .idvctl(&["dlq", "list", "--kind", "expired"], &[])
        .await;
    assert_eq!(stdout(&empty).trim(), "no dead letters");

    for (args, says) in [
        (
            &["dlq", "list", "--limit", "0"][..],
            "--limit is 1 to 10000",
        ),
        (
            &["dlq", "list", "--limit", "10001"][..],
            "--limit is 1 to 10000",
        ),
        (
            &["dlq", "list", "--kind", "refused_typo"][..],
            "unknown --kind",
        ),
        (&["dlq", "list", "--since", "soon"][..], "--since"),
    ] {
        let output = world.idvctl(args, &[]).await;
        assert_code(&output, 2, &format!("{args:?}"));
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[tokio::test]
async fn dry_run_moves_nothing_and_says_what_the_worker_would_do() {
    use idv_tests::worker_world::{apply_each, event, session, store};
    let world = World::new().await;
    // The record: session vs_dr with its `processing` of t=100 applied.
    let worker_settings = world.worker_settings(&[]);
    let store = store(&worker_settings).await;
    let seen = event(
        "evt_dr_seen",
        "processing",
        100,
        session("vs_dr", "processing", Some("user_dr"), None),
    );
    apply_each(&store, &worker_settings, std::slice::from_ref(&seen)).await;

    let mut duplicate = Letter::event("evt_dr_seen", "processing", "vs_dr", 100, "refused");
    duplicate.payload = Some(seen);
    let duplicate = world.insert(&duplicate).await;
    let stale = world
        .insert(&Letter::event(
            "evt_dr_old",
            "processing",
            "vs_dr",
            50,
            "refused",
        ))
        .await;
    let apply = world
        .insert(&Letter::event(
            "evt_dr_new",
            "verified",
            "vs_dr",
            200,
            "refused",
        ))
        .await;
    let mut mismatch = Letter::event("evt_dr_mm", "verified", "vs_dr2", 300, "status_mismatch");
    mismatch.payload = Some(event(
        "evt_dr_mm",
        "verified",
        300,
        session("vs_dr2", "processing", Some("user_dr2"), None),
    ));
    let mismatch = world.insert(&mismatch).await;
    let redacted = world
        .insert(&Letter::event("evt_dr_red", "verified", "vs_dr3", 300, "refused").redacted())
        .await;
    let garbled = world.insert(&Letter::unparseable()).await;
    let done = world
        .insert(&Letter::event(
            "evt_dr_done",
            "verified",
            "vs_dr4",
            300,
            "refused",
        ))
        .await;
    world
        .client
        .execute(
            "UPDATE dead_letters SET replayed_at = now() WHERE id = $1",
            &[&done],
        )
        .await
        .unwrap();
    let before = world.ids("replayed_at IS NOT NULL").await;

    let output = world
        .idvctl(&["dlq", "replay", "--all", "--dry-run", "--json"], &[])
        .await;
    assert_code(&output, 0, "dry run");
    let lines = json_lines(&output);
    let verdicts: Vec<(Vec<i64>, String, Value)> = lines[..lines.len() - 1]
        .iter()
        .map(|line| {
            let ids = line["dead_letters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_i64().unwrap())
                .collect();
            (
                ids,
                line["result"].as_str().unwrap().to_owned(),
                line["detail"].clone(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        vec![
            (vec![duplicate], "duplicate".to_owned(), Value::Null),
            (vec![stale], "stale".to_owned(), Value::Null),
            (vec![apply], "apply".to_owned(), Value::Null),
            (
                vec![mismatch],
                "fail_again".to_owned(),
                Value::from("status_mismatch")
            ),
            (
                vec![redacted],
                "skipped".to_owned(),
                Value::from("no payload: redacted")
            ),
            (
                vec![garbled],
                "skipped".to_owned(),
                Value::from("no event type: cannot be routed")
            ),
        ],
        "one verdict per waiting dead letter (the replayed one is not taken)"
    );
    let summary = &lines[lines.len() - 1]["summary"];
    assert_eq!(summary["dry_run"], true);
    for (field, n) in [
        ("apply", 1),
        ("stale", 1),
        ("duplicate", 1),
        ("fail_again", 1),
        ("skipped", 2),
    ] {
        assert_eq!(summary[field], n, "{field}: {summary}");
    }

    let text = world
        .idvctl(
            &[
                "dlq",
                "replay",
                "--event-id",
                "evt_dr_mm,evt_dr_new",
                "--dry-run",
            ],
            &[],
        )
        .await;
    assert_code(&text, 0, "dry run, text");
    let text = stdout(&text);
    assert!(
        text.lines()
            .any(|l| l.starts_with("evt_dr_mm") && l.ends_with("fail again: status_mismatch")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("evt_dr_new") && l.ends_with("apply")),
        "{text}"
    );
    assert_eq!(
        text.lines().count(),
        4,
        "a header, two events, the summary:\n{text}"
    );

    // Nothing moved: no row marked, no message published, the inbox as it was.
    assert_eq!(world.ids("replayed_at IS NOT NULL").await, before);
    assert!(
        world.take_published().await.is_empty(),
        "a dry run publishes nothing"
    );
    let inbox: i64 = world
        .client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(inbox, 1);

    let nothing = world.idvctl(&["dlq", "replay", "--dry-run"], &[]).await;
    assert_code(&nothing, 2, "no selection");
    assert!(stderr(&nothing).contains("--all"), "{}", stderr(&nothing));
}

#[tokio::test]
async fn purge_shows_asks_and_deletes_only_the_selection() {
    let world = World::new().await;
    let mut garbled = Vec::new();
    for _ in 0..3 {
        garbled.push(world.insert(&Letter::unparseable()).await);
    }
    let kept = [
        world
            .insert(&Letter::event(
                "evt_p1", "verified", "vs_p1", 100, "refused",
            ))
            .await,
        world
            .insert(&Letter::event("evt_p2", "verified", "vs_p2", 100, "refused").minutes_ago(90))
            .await,
    ];

    let refused = world
        .idvctl(&["dlq", "purge", "--kind", "unparseable"], &[])
        .await;
    assert_code(&refused, 2, "no terminal and no --yes");
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    assert!(
        stdout(&refused).starts_with("3 dead letters will be deleted:"),
        "what would go is shown first: {}",
        stdout(&refused)
    );
    assert_eq!(world.ids("true").await.len(), 5, "nothing deleted");

    let purged = world
        .idvctl(&["dlq", "purge", "--kind", "unparseable", "--yes"], &[])
        .await;
    assert_code(&purged, 0, "purge --yes");
    let text = stdout(&purged);
    assert_eq!(text.lines().last(), Some("purged 3 dead letters"), "{text}");
    for id in &garbled {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{id} "))),
            "{id} listed: {text}"
        );
    }
    assert_eq!(
        world.ids("true").await,
        kept.to_vec(),
        "only the selection went"
    );

    let older = world
        .idvctl(&["dlq", "purge", "--event-id", "evt_p2", "--yes"], &[])
        .await;
    assert_code(&older, 0, "by event id");
    assert_eq!(world.ids("true").await, vec![kept[0]]);
    let none = world
        .idvctl(&["dlq", "purge", "--kind", "expired", "--yes"], &[])
        .await;
    assert_code(&none, 0, "nothing matches");
    assert_eq!(
        stdout(&none).trim(),
        "nothing to purge: no dead letter matches"
    );
    let unsaid = world.idvctl(&["dlq", "purge", "--yes"], &[]).await;
    assert_code(&unsaid, 2, "no selection");
    assert_eq!(world.ids("true").await, vec![kept[0]]);
}
