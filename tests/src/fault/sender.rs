//! A sender that behaves like Stripe: every event delivered at least once
//! (some twice or three times), in no particular order, each POST signed
//! at the moment it is made, and every answer other than 2xx (and every
//! connection error or timeout) retried with growing, jittered delays
//! until a 2xx comes. Stripe retries for three days; here the delays are
//! compressed to 100 ms doubling up to 2 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;

use super::ledger::Ledger;
use super::stories::Story;
use crate::fixtures::{TEST_SECRET, sign_now};

/// One delivery of one event.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event_id: String,
    pub body: Arc<Vec<u8>>,
}

/// Every event of `stories` and `poison` once, a share of them again
/// (duplicates, as Stripe sends), all shuffled (out of order).
pub fn plan<R: Rng>(rng: &mut R, stories: &[Story], poison: &[(String, Vec<u8>)]) -> Vec<Delivery> {
    let mut deliveries = Vec::new();
    let events = stories
        .iter()
        .flat_map(|s| &s.events)
        .map(|e| (e.id.clone(), e.body.clone()))
        .chain(poison.iter().cloned());
    for (event_id, body) in events {
        let copies = match rng.random_range(0..100) {
            0..5 => 3,
            5..20 => 2,
            _ => 1,
        };
        let body = Arc::new(body);
        for _ in 0..copies {
            deliveries.push(Delivery {
                event_id: event_id.clone(),
                body: Arc::clone(&body),
            });
        }
    }
    deliveries.shuffle(rng);
    deliveries
}

/// How the sender paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Deliveries in flight at most.
    pub concurrency: usize,
    /// The deliveries are spread evenly over this time (retries come on top).
    pub spread: Duration,
}

/// Sends every delivery to `url` (ingest's `/webhook`) until each is
/// answered 2xx, counting everything in `ledger`.
pub async fn send_all(url: String, deliveries: Vec<Delivery>, pace: Pace, ledger: Arc<Ledger>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("HTTP client");
    ledger
        .deliveries
        .fetch_add(deliveries.len() as u64, Ordering::SeqCst);
    let deliveries = Arc::new(deliveries);
    let next = Arc::new(AtomicUsize::new(0));
    let start = tokio::time::Instant::now();
    let every = pace.spread / u32::try_from(deliveries.len().max(1)).unwrap_or(u32::MAX);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..pace.concurrency {
        let (client, url, ledger) = (client.clone(), url.clone(), Arc::clone(&ledger));
        let (deliveries, next) = (Arc::clone(&deliveries), Arc::clone(&next));
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(delivery) = deliveries.get(i) else {
                    return;
                };
                let due = start + every * u32::try_from(i).unwrap_or(u32::MAX);
                tokio::time::sleep_until(due).await;
                deliver(&client, &url, delivery, &ledger).await;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a sender task");
    }
}

/// POSTs one delivery until it is answered 2xx.
async fn deliver(client: &reqwest::Client, url: &str, delivery: &Delivery, ledger: &Ledger) {
    let mut attempt: u32 = 0;
    loop {
        Ledger::add(&ledger.posts);
        // Signed afresh for each attempt, as Stripe does.
        let signature = sign_now(TEST_SECRET, &delivery.body);
        let sent = client
            .post(url)
            .header("Content-Type", "application/json")
            .header("Stripe-Signature", signature)
            .body(delivery.body.as_ref().clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                ledger.answered(&delivery.event_id);
                return;
            }
            Ok(response) => ledger.refused(response.status().as_u16()),
            Err(_) => Ledger::add(&ledger.retried_connection),
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// 100 ms doubling up to 2 s, each between half and all of it.
fn backoff(attempt: u32) -> Duration {
    let full = Duration::from_millis(100)
        .saturating_mul(2_u32.saturating_pow(attempt.min(5)))
        .min(Duration::from_secs(2));
    full.mul_f64(rand::rng().random_range(0.5..=1.0))
}
