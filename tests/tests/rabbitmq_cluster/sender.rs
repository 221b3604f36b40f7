//! A sender that behaves like Stripe: each event POSTed signed at the
//! moment it is sent, at a steady pace, and every answer other than 2xx
//! (and every connection error) retried with growing delays until a 2xx
//! comes. The ledger keeps the events answered 2xx.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idv_tests::fixtures::{TEST_SECRET, sign_now};
use tokio_util::sync::CancellationToken;

/// What the sender did, counted as it goes.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Events whose first POST was made.
    pub sent: AtomicU64,
    /// POSTs answered 2xx (one per event: it is not sent again after).
    pub answered_2xx: AtomicU64,
    /// POSTs answered otherwise (503 while the broker is away), retried.
    pub non_2xx_retried: AtomicU64,
    /// POSTs that got no answer (connection refused, reset, timeout), retried.
    pub connection_errors_retried: AtomicU64,
    /// Event id → body of every event answered 2xx.
    pub accepted: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl Ledger {
    pub fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The running sender; [`Sender::finish`] stops taking new events and
/// waits until every event started is answered 2xx.
#[derive(Debug)]
pub struct Sender {
    pub ledger: Arc<Ledger>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// First retry delay; doubles up to [`MAX_DELAY`] (Stripe's hours, compressed).
const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(1);

impl Sender {
    /// Starts sending `events` (id, body) to `webhook`, one every `every`,
    /// with up to `concurrency` POSTs (first tries and retries) in flight.
    pub fn start(
        webhook: String,
        events: Vec<(String, Vec<u8>)>,
        every: Duration,
        concurrency: usize,
    ) -> Self {
        let ledger = Arc::new(Ledger::default());
        let stop = CancellationToken::new();
        let events = Arc::new(events);
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client");
        let tasks = (0..concurrency)
            .map(|_| {
                let (ledger, stop, events, next) = (
                    Arc::clone(&ledger),
                    stop.clone(),
                    Arc::clone(&events),
                    Arc::clone(&next),
                );
                let (client, webhook) = (client.clone(), webhook.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((id, body)) = events.get(i) else {
                            return;
                        };
                        let due = started + every * u32::try_from(i).expect("few events");
                        tokio::select! {
                            () = tokio::time::sleep_until(due.into()) => {}
                            () = stop.cancelled() => return,
                        }
                        ledger.sent.fetch_add(1, Ordering::Relaxed);
                        deliver(&client, &webhook, body, &ledger).await;
                        ledger
                            .accepted
                            .lock()
                            .expect("ledger lock")
                            .insert(id.clone(), body.clone());
                    }
                })
            })
            .collect();
        Self {
            ledger,
            stop,
            tasks,
        }
    }

    /// Takes no new event; returns once every event started has had its
    /// 2xx (within `deadline`).
    pub async fn finish(self, deadline: Duration) -> Arc<Ledger> {
        self.stop.cancel();
        tokio::time::timeout(deadline, futures_util::future::join_all(self.tasks))
            .await
            .expect("every event started is answered 2xx within the deadline");
        self.ledger
    }
}

/// POSTs `body` until it is answered 2xx, as Stripe retries.
async fn deliver(client: &reqwest::Client, webhook: &str, body: &[u8], ledger: &Ledger) {
    let mut delay = FIRST_DELAY;
    loop {
        let response = client
            .post(webhook)
            .header("Content-Type", "application/json")
            .header("Stripe-Signature", sign_now(TEST_SECRET, body))
            .body(body.to_vec())
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => {
                ledger.answered_2xx.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(_) => ledger.non_2xx_retried.fetch_add(1, Ordering::Relaxed),
            Err(_) => ledger
                .connection_errors_retried
                .fetch_add(1, Ordering::Relaxed),
        };
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}
