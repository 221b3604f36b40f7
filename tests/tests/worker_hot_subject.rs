//! One subject whose row is locked (by another transaction, an operator,
//! a slow worker) does not idle the worker: while it waits, the events of
//! every other person keep being applied, those the stuck one's lane used
//! to own included; once the lock goes, its own events are applied too.
//! Before, lanes were unbounded queues fed by subject hash: the stuck
//! lane soaked up the whole prefetch window (its subject's events and
//! those of everyone hashed with it) and the other lanes sat idle.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::wait::eventually;
use idv_tests::worker_world::*;

const DEADLINE: Duration = Duration::from_secs(60);
const PROCESSING: &str = "identity.verification_session.processing";

async fn committed_like(client: &tokio_postgres::Client, like: &str) -> i64 {
    client
        .query_one("SELECT count(*) FROM events WHERE id LIKE $1", &[&like])
        .await
        .unwrap()
        .get(0)
}

/// A `processing` event of session `vs` of `user`.
fn processing(id: &str, vs: &str, user: &str, created: i64) -> Vec<u8> {
    event(
        id,
        "processing",
        created,
        session(vs, "processing", Some(user), None),
    )
}

#[tokio::test]
async fn a_locked_subject_does_not_stop_the_others() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    // Two lanes of batches of 10, 20 deliveries each in the window (40).
    let settings = settings(
        Some(&broker),
        &db,
        &[
            ("WORKER_CONSUMERS", "2"),
            ("WORKER_BATCH_SIZE", "10"),
            ("WORKER_PREFETCH", "20"),
            FAST_RETRIES,
        ],
    );
    migrate(&settings).await;
    let client = db.client().await;
    let worker = RunningWorker::start(settings).await;
    let hot = "user_hot";
    publish(
        &broker,
        PROCESSING,
        &processing("evt_hot_0", "vs_hot_0", hot, 1_700_000_000),
    )
    .await;
    eventually(DEADLINE, "the hot subject's first event", || async {
        event_count(&client).await == 1
    })
    .await;

    // A batch of the hot subject alone waits on the lock...
    let holder = hold_subject_lock(&db, hot).await;
    publish(
        &broker,
        PROCESSING,
        &processing("evt_hot_1", "vs_hot_1", hot, 1_700_000_001),
    )
    .await;
    eventually(DEADLINE, "a batch waiting on the held row", || async {
        waiting_on_a_lock(&client, &db).await > 0
    })
    .await;
    // ...while many more of its events arrive, among everyone else's.
    let (hot_events, others) = (200_i64, 200_i64);
    for i in 0..hot_events.max(others) {
        if i < hot_events {
            let id = format!("evt_hot_x{i}");
            let vs = format!("vs_hot_x{i}");
            publish(
                &broker,
                PROCESSING,
                &processing(&id, &vs, hot, 1_700_000_002 + i),
            )
            .await;
        }
        if i < others {
            let body = processing(
                &format!("evt_cold{i}"),
                &format!("vs_cold{i}"),
                &format!("user_cold{i}"),
                1_700_000_000 + i,
            );
            publish(&broker, PROCESSING, &body).await;
        }
    }
    eventually(
        DEADLINE,
        "every other person's events applied while the lock is held",
        || async { committed_like(&client, "evt_cold%").await == others },
    )
    .await;
    assert_eq!(
        committed_like(&client, "evt_hot%").await,
        1,
        "the held subject's events wait for its lock"
    );

    holder.batch_execute("ROLLBACK").await.unwrap();
    eventually(
        DEADLINE,
        "the held subject's events applied too",
        || async { committed_like(&client, "evt_hot%").await == hot_events + 2 },
    )
    .await;
    let metrics = worker.metrics.clone();
    let deferred = metrics.deferred.get();
    worker.stop().await;
    broker
        .assert_all_acked(&broker.topology.events_queue(), DEADLINE)
        .await;
    assert_no_message_failed(&broker, &[metrics.encode()]).await;
    assert_no_dead_letters(&db).await;
    assert!(
        deferred > 0,
        "the held subject's events beyond its lane's share were deferred"
    );
    assert_eq!(
        event_count(&client).await,
        hot_events + 2 + others,
        "every event once"
    );
}
