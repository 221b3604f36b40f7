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

use std::collections::BTreeSet;
use std::time::Duration;

use idv_tests::wait::eventually;
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
async fn replay_filters_publish_and_mark_only_what_they_match() {
    let world = World::new().await;
    // evt_f1 was dead-lettered twice: one publish, both rows marked.
    let f1_old = world
        .insert(&Letter::event("evt_f1", "verified", "vs_f1", 100, "refused").minutes_ago(30))
        .await;
    let f2 = world
        .insert(&Letter::event("evt_f2", "verified", "vs_f2", 100, "refused").minutes_ago(20))
        .await;
    let f1_new = world
        .insert(&Letter::event("evt_f1", "verified", "vs_f1", 100, "refused").minutes_ago(10))
        .await;
    let f3 = world
        .insert(&Letter::event(
            "evt_f3",
            "processing",
            "vs_f3",
            100,
            "refused",
        ))
        .await;
    let f4 = world
        .insert(&Letter::event(
            "evt_f4",
            "verified",
            "vs_f4",
            100,
            "status_mismatch",
        ))
        .await;
    let red = world
        .insert(&Letter::event("evt_f5", "verified", "vs_f5", 100, "refused").redacted())
        .await;

    let output = world
        .idvctl(
            &[
                "dlq", "replay", "--kind", "refused", "--type", VERIFIED, "--since", "1h",
            ],
            &[],
        )
        .await;
    assert_code(&output, 0, "replay by kind and type");
    assert_eq!(
        stdout(&output).lines().last(),
        Some("replayed 2, skipped 1 (no payload: redacted), failed 0"),
        "{}",
        stdout(&output)
    );
    assert!(
        stdout(&output).contains(&format!(
            "skipped evt_f5 ({VERIFIED}; dead letter {red}): no payload: redacted"
        )),
        "{}",
        stdout(&output)
    );
    let mut published = world.take_published().await;
    published.sort_by_key(replay_header);
    assert_eq!(published.len(), 2, "one message per event");
    let expected = [(f1_new, "evt_f1"), (f2, "evt_f2")];
    let mut expected: Vec<(String, &str, i64)> = expected
        .iter()
        .map(|(id, event)| (format!("dead-letter:{id}"), *event, *id))
        .collect();
    expected.sort();
    for (message, (header, event_id, id)) in published.iter().zip(&expected) {
        assert_eq!(
            &replay_header(message),
            header,
            "the newest row of each event"
        );
        assert_eq!(
            message.routing_key, VERIFIED,
            "routing key = the event's type"
        );
        let row = world
            .client
            .query_one("SELECT payload FROM dead_letters WHERE id = $1", &[id])
            .await
            .unwrap();
        assert_eq!(message.body, row.get::<_, Vec<u8>>(0), "the original bytes");
        assert_eq!(
            message
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.to_string()),
            Some((*event_id).to_owned())
        );
    }
    assert_eq!(
        world.replayed().await,
        vec![f1_old, f2, f1_new],
        "both rows of evt_f1, and evt_f2's"
    );

    // By event id; then an id with no dead letter; then one replayed already.
    let output = world
        .idvctl(&["dlq", "replay", "--event-id", "evt_f4"], &[])
        .await;
    assert_code(&output, 0, "by event id");
    assert_eq!(world.take_published().await.len(), 1);
    assert_eq!(world.replayed().await, vec![f1_old, f2, f1_new, f4]);
    let unknown = world
        .idvctl(&["dlq", "replay", "--event-id", "evt_f4,evt_nope"], &[])
        .await;
    assert_code(&unknown, 1, "unknown event id");
    assert!(
        stderr(&unknown).contains("no dead letter of event evt_nope"),
        "{}",
        stderr(&unknown)
    );
    let again = world
        .idvctl(&["dlq", "replay", "--event-id", "evt_f1", "--json"], &[])
        .await;
    assert_code(&again, 0, "replayed already");
    assert_eq!(
        json_lines(&again),
        vec![serde_json::json!({"summary": {
        "replayed": 0, "skipped": 0, "skipped_reasons": {}, "failed": 0,
        "not_attempted": 0, "interrupted": false}})]
    );
    assert!(world.take_published().await.is_empty());

    // --all takes what is left: evt_f3, and the redacted one stays.
    let all = world
        .idvctl(&["dlq", "replay", "--all", "--json"], &[])
        .await;
    assert_code(&all, 0, "all");
    let lines = json_lines(&all);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["event_id"], "evt_f3");
    assert_eq!(lines[0]["result"], "replayed");
    assert_eq!(lines[0]["dead_letters"], serde_json::json!([f3]));
    assert_eq!(lines[1]["result"], "skipped");
    assert_eq!(lines[2]["summary"]["replayed"], 1);
    assert_eq!(lines[2]["summary"]["skipped"], 1);
    assert_eq!(world.take_published().await.len(), 1);
    assert_eq!(world.ids("replayed_at IS NULL").await, vec![red]);
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

