//! Order does not matter: any permutation of a session's events, with
//! duplicates, applied one by one or in batches, gives the same record.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

#[path = "worker_support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use idv_tests::database::TestDatabase;
use proptest::prelude::*;
use support::*;
use worker::store::Store;

/// One generated event: (kind, created offset, failure code index).
type Step = (u8, i64, usize);

const CODES: [&str; 5] = [
    "document_expired",
    "selfie_face_mismatch",
    "abandoned",
    "under_supported_age",
    "consent_declined",
];

/// The bodies of `steps` for one subject with two sessions (`prefix` unique per case).
fn bodies(prefix: &str, steps: &[Step]) -> Vec<Vec<u8>> {
    let user = format!("user_{prefix}");
    steps
        .iter()
        .enumerate()
        .map(|(i, (kind, offset, code))| {
            let vs = format!("vs_{prefix}{}", i % 2);
            let id = format!("evt_{prefix}_{i}");
            let created = 1_700_000_000 + offset;
            let plain = |status: &str| session(&vs, status, Some(&user), None);
            match kind {
                0 => event(
                    &id,
                    "created",
                    created,
                    session(&vs, "requires_input", Some(&user), None),
                ),
                1 => event(&id, "processing", created, plain("processing")),
                2 => failed(&id, &vs, &user, created, CODES[*code]),
                3 => event(&id, "verified", created, plain("verified")),
                4 => event(&id, "canceled", created, plain("canceled")),
                _ => event(&id, "redacted", created, {
                    let mut s = session(&vs, "verified", Some("[redacted]"), None);
                    s["metadata"] = serde_json::json!({});
                    s
                }),
            }
        })
        .collect()
}

struct World {
    runtime: tokio::runtime::Runtime,
    // Dropped (and the databases with them) at the end of the test.
    _databases: (TestDatabase, TestDatabase),
    settings: worker::settings::Settings,
    first: Store,
    second: Store,
    clients: (tokio_postgres::Client, tokio_postgres::Client),
}

fn world() -> World {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (a, b) = runtime.block_on(async { (TestDatabase::new().await, TestDatabase::new().await) });
    let settings = settings(None, &a, &[]);
    let settings_b = support::settings(None, &b, &[]);
    let (first, second, clients) = runtime.block_on(async {
        (
            store(&settings).await,
            store(&settings_b).await,
            (a.client().await, b.client().await),
        )
    });
    World {
        runtime,
        _databases: (a, b),
        settings,
        first,
        second,
        clients,
    }
}

static CASE: AtomicUsize = AtomicUsize::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn any_order_with_duplicates_gives_the_same_record(
        steps in prop::collection::vec((0u8..6, 0i64..4, 0usize..CODES.len()), 1..9),
        seed in any::<u64>(),
        batch in 1usize..5,
    ) {
        thread_local!(static WORLD: World = world());
        let prefix = format!("p{}x", CASE.fetch_add(1, Ordering::SeqCst));
        let ordered = bodies(&prefix, &steps);
        // A permutation with every event duplicated, from the seed.
        let mut shuffled: Vec<Vec<u8>> = ordered.iter().chain(ordered.iter()).cloned().collect();
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let j = usize::try_from(state % (i as u64 + 1)).unwrap();
            shuffled.swap(i, j);
        }
        WORLD.with(|w| {
            let like = format!("%{prefix}%");
            let (one, two) = w.runtime.block_on(async {
                apply_each(&w.first, &w.settings, &ordered).await;
                for chunk in shuffled.chunks(batch) {
                    apply_batch(&w.second, &w.settings, chunk).await;
                }
                (snapshot(&w.clients.0, &like).await, snapshot(&w.clients.1, &like).await)
            });
            prop_assert_eq!(one, two);
            Ok(())
        })?;
    }
}
