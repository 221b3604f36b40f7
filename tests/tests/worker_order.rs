//! Order does not matter: any set of events for several people, each with
//! several sessions, delivered in any order, with any of them duplicated
//! (also within one batch), applied in batches of any size, gives the
//! record that applying each event once, in the order it was generated,
//! gives. Proptest drives the permutation, so a failing order shrinks.
//! A session's events need not agree on who it belongs to: some carry
//! `client_reference_id`, some only `metadata.user_id`, some neither (the
//! session id is the key), some are redacted copies (a placeholder, no
//! key), so batches hold events naming different keys for one session.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use std::sync::atomic::{AtomicUsize, Ordering};

use idv_tests::database::TestDatabase;
use idv_tests::worker_world::*;
use proptest::prelude::*;
use worker::store::Store;

/// What a generated event does.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Created,
    Processing,
    Failed(usize),
    Verified,
    Canceled,
    Redacted,
}

/// Which of the person's identifiers an event of the session carries.
#[derive(Debug, Clone, Copy)]
enum Keys {
    /// `client_reference_id` and `metadata.user_id`.
    Both,
    /// `metadata.user_id` only (a different key: a lower-ranked source).
    Metadata,
    /// Neither: the session id is the key.
    Neither,
    /// The redacted copy Stripe sends after a redaction: `"[redacted]"`,
    /// no metadata, `redaction` set.
    RedactedCopy,
}

fn keys() -> impl Strategy<Value = Keys> {
    prop_oneof![
        6 => Just(Keys::Both),
        2 => Just(Keys::Metadata),
        1 => Just(Keys::Neither),
        1 => Just(Keys::RedactedCopy),
    ]
}

/// How one VerificationSession ended, if it did.
#[derive(Debug, Clone, Copy)]
enum End {
    Open,
    Verified,
    Canceled,
}

/// One session's story as Stripe would tell it: optionally `created`,
/// then a submission (`processing`) and its failure for each code, then
/// maybe a final submission that verifies, or a cancel; maybe redacted
/// afterwards. `ticks` says which events come a second after the one
/// before (else in the same second: ties are common and ranked).
#[derive(Debug, Clone)]
struct Story {
    subject: usize,
    start: i64,
    created: bool,
    failures: Vec<usize>,
    end: End,
    redacted: bool,
    ticks: Vec<bool>,
    /// What each event carries to name the person, by position.
    keys: Vec<Keys>,
}

/// Failure codes, weighted towards the retryable ones so the attempt
/// limit is reached often, with every class represented.
const CODES: [&str; 7] = [
    "document_expired",
    "selfie_face_mismatch",
    "id_number_mismatch",
    "abandoned",
    "under_supported_age",
    "consent_declined",
    "a_code_stripe_may_add_later",
];

fn code() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 0usize..3, 1 => 3usize..CODES.len()]
}

fn story() -> impl Strategy<Value = Story> {
    (
        0usize..3,
        0i64..6,
        any::<bool>(),
        prop::collection::vec(code(), 0..5),
        prop_oneof![Just(End::Open), Just(End::Verified), Just(End::Canceled)],
        prop::bool::weighted(0.2),
        prop::collection::vec(any::<bool>(), 16),
        prop::collection::vec(keys(), 16),
    )
        .prop_map(
            |(subject, start, created, failures, end, redacted, ticks, keys)| Story {
                subject,
                start,
                created,
                failures,
                end,
                redacted,
                ticks,
                keys,
            },
        )
}

/// The stories' events in the order they happened, one story after
/// another: (subject, session number, kind, created, keys).
fn timeline(stories: &[Story]) -> Vec<(usize, usize, Kind, i64, Keys)> {
    let mut events = Vec::new();
    for (session, story) in stories.iter().enumerate() {
        let mut kinds = Vec::new();
        if story.created {
            kinds.push(Kind::Created);
        }
        for &code in &story.failures {
            kinds.extend([Kind::Processing, Kind::Failed(code)]);
        }
        match story.end {
            End::Open => {}
            End::Verified => kinds.extend([Kind::Processing, Kind::Verified]),
            End::Canceled => kinds.push(Kind::Canceled),
        }
        if story.redacted {
            kinds.push(Kind::Redacted);
        }
        let mut created = 1_700_000_000 + story.start;
        for (i, kind) in kinds.into_iter().enumerate() {
            if story.ticks.get(i).copied().unwrap_or(true) {
                created += 1;
            }
            let keys = story.keys.get(i).copied().unwrap_or(Keys::Both);
            events.push((story.subject, session, kind, created, keys));
        }
    }
    events
}

/// The stories' events, then the deliveries (indexes into the events:
/// every event at least once, some again) in a proptest-driven order, and
/// a batch size.
fn case() -> impl Strategy<Value = (Vec<Story>, Vec<usize>, usize)> {
    prop::collection::vec(story(), 1..5)
        .prop_flat_map(|stories| {
            let n = timeline(&stories).len().max(1);
            (Just(stories), prop::collection::vec(0..n, 0..=n), 1usize..7)
        })
        .prop_flat_map(|(stories, again, batch)| {
            let n = timeline(&stories).len();
            let deliveries: Vec<usize> =
                (0..n).chain(again.into_iter().filter(|&i| i < n)).collect();
            (Just(stories), Just(deliveries).prop_shuffle(), Just(batch))
        })
}

