//! The whole loop with the real worker and its real drain: an event the
//! database refuses goes through the worker's retries to the DLQ, another
//! is returned by a consumer until the broker's delivery limit
//! dead-letters it; the drain stores both; once the cause is fixed,
//! `idvctl dlq replay` puts both back and the worker commits them, as if
//! they had gone through the first time.

use idv_tests::database::TestDatabase;
use idv_tests::dead_letters::{reject_until_dead_lettered, wait_for_rows};
use idv_tests::wait::eventually;
use idv_tests::worker_world::{
    FAST_RETRIES, RunningWorker, apply_each, event, publish, record, session, settings, store,
};

use super::DEADLINE;
use super::support::*;

/// A trigger that makes the database refuse one event (a check
/// violation: a message failure, not an outage), as a bad constraint or a
/// bug in a migration would, until it is dropped.
const REFUSE: &str = "CREATE FUNCTION test_refuse_event() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.id = 'evt_e2e_refused' THEN
            RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER test_refuse_event BEFORE INSERT ON events
        FOR EACH ROW EXECUTE FUNCTION test_refuse_event();";

const FIX: &str = "DROP TRIGGER test_refuse_event ON events; DROP FUNCTION test_refuse_event();";

#[tokio::test]
async fn dead_letters_from_a_retry_cycle_and_from_the_delivery_limit_replay_to_committed_state() {
    let world = World::new().await;
    let limited = event(
        "evt_e2e_limit",
        "processing",
        100,
        session("vs_e2e_limit", "processing", Some("user_e2e_limit"), None),
    );
    let refused = event(
        "evt_e2e_refused",
        "verified",
        200,
        session("vs_e2e_refused", "verified", Some("user_e2e_refused"), None),
    );

    // The broker's dead letter: no worker yet, a consumer returns it until
    // the delivery limit sends it to the DLQ (no x-idv-* header on it).
    publish(&world.broker, PROCESSING, &limited).await;
    reject_until_dead_lettered(&world.broker, DEADLINE).await;

    // The worker's dead letter: refused by the database, retried, then
    // dead-lettered from its last retry queue (routing key idv.events).
    world.client.batch_execute(REFUSE).await.unwrap();
    let worker = RunningWorker::start(world.worker_settings(&[FAST_RETRIES])).await;
    publish(&world.broker, VERIFIED, &refused).await;
    let rows = wait_for_rows(&world.client, 2, DEADLINE).await;
    let mut kinds: Vec<(Option<String>, String, Option<String>)> = rows
        .iter()
        .map(|row| {
            (
                row.event_id.clone(),
                row.kind.clone(),
                row.event_type.clone(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            (
                Some("evt_e2e_limit".to_owned()),
                "delivery_limit".to_owned(),
                Some(PROCESSING.to_owned())
            ),
            (
                Some("evt_e2e_refused".to_owned()),
                "refused".to_owned(),
                Some(VERIFIED.to_owned())
            ),
        ],
        "both drained into the table: {rows:?}"
    );
    let inbox = || async {
        world
            .client
            .query(
                "SELECT id, outcome FROM events WHERE id LIKE 'evt_e2e%' ORDER BY id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, String>(1)))
            .collect::<Vec<_>>()
    };
    assert!(inbox().await.is_empty(), "nothing of them committed yet");

    // The cause fixed, a dry run expects both to apply, then the replay.
    world.client.batch_execute(FIX).await.unwrap();
    let dry = world
        .idvctl(&["dlq", "replay", "--all", "--dry-run"], &[])
        .await;
    assert_code(&dry, 0, "dry run");
    assert_eq!(
        stdout(&dry).lines().last(),
        Some(
            "dry run, nothing published or marked: apply 2, stale 0, duplicate 0, \
             fail again 0, skipped 0"
        ),
        "{}",
        stdout(&dry)
    );
    let replay = world.idvctl(&["dlq", "replay", "--all"], &[]).await;
    assert_code(&replay, 0, "replay");
    assert_eq!(stdout(&replay).trim(), "replayed 2, skipped 0, failed 0");

    eventually(DEADLINE, "both events committed", || async {
        inbox().await.len() == 2
    })
    .await;
    worker.stop().await;
    assert_eq!(
        inbox().await,
        vec![
            ("evt_e2e_limit".to_owned(), "applied".to_owned()),
            ("evt_e2e_refused".to_owned(), "applied".to_owned()),
        ]
    );
    assert_eq!(
        world.replayed().await.len(),
        2,
        "both dead letters marked replayed"
    );
    assert_eq!(world.ids("true").await.len(), 2, "no new dead letter");

    // The record is what the worker makes of them when nothing fails.
    let reference_db = TestDatabase::new().await;
    let reference_settings = settings(None, &reference_db, &[]);
    let reference = store(&reference_settings).await;
    apply_each(&reference, &reference_settings, &[limited, refused]).await;
    assert_eq!(
        record(&world.client, "%e2e%").await,
        record(&reference_db.client().await, "%e2e%").await,
        "the record, outbox included, of both events applied once"
    );
}
