//! `idvctl events replay` with a real worker, broker and database: events
//! applied by a worker configured without a sink are replayed from the
//! inbox to a worker configured with it, which adds the rows that sink
//! calls for, once, and changes no state; filters and `--dry-run` publish
//! only what they should, with the inbox's header.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use std::time::Duration;

use clap::Parser;
use idv_tests::broker::{Received, TestBroker};
use idv_tests::database::TestDatabase;
use idv_tests::wait::eventually;
use idv_tests::worker_world::*;
use lapin::types::AMQPValue;
use serde_json::Value;
use shared::config::Env;
use worker::ctl::{CtlSettings, UsageError};

const DEADLINE: Duration = Duration::from_secs(20);
const T: i64 = 1_767_225_600;

/// `idvctl events …`'s command line.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: worker::ctl::events::Command,
}

/// `idvctl events replay args… --json` against `db` and `broker`.
async fn replay(broker: &TestBroker, db: &TestDatabase, args: &[&str]) -> anyhow::Result<Value> {
    let line = ["events", "replay"]
        .iter()
        .chain(args)
        .chain(&["--json"])
        .copied();
    let cli = Cli::try_parse_from(line)?;
    let settings = CtlSettings::from_env(&Env::from_pairs([
        ("DATABASE_URL", db.url.as_str()),
        ("AMQP_URL", broker.url.as_str()),
        ("AMQP_PREFIX", broker.prefix.as_str()),
    ]))?;
    let output = worker::ctl::events::run(&settings, &cli.command).await?;
    Ok(serde_json::from_str(&output)?)
}

/// The value of the series of `name` whose labels include `labels`.
fn series(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(labels))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn replayed(worker: &RunningWorker) -> f64 {
    series(
        &worker.metrics.encode(),
        "idv_worker_events_total",
        "outcome=\"replayed\"",
    )
}

/// Two people: one verified (processing, verified), one at the limit
/// (three failures), under the prefix `p`.
fn story(p: &str) -> Vec<Vec<u8>> {
    let (verified, limited) = (format!("user_{p}v"), format!("user_{p}l"));
    let (vs_v, vs_l) = (format!("vs_{p}v"), format!("vs_{p}l"));
    let mut bodies = vec![
        event(
            &format!("evt_{p}1"),
            "processing",
            T,
            session(&vs_v, "processing", Some(&verified), None),
        ),
        event(
            &format!("evt_{p}2"),
            "verified",
            T + 1,
            session(&vs_v, "verified", Some(&verified), None),
        ),
    ];
    for i in 0..3 {
        bodies.push(failed(
            &format!("evt_{p}f{i}"),
            &vs_l,
            &limited,
            T + i,
            "document_expired",
        ));
    }
    bodies
}