#[tokio::test]
async fn a_dead_letter_is_marked_only_once_the_broker_confirmed_its_copy() {
    let world = World::new().await;
    let id = world
        .insert(&Letter::event(
            "evt_c1", "verified", "vs_c1", 100, "refused",
        ))
        .await;

    // No broker: nothing published, nothing marked.
    let unreachable = world
        .idvctl(
            &["dlq", "replay", "--all"],
            &[("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")],
        )
        .await;
    assert_code(&unreachable, 1, "broker unreachable");
    assert!(
        stderr(&unreachable).contains("AMQP_URL"),
        "{}",
        stderr(&unreachable)
    );
    assert!(world.replayed().await.is_empty());

    // The broker refuses the copy: its queue is full and rejects what
    // comes (a nack). The policy reaches the queue a moment after it is
    // set: filler is published until the broker nacks one.
    let queue = world.broker.topology.events_queue();
    let full = world
        .broker
        .set_queue_policy(&queue, r#"{"max-length":1,"overflow":"reject-publish"}"#);
    eventually(DEADLINE, "the full queue to refuse a message", || async {
        let confirm = world
            .broker
            .channel()
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                b"filler",
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        confirm.is_nack()
    })
    .await;
    let refused = world.idvctl(&["dlq", "replay", "--all"], &[]).await;
    assert_code(&refused, 1, "nacked");
    assert_eq!(
        stdout(&refused).lines().last(),
        Some("replayed 0, skipped 0, failed 1"),
        "{}",
        stdout(&refused)
    );
    assert!(
        stdout(&refused).contains("failed evt_c1") && stdout(&refused).contains("nack"),
        "{}",
        stdout(&refused)
    );
    assert!(
        world.replayed().await.is_empty(),
        "a refused copy is not marked"
    );
    full.clear();
    world.take_published().await; // the filler

    // Confirmed: marked, and the copy is in the queue.
    let confirmed = world.idvctl(&["dlq", "replay", "--all"], &[]).await;
    assert_code(&confirmed, 0, "confirmed");
    assert_eq!(world.replayed().await, vec![id]);
    assert_eq!(world.take_published().await.len(), 1);
}

#[tokio::test]
async fn two_replays_at_once_never_publish_a_dead_letter_twice() {
    let world = World::new().await;
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(
            world
                .insert(&Letter::event(
                    &format!("evt_two{i}"),
                    "verified",
                    &format!("vs_two{i}"),
                    100,
                    "refused",
                ))
                .await,
        );
    }
    let args = ["dlq", "replay", "--all", "--json"];
    let (first, second) = (world.spawn(&args, &[]), world.spawn(&args, &[]));
    let (first, second) = tokio::join!(first.wait_with_output(), second.wait_with_output());
    let mut replayed = 0;
    for output in [first.unwrap(), second.unwrap()] {
        assert_code(&output, 0, "each replay");
        let lines = json_lines(&output);
        replayed += lines.last().unwrap()["summary"]["replayed"]
            .as_i64()
            .unwrap();
    }
    assert_eq!(replayed, 60, "together they replayed each event once");
    let headers: Vec<String> = world
        .take_published()
        .await
        .iter()
        .map(replay_header)
        .collect();
    let distinct: BTreeSet<&String> = headers.iter().collect();
    assert_eq!(
        headers.len(),
        60,
        "one message per dead letter: {headers:?}"
    );
    assert_eq!(distinct.len(), 60, "no dead letter published twice");
    assert_eq!(world.replayed().await, ids);
}

