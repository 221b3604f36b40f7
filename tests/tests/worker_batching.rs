//! One lane fills a batch at a time: the deliveries that arrive while a
//! batch lingers go into that batch, whichever lanes fall idle meanwhile.
//! Before, the lanes were polled in index order and any idle one took
//! what it could: a lower lane that finished its batch while a higher one
//! lingered started a batch of its own with the next delivery, so a
//! steady stream went out in more, smaller transactions.
//!
//! The scenario needs its steps to fall within one linger (1 s, the
//! setting's maximum). An attempt whose steps took longer proves nothing
//! either way, so it is run again with new subjects, up to five times;
//! only an attempt within the window is judged.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use std::time::{Duration, Instant};

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::wait::eventually;
use idv_tests::worker_world::*;

const DEADLINE: Duration = Duration::from_secs(30);
const PROCESSING: &str = "identity.verification_session.processing";
const LINGER: Duration = Duration::from_millis(1000);
/// The most an attempt's steps may take, from before the second batch's
/// first event is published to its last one's confirm: well inside the
/// linger (which starts when a lane takes the first delivery, after that
/// publish began), leaving half of it for the last delivery to reach the
/// worker.
const WINDOW: Duration = Duration::from_millis(500);
const ATTEMPTS: usize = 5;

fn processing(n: &str, user: &str, created: i64) -> Vec<u8> {
    event(
        &format!("evt_fill_{n}"),
        "processing",
        created,
        session(&format!("vs_fill_{n}"), "processing", Some(user), None),
    )
}

async fn applied(client: &tokio_postgres::Client, id: String) -> bool {
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
            ("WORKER_BATCH_LINGER_MS", &LINGER.as_millis().to_string()),
        ],
    );
    migrate(&settings).await;
    let client = db.client().await;
    let _worker = RunningWorker::start(settings).await;
    for attempt in 0..ATTEMPTS {
        match one_attempt(&broker, &db, &client, attempt).await {
            Some(transactions) => {
                assert_eq!(
                    transactions, 1,
                    "three events that arrived within one linger were applied in {transactions} transactions (attempt {attempt})"
                );
                return;
            }
            None => eprintln!("attempt {attempt}: its steps took longer than {WINDOW:?}; again"),
        }
    }
    panic!(
        "no attempt of {ATTEMPTS} fitted its steps within {WINDOW:?}: the machine is too slow to judge"
    );
}

/// One run of the scenario with subjects of its own: the number of
/// transactions that applied the three events of the second batch, or
/// `None` when its steps did not fit within [`WINDOW`].
async fn one_attempt(
    broker: &TestBroker,
    db: &TestDatabase,
    client: &tokio_postgres::Client,
    attempt: usize,
) -> Option<i64> {
    let hot = format!("user_hot{attempt}");
    let name = |n: &str| format!("{n}{attempt}");
    let created = 1_700_000_000 + 10 * i64::try_from(attempt).unwrap();
    publish(
        broker,
        PROCESSING,
        &processing(&name("hot_0_"), &hot, created),
    )
    .await;
    eventually(DEADLINE, "the hot subject created", || {
        applied(client, format!("evt_fill_hot_0_{attempt}"))
    })
    .await;

    // Lane 0 takes the hot person's next event and, its linger over,
    // waits for the subject's row, which the test holds.
    let holder = hold_subject_lock(db, &hot).await;
    publish(
        broker,
        PROCESSING,
        &processing(&name("hot_1_"), &hot, created + 1),
    )
    .await;
    eventually(
        DEADLINE,
        "the hot batch waiting on the held row",
        || async { waiting_on_a_lock(client, db).await > 0 },
    )
    .await;
    // Another lane starts a batch with the next delivery and lingers.
    let lingering = Instant::now();
    publish(
        broker,
        PROCESSING,
        &processing(&name("a_"), &name("user_a"), created + 2),
    )
    .await;
    // Lane 0 finishes its batch and falls idle, within that linger.
    holder.batch_execute("ROLLBACK").await.unwrap();
    eventually(DEADLINE, "the hot batch applied", || {
        applied(client, format!("evt_fill_hot_1_{attempt}"))
    })
    .await;
    // These arrive while the second batch still lingers.
    publish(
        broker,
        PROCESSING,
        &processing(&name("b_"), &name("user_b"), created + 3),
    )
    .await;
    publish(
        broker,
        PROCESSING,
        &processing(&name("c_"), &name("user_c"), created + 4),
    )
    .await;
    let steps = lingering.elapsed();
    let ids: Vec<String> = ["a_", "b_", "c_"]
        .iter()
        .map(|n| format!("evt_fill_{n}{attempt}"))
        .collect();
    eventually(DEADLINE, "the stream applied", || async {
        for id in &ids {
            if !applied(client, id.clone()).await {
                return false;
            }
        }
        true
    })
    .await;
    eprintln!("attempt {attempt}: steps took {steps:?}");
    if steps > WINDOW {
        return None;
    }
    // Rows a transaction inserted carry its id (`xmin`).
    let transactions: i64 = client
        .query_one(
            "SELECT count(DISTINCT xmin::text) FROM events WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    Some(transactions)
}
