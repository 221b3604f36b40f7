//! One hostile run: the good stream alone (the baseline), then the good
//! stream again while the whole corpus is sent, then the queues read back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::attack::{Outcome, send};
use super::corpus::{self, Context};
use super::family::Family;
use super::good_stream::{self, GoodLoad, GoodResult, Numbering};
use super::published::{self, Published};
use crate::broker::TestBroker;
use crate::fixtures::now_unix;

/// How to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The webhook listener under attack.
    pub addr: SocketAddr,
    /// The builders' shared context (its `now` is renewed per request).
    pub context: Context,
    /// Requests of each family.
    pub per_family: BTreeMap<Family, usize>,
    /// Hostile requests in flight at once (slow senders not counted).
    pub concurrency: usize,
    /// Slow senders in flight at once.
    pub slow_concurrency: usize,
    /// The longer of ingest's head and body timeouts.
    pub slow_timeout: Duration,
    pub good: GoodLoad,
    /// How long the good stream runs alone first.
    pub baseline: Duration,
}

/// What one family's requests got.
#[derive(Debug, Default, Clone)]
pub struct FamilyTally {
    pub requests: usize,
    /// Answers, by status.
    pub statuses: BTreeMap<u16, usize>,
    /// Closed by the server without an answer.
    pub closed: usize,
    /// Requests not refused as the family expects.
    pub not_refused: usize,
    /// The first few of those, described.
    pub examples: Vec<String>,
}

/// Everything a run saw.
#[derive(Debug)]
pub struct Report {
    pub families: BTreeMap<Family, FamilyTally>,
    pub published: Published,
    pub baseline: GoodResult,
    pub under_attack: GoodResult,
    /// How long sending the corpus took.
    pub attack_elapsed: Duration,
}

/// Runs `plan` against the ingest publishing into `broker`'s topology.
pub async fn run(plan: &Plan, broker: &TestBroker) -> anyhow::Result<Report> {
    let numbering = Numbering::default();
    let baseline = good_stream::run_apart(
        "good stream alone",
        &plan.good,
        &numbering,
        Some(plan.baseline),
        CancellationToken::new(),
    )
    .await?;
    let stop = CancellationToken::new();
    let good = tokio::spawn({
        let (load, numbering, stop) = (plan.good.clone(), numbering.clone(), stop.clone());
        async move {
            good_stream::run_apart("good stream under attack", &load, &numbering, None, stop).await
        }
    });
    let started = Instant::now();
    let requests = corpus::requests(|family| plan.per_family.get(&family).copied().unwrap_or(0));
    let (slow, quick): (Vec<_>, Vec<_>) = requests.into_iter().partition(|(f, _)| f.is_slow());
    let (quick, slow) = tokio::join!(
        send_all(plan, quick, plan.concurrency),
        send_all(plan, slow, plan.slow_concurrency)
    );
    let attack_elapsed = started.elapsed();
    stop.cancel();
    let under_attack = good.await??;
    let mut families = quick?;
    for (family, tally) in slow? {
        families.insert(family, tally);
    }
    let published = published::drain(broker).await;
    Ok(Report {
        families,
        published,
        baseline,
        under_attack,
        attack_elapsed,
    })
}

/// Sends `requests` from `concurrency` tasks, each taking the next one.
async fn send_all(
    plan: &Plan,
    requests: Vec<(Family, usize)>,
    concurrency: usize,
) -> anyhow::Result<BTreeMap<Family, FamilyTally>> {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (requests, next, plan) = (Arc::clone(&requests), Arc::clone(&next), plan.clone());
            tokio::spawn(async move {
                let mut tallies: BTreeMap<Family, FamilyTally> = BTreeMap::new();
                while let Some(&(family, n)) = requests.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let context = Context {
                        now: now_unix(),
                        ..plan.context.clone()
                    };
                    let attack = corpus::build(family, n, &context);
                    let expect = family.expect(plan.slow_timeout);
                    let outcome = send(plan.addr, &attack, expect.deadline).await;
                    tallies.entry(family).or_default().count(
                        family,
                        n,
                        &outcome,
                        plan.slow_timeout,
                    );
                }
                tallies
            })
        })
        .collect();
    let mut all: BTreeMap<Family, FamilyTally> = BTreeMap::new();
    for task in tasks {
        for (family, tally) in task.await? {
            all.entry(family).or_default().merge(tally);
        }
    }
    Ok(all)
}

impl FamilyTally {
    /// Counts `outcome` of request `n`, checked against what `family` expects.
    fn count(&mut self, family: Family, n: usize, outcome: &Outcome, slow: Duration) {
        let expect = family.expect(slow);
        self.requests += 1;
        let refused = match outcome {
            Outcome::Answered { status, reason } => {
                *self.statuses.entry(*status).or_default() += 1;
                expect.statuses.contains(status)
                    && (expect.reasons.is_empty()
                        || expect.reasons.iter().any(|r| reason.contains(r))
                        // actix's own refusals carry no JSON reason.
                        || reason.is_empty() && expect.closed_ok)
            }
            Outcome::Closed => {
                self.closed += 1;
                expect.closed_ok
            }
            Outcome::NoAnswer | Outcome::ConnectFailed(_) => false,
        };
        if !refused {
            self.not_refused += 1;
            if self.examples.len() < 3 {
                self.examples.push(format!("{family:?} #{n}: {outcome:?}"));
            }
        }
    }

    fn merge(&mut self, other: FamilyTally) {
        self.requests += other.requests;
        self.closed += other.closed;
        self.not_refused += other.not_refused;
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.examples.extend(other.examples);
        self.examples.truncate(3);
    }
}