#[tokio::test]
async fn ctrl_c_stops_a_replay_after_the_event_in_hand() {
    let world = World::new().await;
    for i in 0..20 {
        world
            .insert(&Letter::event(
                &format!("evt_int{i}"),
                "verified",
                &format!("vs_int{i}"),
                100,
                "refused",
            ))
            .await;
    }
    let child = world.spawn(&["dlq", "replay", "--all", "--rate", "5/s"], &[]);
    let pid = child.id().expect("running");
    eventually(DEADLINE, "a few dead letters replayed", || async {
        world.replayed().await.len() >= 2
    })
    .await;
    let signal = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(signal.success());
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("it stops soon after Ctrl-C")
        .unwrap();
    assert_code(&output, 1, "interrupted");
    let marked = world.replayed().await.len();
    assert!(marked < 20, "stopped before the end ({marked} replayed)");
    let summary = stdout(&output);
    assert_eq!(
        summary.lines().last(),
        Some(
            format!(
                "replayed {marked}, skipped 0, failed 0; interrupted: {} not attempted \
                 (run the command again for them)",
                20 - marked
            )
            .as_str()
        ),
        "{summary}"
    );
    assert!(
        stderr(&output).contains("interrupted"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        world.take_published().await.len(),
        marked,
        "every copy published was marked, and only those"
    );
}

#[tokio::test]
async fn a_replay_killed_between_confirm_and_mark_loses_nothing_and_duplicates_nothing() {
    use idv_tests::worker_world::{FAST_RETRIES, RunningWorker, apply_each, record, store};
    let world = World::new().await;
    let letters: Vec<Letter> = (0..3)
        .map(|i| {
            Letter::event(
                &format!("evt_kill{i}"),
                "verified",
                &format!("vs_kill{i}"),
                100,
                "refused",
            )
        })
        .collect();
    let mut ids = Vec::new();
    for letter in &letters {
        ids.push(world.insert(letter).await);
    }
    let worker = RunningWorker::start(world.worker_settings(&[FAST_RETRIES])).await;
    let committed = |n: i64| {
        let world = &world;
        async move {
            let count: i64 = world
                .client
                .query_one("SELECT count(*) FROM events WHERE id LIKE 'evt_kill%'", &[])
                .await
                .unwrap()
                .get(0);
            count == n
        }
    };

    // Killed (SIGKILL, as a crash) right after the broker confirmed the
    // second copy, before that dead letter was marked.
    let killed = world
        .idvctl(
            &["dlq", "replay", "--all"],
            &[(worker::fail_point::ABORT_AFTER_REPLAY_CONFIRM, "2")],
        )
        .await;
    {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(
            killed.status.signal(),
            Some(9),
            "killed at its fail point: {}",
            stderr(&killed)
        );
    }
    assert!(
        stderr(&killed)
            .contains("fail point: killing the process after confirm 2, before its mark"),
        "{}",
        stderr(&killed)
    );
    assert_eq!(
        world.replayed().await,
        vec![ids[0]],
        "the second copy was confirmed but its dead letter not marked"
    );
    eventually(DEADLINE, "both confirmed copies committed", || committed(2)).await;

    // Run again: the unmarked one is published again, the worker's dedupe
    // absorbs it, and the third goes through.
    let rerun = world.idvctl(&["dlq", "replay", "--all"], &[]).await;
    assert_code(&rerun, 0, "the replay run again");
    assert_eq!(
        stdout(&rerun).trim(),
        "replayed 2, skipped 0, failed 0",
        "{}",
        stdout(&rerun)
    );
    eventually(DEADLINE, "every event committed", || committed(3)).await;
    eventually(DEADLINE, "the second copy seen as a duplicate", || async {
        worker.metric_sum("idv_worker_duplicates_total") >= 1.0
    })
    .await;
    let metrics = worker.metrics.encode();
    worker.stop().await;
    assert_eq!(world.replayed().await, ids, "every dead letter marked");
    assert_eq!(
        idv_tests::worker_world::metric_sum(&metrics, "idv_worker_duplicates_total"),
        1.0,
        "exactly one copy twice: the one published before the kill"
    );
    assert_eq!(
        idv_tests::worker_world::metric_sum(&metrics, "idv_worker_dead_letters_total"),
        0.0,
        "nothing failed again"
    );
    assert_eq!(world.ids("true").await, ids, "no new dead letter");

    // The record is that of each event applied once.
    let reference_db = idv_tests::database::TestDatabase::new().await;
    let reference_settings = idv_tests::worker_world::settings(None, &reference_db, &[]);
    let reference = store(&reference_settings).await;
    let bodies: Vec<Vec<u8>> = letters.iter().filter_map(|l| l.payload.clone()).collect();
    apply_each(&reference, &reference_settings, &bodies).await;
    assert_eq!(
        record(&world.client, "%kill%").await,
        record(&reference_db.client().await, "%kill%").await,
        "the same record, outbox included, as one uninterrupted replay"
    );
}
