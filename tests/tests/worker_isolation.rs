//! The worker's transactions are READ COMMITTED whatever the database's
//! default: on a database whose `default_transaction_isolation` is
//! `repeatable read`, concurrent batches touching the same people (each
//! waits for the subject's row lock, then reads what the holder committed)
//! all apply, and give the record of one sequential pass. Under repeatable
//! read they would fail with serialization errors (40001) or recompute a
//! subject from a snapshot taken before the wait.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a failure should stop the test loudly

use std::sync::{Arc, Mutex};

use idv_tests::database::TestDatabase;
use idv_tests::worker_world::*;
use rand::seq::SliceRandom;

/// People with several sessions each, every session failing and
/// resubmitting, some verifying: many transactions per subject row.
fn stream(prefix: &str, people: usize, sessions: usize) -> Vec<Vec<u8>> {
    let codes = [
        "document_expired",
        "selfie_face_mismatch",
        "consent_declined",
    ];
    let mut bodies = Vec::new();
    for p in 0..people {
        let user = format!("user_{prefix}{p}");
        for s in 0..sessions {
            let vs = format!("vs_{prefix}{p}_{s}");
            let base = 1_700_000_000 + i64::try_from(p * 100 + s * 10).unwrap();
            let id = |n: usize| format!("evt_{prefix}{p}_{s}_{n}");
            let processing = session(&vs, "processing", Some(&user), None);
            bodies.push(event(&id(0), "processing", base, processing.clone()));
            bodies.push(failed(&id(1), &vs, &user, base + 1, codes[(p + s) % 2]));
            bodies.push(event(&id(2), "processing", base + 2, processing));
            if (p + s) % 3 == 0 {
                let verified = session(&vs, "verified", Some(&user), None);
                bodies.push(event(&id(3), "verified", base + 3, verified));
            } else {
                bodies.push(failed(&id(3), &vs, &user, base + 3, codes[(p * s) % 3]));
            }
        }
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_on_a_repeatable_read_database_give_the_sequential_record() {
    let db = TestDatabase::new().await;
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} SET default_transaction_isolation = 'repeatable read'",
            db.name
        ))
        .await
        .unwrap();
    let settings = settings(None, &db, &[]);
    let concurrent = store(&settings).await;
    // The setting reaches the pool's connections (all made after it).
    let pooled = concurrent.pool().get().await.unwrap();
    let default: String = pooled
        .query_one("SHOW default_transaction_isolation", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(default, "repeatable read");
    drop(pooled);

    let distinct = stream("iso", 4, 6);
    let mut deliveries = distinct.clone();
    deliveries.shuffle(&mut rand::rng());
    let queue = Arc::new(Mutex::new(deliveries));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (queue, store, settings) = (queue.clone(), concurrent.clone(), settings.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            loop {
                // Batches of one or two events: many transactions, each
                // waiting on the subject rows the others hold.
                let batch: Vec<Vec<u8>> = {
                    let mut queue = queue.lock().unwrap();
                    let n = queue.len().min(2);
                    queue.drain(..n).collect()
                };
                if batch.is_empty() {
                    return errors;
                }
                let events: Vec<_> = batch.iter().map(|b| incoming(&settings, b)).collect();
                let refs: Vec<_> = events.iter().collect();
                match store.apply(&refs).await {
                    Ok(outcomes) => {
                        for outcome in outcomes {
                            if let Err(failure) = outcome {
                                errors.push(failure.to_string());
                            }
                        }
                    }
                    Err(unavailable) => errors.push(unavailable.to_string()),
                }
            }
        }));
    }
    let mut errors = Vec::new();
    for task in tasks {
        errors.extend(task.await.unwrap());
    }
    assert!(
        errors.is_empty(),
        "every batch applies at once, none fails: {} failed, first: {:?}",
        errors.len(),
        errors.first()
    );

    let reference_db = TestDatabase::new().await;
    let reference_settings = idv_tests::worker_world::settings(None, &reference_db, &[]);
    let reference = store(&reference_settings).await;
    apply_each(&reference, &reference_settings, &distinct).await;
    let client = db.client().await;
    assert_eq!(
        snapshot(&client, "%iso%").await,
        snapshot(&reference_db.client().await, "%iso%").await,
        "concurrent on a repeatable-read database gives the sequential record"
    );
}
