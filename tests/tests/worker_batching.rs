//! One lane fills a batch at a time: the deliveries that arrive while a
//! batch lingers go into that batch, whichever lanes fall idle meanwhile.
//! Before, the lanes were polled in index order and any idle one took
//! what it could: a lower lane that finished its batch while a higher one
//! lingered started a batch of its own with the next delivery, so a
//! steady stream went out in more, smaller transactions.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::wait::eventually;
use idv_tests::worker_world::*;

const DEADLINE: Duration = Duration::from_secs(30);
const PROCESSING: &str = "identity.verification_session.processing";

fn processing(n: &str, user: &str, created: i64) -> Vec<u8> {
    event(
        &format!("evt_fill_{n}"),
        "processing",
        created,
        session(&format!("vs_fill_{n}"), "processing", Some(user), None),
    )
}

async fn applied(client: &tokio_postgres::Client, id: &str) -> bool {
    client
        .query_one("SELECT count(*) FROM events WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 1
}

#[tokio::test]
async fn deliveries_arriving_while_a_batch_lingers_join_it_when_another_lane_falls_idle() {
    let (broker, db) = (TestBroker::new().await, TestDatabase::new().await);
    // A linger far longer than the steps below take.
    let settings = settings(
        Some(&broker),
        &db,
        &[
            ("WORKER_CONSUMERS", "4"),
            ("WORKER_BATCH_SIZE", "64"),
            ("WORKER_BATCH_LINGER_MS", "1000"),
        ],
    );
    migrate(&settings).await;
    let client = db.client().await;
    let _worker = RunningWorker::start(settings).await;
    publish(
        &broker,
        PROCESSING,
        &processing("hot_0", "user_hot", 1_700_000_000),
    )
    .await;
    eventually(DEADLINE, "the hot subject created", || {
        applied(&client, "evt_fill_hot_0")
    })
    .await;

    // Lane 0 takes the hot person's next event and, its linger over,
    // waits for the subject's row, which the test holds.
    let holder = hold_subject_lock(&db, "user_hot").await;
    publish(
        &broker,
        PROCESSING,
        &processing("hot_1", "user_hot", 1_700_000_001),
    )
    .await;
    eventually(
        DEADLINE,
        "the hot batch waiting on the held row",
        || async { waiting_on_a_lock(&client, &db).await > 0 },
    )
    .await;
    // Another lane starts a batch with the next delivery and lingers.
    publish(
        &broker,
        PROCESSING,
        &processing("a", "user_a", 1_700_000_002),
    )
    .await;
    // Lane 0 finishes its batch and falls idle, within that linger.
    holder.batch_execute("ROLLBACK").await.unwrap();
    eventually(DEADLINE, "the hot batch applied", || {
        applied(&client, "evt_fill_hot_1")
    })
    .await;
    // These arrive while the second batch still lingers.
    publish(
        &broker,
        PROCESSING,
        &processing("b", "user_b", 1_700_000_003),
    )
    .await;
    publish(
        &broker,
        PROCESSING,
        &processing("c", "user_c", 1_700_000_004),
    )
    .await;
    eventually(DEADLINE, "the stream applied", || async {
        applied(&client, "evt_fill_c").await && applied(&client, "evt_fill_b").await
    })
    .await;

    // Rows a transaction inserted carry its id (`xmin`).
    let transactions: i64 = client
        .query_one(
            "SELECT count(DISTINCT xmin::text) FROM events WHERE id = ANY($1)",
            &[&vec!["evt_fill_a", "evt_fill_b", "evt_fill_c"]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        transactions, 1,
        "three events that arrived within one linger were applied in {transactions} transactions"
    );
}
