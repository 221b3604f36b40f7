//! The fault run's ledger: what the Stripe-like sender did and was told,
//! and what was done to the pipeline meanwhile, counted as it happens
//! (read while the run goes on, to see 503s come and go) and printed at
//! the end beside what the audit found.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the sender's tasks and the fault schedule.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Deliveries planned (events, their duplicates, the poison).
    pub deliveries: AtomicU64,
    /// POSTs made, retries included.
    pub posts: AtomicU64,
    /// Answers 2xx (one per delivery: a 2xx ends its retries).
    pub answered_2xx: AtomicU64,
    /// Answers 503, each retried.
    pub retried_503: AtomicU64,
    /// Other non-2xx answers, each retried.
    pub retried_other: AtomicU64,
    /// Connection errors and timeouts, each retried.
    pub retried_connection: AtomicU64,
    /// Non-2xx answers by status.
    statuses: Mutex<BTreeMap<u16, u64>>,
    /// Event ids answered 2xx at least once.
    answered: Mutex<BTreeSet<String>>,
    /// Faults done, by name, in the order first done.
    faults: Mutex<Vec<(String, u64)>>,
}

impl Ledger {
    pub fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }

    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
    }

    pub fn answered(&self, event_id: &str) {
        Self::add(&self.answered_2xx);
        lock(&self.answered).insert(event_id.to_owned());
    }

    pub fn refused(&self, status: u16) {
        if status == 503 {
            Self::add(&self.retried_503);
        } else {
            Self::add(&self.retried_other);
        }
        *lock(&self.statuses).entry(status).or_default() += 1;
    }

    /// Event ids answered 2xx.
    pub fn answered_ids(&self) -> BTreeSet<String> {
        lock(&self.answered).clone()
    }

    /// Non-2xx answers by status.
    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        lock(&self.statuses).clone()
    }

    /// Records one fault of kind `name` done to the pipeline.
    pub fn fault(&self, name: &str) {
        let mut faults = lock(&self.faults);
        match faults.iter_mut().find(|(n, _)| n == name) {
            Some((_, count)) => *count += 1,
            None => faults.push((name.to_owned(), 1)),
        }
    }

    pub fn faults(&self) -> Vec<(String, u64)> {
        lock(&self.faults).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Ledger {
    /// The ledger as printed at the end of a run, with the audit's figures.
    pub fn render(&self, events: usize, report: &super::audit::Report) -> String {
        let mut out = String::from("fault run ledger\n");
        let mut line = |name: &str, value: String| out.push_str(&format!("  {name:<46} {value}\n"));
        line("events (distinct, poison included)", events.to_string());
        line(
            "deliveries (duplicates included)",
            Self::count(&self.deliveries).to_string(),
        );
        line(
            "POSTs (retries included)",
            Self::count(&self.posts).to_string(),
        );
        line("answered 2xx", Self::count(&self.answered_2xx).to_string());
        line("503s retried", Self::count(&self.retried_503).to_string());
        line(
            "other non-2xx retried",
            format!("{} {:?}", Self::count(&self.retried_other), self.statuses()),
        );
        line(
            "connection errors retried",
            Self::count(&self.retried_connection).to_string(),
        );
        line("applied (inbox rows)", report.applied.to_string());
        line("subjects audited", report.subjects.to_string());
        line(
            "dead letters (all poison: none to apply)",
            report.dead_letters.to_string(),
        );
        line("outbox rows", report.outbox_rows.to_string());
        line(
            "actions (webhook rows sent)",
            report.webhook_rows_sent.to_string(),
        );
        line(
            "webhook requests received",
            report.webhook_requests.to_string(),
        );
        line("repeats (same idempotency key)", report.repeats.to_string());
        line(
            "rows performed but left unmarked",
            report.interrupted_rows.to_string(),
        );
        for (fault, count) in self.faults() {
            line(&fault, count.to_string());
        }
        line("discrepancies", report.discrepancies.len().to_string());
        out
    }
}