/// The body of each event of the stories (`prefix` unique per case).
fn bodies(prefix: &str, stories: &[Story]) -> Vec<Vec<u8>> {
    timeline(stories)
        .into_iter()
        .enumerate()
        .map(|(i, (subject, session_number, kind, created, keys))| {
            let user = format!("user_{prefix}_{subject}");
            let vs = format!("vs_{prefix}_{session_number}");
            let id = format!("evt_{prefix}_{i}");
            let named = |status: &str, code: Option<&str>| {
                let mut s = session(&vs, status, Some(&user), code);
                let metadata = serde_json::json!({"user_id": format!("u_{prefix}_{subject}")});
                match keys {
                    Keys::Both => s["metadata"] = metadata,
                    Keys::Metadata => {
                        s["client_reference_id"] = serde_json::Value::Null;
                        s["metadata"] = metadata;
                    }
                    Keys::Neither => s["client_reference_id"] = serde_json::Value::Null,
                    Keys::RedactedCopy => {
                        s["client_reference_id"] = "[redacted]".into();
                        s["redaction"] = serde_json::json!({"status": "redacted"});
                    }
                }
                s
            };
            let plain = |status: &str| named(status, None);
            match kind {
                Kind::Created => event(&id, "created", created, plain("requires_input")),
                Kind::Processing => event(&id, "processing", created, plain("processing")),
                Kind::Failed(code) => event(
                    &id,
                    "requires_input",
                    created,
                    named("requires_input", Some(CODES[code])),
                ),
                Kind::Verified => event(&id, "verified", created, plain("verified")),
                Kind::Canceled => event(&id, "canceled", created, plain("canceled")),
                Kind::Redacted => event(&id, "redacted", created, {
                    let mut s = session(&vs, "verified", Some("[redacted]"), None);
                    s["metadata"] = serde_json::json!({});
                    s["redaction"] = serde_json::json!({"status": "redacted"});
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
    sequential: Store,
    shuffled: Store,
    clients: (tokio_postgres::Client, tokio_postgres::Client),
}

fn world() -> World {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (a, b) = runtime.block_on(async { (TestDatabase::new().await, TestDatabase::new().await) });
    let settings = settings(None, &a, &EVERY_SINK);
    let settings_b = idv_tests::worker_world::settings(None, &b, &EVERY_SINK);
    let (sequential, shuffled, clients) = runtime.block_on(async {
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
        sequential,
        shuffled,
        clients,
    }
}

static CASE: AtomicUsize = AtomicUsize::new(0);

/// Which part of the record a property compares.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// Subjects, sessions, the inbox and its counts.
    Snapshot,
    Outbox,
}

impl Part {
    async fn read(self, client: &tokio_postgres::Client, like: &str) -> serde_json::Value {
        match self {
            Self::Snapshot => snapshot(client, like).await,
            Self::Outbox => outbox(client, like).await,
        }
    }
}

/// Applies the case's events once each in generated order to one database
/// and its deliveries in batches to the other; returns `part` of each.
fn both_ways(
    stories: &[Story],
    deliveries: &[usize],
    batch: usize,
    part: Part,
) -> (serde_json::Value, serde_json::Value) {
    thread_local!(static WORLD: World = world());
    let prefix = format!("p{}x", CASE.fetch_add(1, Ordering::SeqCst));
    let events = bodies(&prefix, stories);
    let shuffled: Vec<Vec<u8>> = deliveries.iter().map(|&i| events[i].clone()).collect();
    let like = format!("%{prefix}%");
    WORLD.with(|w| {
        w.runtime.block_on(async {
            apply_each(&w.sequential, &w.settings, &events).await;
            for chunk in shuffled.chunks(batch) {
                apply_batch(&w.shuffled, &w.settings, chunk).await;
            }
            (
                part.read(&w.clients.0, &like).await,
                part.read(&w.clients.1, &like).await,
            )
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Every case writes to a real database: keep shrinking bounded.
        max_shrink_iters: 2048,
        .. ProptestConfig::default()
    })]

    /// Subjects (phantoms included), sessions, the inbox and its counts.
    #[test]
    fn any_order_with_duplicates_and_any_batching_gives_the_same_record(
        (stories, deliveries, batch) in case(),
    ) {
        let (sequential, shuffled) = both_ways(&stories, &deliveries, batch, Part::Snapshot);
        prop_assert_eq!(sequential, shuffled);
    }

    /// The outbox rows (kind, idempotency key, payload), every action
    /// configured: which rows exist is a function of the event set. (Before
    /// issue 8 a `consent_declined` then `verified` wrote the manual-review
    /// rows only when the failure arrived first, and a retry notice was
    /// lost when an older failure arrived after a newer one.)
    #[test]
    fn any_order_with_duplicates_and_any_batching_gives_the_same_outbox(
        (stories, deliveries, batch) in case(),
    ) {
        let (sequential, shuffled) = both_ways(&stories, &deliveries, batch, Part::Outbox);
        prop_assert_eq!(sequential, shuffled);
    }
}