/// Every outbox row of the story: key, kind, status and id (a row written
/// again would have a new id).
async fn outbox_rows(client: &tokio_postgres::Client, like: &str) -> Vec<String> {
    client
        .query(
            "SELECT idempotency_key || ' ' || status || ' #' || id FROM outbox \
             WHERE idempotency_key LIKE $1 ORDER BY idempotency_key",
            &[&like],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The keys alone.
fn keys(rows: &[String]) -> Vec<&str> {
    rows.iter()
        .filter_map(|row| row.split(' ').next())
        .collect()
}

#[tokio::test]
async fn a_replay_adds_the_rows_a_sink_configured_since_calls_for_and_changes_no_state() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let p = unique("r");
    let like = format!("%{p}%");
    let client = db.client().await;

    // A worker without e-mail applies the story.
    let without = settings(Some(&broker), &db, &[FAST_RETRIES]);
    migrate(&without).await;
    let first = RunningWorker::start(without).await;
    let bodies = story(&p);
    for body in &bodies {
        publish(&broker, &type_of(body), body).await;
    }
    eventually(DEADLINE, "the story applied", || async {
        event_count(&client).await == 5
    })
    .await;
    let first_metrics = first.metrics.encode();
    first.stop().await;
    let before = outbox_rows(&client, &like).await;
    assert!(
        keys(&before).iter().all(|k| !k.contains("notify_user")),
        "no e-mail row without e-mail: {before:#?}"
    );
    let record = snapshot(&client, &like).await;

    // The same database, a worker with e-mail; the inbox replayed to it.
    let with = settings(
        Some(&broker),
        &db,
        &[FAST_RETRIES, EVERY_SINK[2], EVERY_SINK[3]],
    );
    let second = RunningWorker::start(with).await;
    let summary = replay(&broker, &db, &["--since", "1h"]).await.unwrap();
    assert_eq!(
        (summary["selected"].clone(), summary["published"].clone()),
        (5.into(), 5.into())
    );
    eventually(DEADLINE, "the five events replayed", || async {
        replayed(&second) == 5.0
    })
    .await;
    let after = outbox_rows(&client, &like).await;
    let (vs_v, vs_l, limited) = (format!("vs_{p}v"), format!("vs_{p}l"), format!("user_{p}l"));
    let mut added: Vec<String> = (0..3)
        .map(|i| format!("{vs_l}:requires_input:evt_{p}f{i}:notify_user_retry"))
        .collect();
    added.push(format!("{vs_v}:verified:notify_user_verified"));
    added.push(format!("{limited}:manual_review:notify_user_alternative"));
    let mut expected: Vec<&str> = keys(&before);
    expected.extend(added.iter().map(String::as_str));
    expected.sort_unstable();
    assert_eq!(keys(&after), expected, "each missing row added once");
    for row in &before {
        assert!(after.contains(row), "{row} kept as it was: {after:#?}");
    }
    assert_eq!(snapshot(&client, &like).await, record, "no state changed");
    assert_eq!(event_count(&client).await, 5, "nothing new in the inbox");

    // Again: nothing new.
    replay(&broker, &db, &["--since", "1h"]).await.unwrap();
    eventually(DEADLINE, "the second replay applied", || async {
        replayed(&second) == 10.0
    })
    .await;
    assert_eq!(
        outbox_rows(&client, &like).await,
        after,
        "a second replay added rows"
    );

    // The same event without the header is a duplicate, and does nothing.
    let text = second.metrics.encode();
    assert_eq!(
        metric_sum(&text, "idv_worker_duplicates_total"),
        0.0,
        "{text}"
    );
    publish(&broker, &type_of(&bodies[1]), &bodies[1]).await;
    eventually(DEADLINE, "the plain copy seen as a duplicate", || async {
        metric_sum(&second.metrics.encode(), "idv_worker_duplicates_total") == 1.0
    })
    .await;
    assert_eq!(replayed(&second), 10.0);
    assert_eq!(outbox_rows(&client, &like).await, after);
    assert_eq!(snapshot(&client, &like).await, record);
    let second_metrics = second.metrics.encode();
    second.stop().await;
    assert_no_message_failed(&broker, &[first_metrics, second_metrics]).await;
}

/// Every message in the events queue (no worker consumes it), by event id.
async fn drain(broker: &TestBroker) -> Vec<Received> {
    let mut messages = Vec::new();
    while let Some(message) = broker.try_get(&broker.topology.events_queue()).await {
        messages.push(message);
    }
    messages
}

fn event_id(message: &Received) -> String {
    let value: Value = serde_json::from_slice(&message.body).unwrap();
    value["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn filters_and_dry_run_publish_only_what_they_match() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    let p = unique("f");
    let settings = settings(Some(&broker), &db, &[]);
    let store = store(&settings).await;
    let bodies = story(&p);
    for body in &bodies {
        let event = worker::incoming::parse(body, worker::consume::now_ms(), &settings).unwrap();
        store.apply(&[&event]).await.unwrap().remove(0).unwrap();
    }
    let client = db.client().await;
    // The first failure arrived three hours ago.
    client
        .execute(
            "UPDATE events SET received_at = now() - interval '3 hours' WHERE id = $1",
            &[&format!("evt_{p}f0")],
        )
        .await
        .unwrap();
    let queue = broker.topology.events_queue();

    let dry = replay(&broker, &db, &["--since", "1h", "--dry-run"])
        .await
        .unwrap();
    assert_eq!(dry["selected"], 4, "{dry}");
    assert_eq!(dry["published"], 0, "{dry}");
    assert_eq!(dry["events"].as_array().map(Vec::len), Some(4));
    broker.assert_empty(&queue, "a dry run published").await;

    replay(&broker, &db, &["--since", "1h", "--type", "verified"])
        .await
        .unwrap();
    let messages = drain(&broker).await;
    assert_eq!(
        messages.iter().map(event_id).collect::<Vec<_>>(),
        [format!("evt_{p}2")]
    );
    let message = &messages[0];
    assert_eq!(
        message.routing_key,
        "identity.verification_session.verified"
    );
    let headers = message.properties.headers().clone().unwrap_or_default();
    assert!(
        matches!(headers.inner().get("x-idv-replay"),
            Some(AMQPValue::LongString(v)) if v.as_bytes() == b"inbox"),
        "{headers:?}"
    );
    let stored: Value = client
        .query_one(
            "SELECT payload FROM events WHERE id = $1",
            &[&format!("evt_{p}2")],
        )
        .await
        .unwrap()
        .get(0);
    let published: Value = serde_json::from_slice(&message.body).unwrap();
    assert_eq!(published, stored, "the stored event, as JSON");

    let vs_l = format!("vs_{p}l");
    replay(&broker, &db, &["--since", "1h", "--session", &vs_l])
        .await
        .unwrap();
    let ids: Vec<String> = drain(&broker).await.iter().map(event_id).collect();
    assert_eq!(
        ids,
        [format!("evt_{p}f1"), format!("evt_{p}f2")],
        "oldest first, within --since"
    );

    let summary = replay(
        &broker,
        &db,
        &[
            "--since",
            "4h",
            "--session",
            &vs_l,
            "--type",
            "requires_input",
        ],
    )
    .await
    .unwrap();
    assert_eq!(summary["published"], 3, "{summary}");
    assert_eq!(drain(&broker).await.len(), 3);

    for args in [
        &["--since", "1h", "--type", "approved"][..],
        &["--since", "1h", "--session", "cus_123"],
    ] {
        let error = replay(&broker, &db, args).await.unwrap_err();
        assert!(
            error.downcast_ref::<UsageError>().is_some(),
            "{args:?}: {error:#}"
        );
    }
    broker.assert_empty(&queue, "a usage error published").await;
}
