//! `idvctl dlq replay` publishing for real: what the filters select and
//! nothing else, marked only once the broker confirmed, and nothing lost
//! or published twice beyond the worker's dedupe when two replays run at
//! once, when Ctrl-C stops one, or when one is killed between a confirm
//! and its mark.

use std::collections::BTreeSet;

use idv_tests::wait::eventually;

use super::DEADLINE;
use super::support::*;

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
        "not_attempted": 0, "stopped": null}})]
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

/// Events the worker saw again as inbox replays (`outcome="replayed"`).
fn replayed(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("idv_worker_events_total{") && line.contains("outcome=\"replayed\"")
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
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

    // Run again: the unmarked one is published again (as an inbox replay:
    // its event is in the inbox now), the worker records nothing new for
    // it, and the third goes through.
    let rerun = world.idvctl(&["dlq", "replay", "--all"], &[]).await;
    assert_code(&rerun, 0, "the replay run again");
    assert_eq!(
        stdout(&rerun).trim(),
        "replayed 2, skipped 0, failed 0",
        "{}",
        stdout(&rerun)
    );
    eventually(DEADLINE, "every event committed", || committed(3)).await;
    eventually(DEADLINE, "the second copy seen again", || async {
        replayed(&worker.metrics.encode()) >= 1.0
    })
    .await;
    let metrics = worker.metrics.encode();
    worker.stop().await;
    assert_eq!(world.replayed().await, ids, "every dead letter marked");
    assert_eq!(
        replayed(&metrics),
        1.0,
        "exactly one copy twice: the one published before the kill"
    );
    assert_eq!(
        idv_tests::worker_world::metric_sum(&metrics, "idv_worker_duplicates_total"),
        0.0,
        "the copy sent again was an inbox replay, not a bare duplicate"
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

#[tokio::test]
async fn a_broker_lost_mid_replay_loses_nothing_and_the_next_replay_finishes() {
    let world = World::new().await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            world
                .insert(&Letter::event(
                    &format!("evt_lost{i}"),
                    "verified",
                    &format!("vs_lost{i}"),
                    100,
                    "refused",
                ))
                .await,
        );
    }
    let proxy = idv_tests::proxy::TcpProxy::start(idv_tests::amqp_addr()).await;
    let via_proxy = idv_tests::url_via(&world.broker.url, proxy.addr());
    // Slow enough (10 take about 4.5 s) that the cut comes mid-run even
    // on a machine that stalls the test for a second or two.
    let child = world.spawn(
        &["dlq", "replay", "--all", "--rate", "2/s"],
        &[("AMQP_URL", via_proxy.as_str())],
    );
    eventually(DEADLINE, "a few dead letters replayed", || async {
        world.replayed().await.len() >= 2
    })
    .await;
    proxy.cut();
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("the replay ends soon after losing the broker")
        .unwrap();
    assert_code(&output, 1, "broker lost");
    let marked = world.replayed().await.len();
    assert!(marked < 10, "stopped before the end ({marked} replayed)");
    // The publish that found the link gone failed; the run stopped there.
    assert_eq!(
        stdout(&output).lines().last(),
        Some(
            format!(
                "replayed {marked}, skipped 0, failed 1; the broker connection was lost: \
                 {} not attempted (run the command again for them)",
                10 - marked - 1
            )
            .as_str()
        ),
        "{}",
        stdout(&output)
    );
    assert_eq!(
        stdout(&output)
            .lines()
            .filter(|l| l.starts_with("failed "))
            .count(),
        1,
        "{}",
        stdout(&output)
    );

    let rerun = world.idvctl(&["dlq", "replay", "--all"], &[]).await;
    assert_code(&rerun, 0, "the replay run again");
    assert_eq!(
        stdout(&rerun).trim(),
        format!("replayed {}, skipped 0, failed 0", 10 - marked)
    );
    assert_eq!(world.replayed().await, ids, "every dead letter marked");
    let headers: Vec<String> = world
        .take_published()
        .await
        .iter()
        .map(replay_header)
        .collect();
    let distinct: BTreeSet<&String> = headers.iter().collect();
    assert_eq!(
        distinct.len(),
        10,
        "every dead letter's copy is in the queue"
    );
    assert!(
        headers.len() <= 11,
        "at most the copy in flight when the link went is there twice: {headers:?}"
    );
}

#[tokio::test]
async fn a_dead_letter_whose_event_the_inbox_holds_is_replayed_as_an_inbox_replay() {
    let world = World::new().await;
    // An `events replay` whose new action the database refused: its event
    // is in the inbox, so a plain delivery would be a mere duplicate.
    let seen = world
        .insert(&Letter::event(
            "evt_in1", "verified", "vs_in1", 100, "refused",
        ))
        .await;
    let unseen = world
        .insert(&Letter::event(
            "evt_in2", "verified", "vs_in2", 100, "refused",
        ))
        .await;
    world
        .client
        .execute(
            "INSERT INTO events (id, type, session_id, created, livemode, outcome, received_at) \
             VALUES ('evt_in1', $1, 'vs_in1', 100, false, 'applied', now())",
            &[&VERIFIED],
        )
        .await
        .unwrap();
    let output = world.idvctl(&["dlq", "replay", "--all"], &[]).await;
    assert_code(&output, 0, "replay");
    let mut headers: Vec<String> = world
        .take_published()
        .await
        .iter()
        .map(replay_header)
        .collect();
    headers.sort();
    assert_eq!(
        headers,
        [format!("dead-letter:{unseen}"), "inbox".to_owned()]
    );
    assert_eq!(
        world.replayed().await.len(),
        2,
        "both marked ({seen}, {unseen})"
    );
}
