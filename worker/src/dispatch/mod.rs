//! The dispatcher: performs the outbox rows the worker writes with each
//! transition. It claims due rows in small batches (see [`claim`]), judges
//! whether each is still true ([`judge`]), performs it through the sink of
//! its kind ([`Sink`]), and marks it `sent`, `superseded`, `skipped`,
//! `failed`, or due again after a backoff. It runs inside `idv-worker` by
//! default, or alone (`idv-worker --dispatcher-only`, `WORKER_ROLE`).
//!
//! Every action carries the row's idempotency key to the other side, so a
//! crash between "performed" and "marked" repeats it at most once per
//! crash, recognisably.

mod backoff;
pub mod claim;
pub mod email;
pub mod judge;
pub mod message;
pub mod outcome_exchange;
pub mod outcome_webhook;
pub mod settings;
pub mod sink;
pub mod stripe;

pub use settings::{DispatchSettings, Role};
pub use sink::{Job, Performed, Sink};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures_util::FutureExt as _;
use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::claim::{Claimed, Mark};
use self::judge::Verdict;
use self::message::OutcomeMessage;
use crate::domain::outbox::ActionKind;
use crate::metrics::Metrics;
use crate::settings::Settings;

/// How often the age of the oldest pending row is measured.
const OLDEST_EVERY: Duration = Duration::from_secs(5);

/// The dispatcher: a pool, the sinks by kind, and how to retry.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pool: Pool,
    settings: DispatchSettings,
    max_failed_attempts: i32,
    sinks: Arc<HashMap<ActionKind, Arc<dyn Sink>>>,
    metrics: Arc<Metrics>,
}

/// What one pass did, for the loop and the tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub claimed: usize,
}

impl Dispatcher {
    /// The dispatcher with a sink for each action `settings` configure.
    pub fn new(settings: &Settings, pool: Pool, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let dispatch = settings.dispatch.clone();
        let http = reqwest::Client::builder()
            .timeout(dispatch.http_timeout)
            .connect_timeout(dispatch.http_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("idv-pipeline/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let mut sinks: Vec<Arc<dyn Sink>> = vec![Arc::new(outcome_exchange::OutcomeExchange::new(
            settings.amqp_url.clone(),
            settings.topology.outcomes_exchange(),
        ))];
        if let Some(webhook) = &dispatch.webhook {
            sinks.push(Arc::new(outcome_webhook::OutcomeWebhook::new(
                webhook.clone(),
                http.clone(),
            )));
        }
        if let Some(email) = &dispatch.email {
            sinks.push(Arc::new(email::EmailSink::new(
                email.clone(),
                pool.clone(),
                settings.max_failed_attempts,
            )?));
        }
        if let Some(stripe) = &dispatch.stripe {
            let client = stripe::StripeClient::new(stripe.clone(), http.clone());
            sinks.push(Arc::new(stripe::cancel::CancelSession::new(client.clone())));
            if dispatch.expected_matching {
                sinks.push(Arc::new(
                    stripe::verified_outputs::CompareVerifiedOutputs::new(
                        client,
                        pool.clone(),
                        dispatch.sinks(),
                    ),
                ));
            }
        }
        let sinks = sinks
            .into_iter()
            .flat_map(|sink| {
                sink.kinds()
                    .iter()
                    .map(move |kind| (*kind, Arc::clone(&sink)))
            })
            .collect();
        Ok(Self {
            pool,
            settings: dispatch,
            max_failed_attempts: settings.max_failed_attempts,
            sinks: Arc::new(sinks),
            metrics,
        })
    }

    /// Adds (or replaces) the sink for its kinds.
    pub fn with_sink(mut self, sink: Arc<dyn Sink>) -> Self {
        let mut sinks = (*self.sinks).clone();
        for kind in sink.kinds() {
            sinks.insert(*kind, Arc::clone(&sink));
        }
        self.sinks = Arc::new(sinks);
        self
    }

    /// Dispatches until `shutdown`, finishing the rows in hand.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(
            sinks = ?self.sinks.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            "dispatcher started"
        );
        let mut failures: u32 = 0;
        let mut last_oldest = Instant::now()
            .checked_sub(OLDEST_EVERY)
            .unwrap_or_else(Instant::now);
        while !shutdown.is_cancelled() {
            if last_oldest.elapsed() >= OLDEST_EVERY {
                self.measure_oldest().await;
                last_oldest = Instant::now();
            }
            let pause = match self.dispatch_once().await {
                Ok(pass) if pass.claimed as i64 >= self.settings.batch_size => None,
                Ok(_) => {
                    failures = 0;
                    Some(self.settings.poll)
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    warn!(error = %error, "dispatcher cannot reach PostgreSQL; retrying");
                    Some(Duration::from_millis(200) * failures.min(25))
                }
            };
            if let Some(pause) = pause {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.cancelled() => {}
                }
            }
        }
        info!("dispatcher stopped");
    }

    /// Claims one batch of due rows, performs them concurrently and marks
    /// each. `Err` when PostgreSQL cannot be reached (nothing claimed, or
    /// claims that lapse after the lease).
    pub async fn dispatch_once(&self) -> anyhow::Result<Pass> {
        let client = self.pool.get().await?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let rows = claim::claim(
            &client,
            self.settings.batch_size,
            self.settings.lease,
            &token,
        )
        .await?;
        if rows.is_empty() {
            return Ok(Pass::default());
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut facts = claim::facts(&client, &ids, self.max_failed_attempts).await?;
        drop(client);
        let claimed = rows.len();
        let jobs = rows.into_iter().map(|row| {
            let facts = facts.remove(&row.id).unwrap_or_default();
            self.perform_and_mark(row, facts, &token)
        });
        join_all(jobs).await;
        Ok(Pass { claimed })
    }

    async fn perform_and_mark(&self, row: Claimed, facts: claim::Facts, token: &str) {
        let started = Instant::now();
        let kind = ActionKind::parse(&row.kind);
        let mark = match kind {
            None => Mark::Finished("failed", format!("unknown kind {:?}", row.kind)),
            Some(kind) => {
                let text = |field| row.payload.get(field).and_then(|v| v.as_str());
                match judge::judge(kind, text("event_id"), text("outcome"), &facts) {
                    Verdict::Supersede(why) => Mark::Finished("superseded", why.to_owned()),
                    Verdict::Wait(why, recheck) => Mark::Wait(why.to_owned(), recheck),
                    Verdict::Perform => {
                        let message = OutcomeMessage::new(&row, &facts, self.max_failed_attempts);
                        let job = Job {
                            kind,
                            row: row.clone(),
                            facts,
                            message,
                        };
                        let performed = self.perform(&job).await;
                        if matches!(performed, Performed::Done) {
                            crate::fail_point::after_perform(row.id);
                        }
                        self.mark_for(&row, performed)
                    }
                }
            }
        };
        let result = match &mark {
            Mark::Sent => "sent",
            Mark::Finished(status, _) => status,
            Mark::Retry { .. } => "retried",
            Mark::Wait(..) => "waiting",
        };
        let kind_label = kind.map_or("unknown", ActionKind::as_str);
        self.metrics
            .outbox_action(kind_label, result, started.elapsed());
        if let Mark::Retry { error, .. } | Mark::Finished("failed", error) = &mark {
            warn!(kind = kind_label, row = row.id, attempts = row.attempts, error = %error, "outbox action not done");
        }
        match self.pool.get().await {
            Ok(client) => match claim::mark(&client, row.id, token, &mark).await {
                Ok(true) => {}
                Ok(false) => warn!(
                    row = row.id,
                    "claim lost before marking: the row will be performed again"
                ),
                Err(error) => {
                    warn!(row = row.id, error = %error, "cannot mark the row: it will be performed again after its lease")
                }
            },
            Err(error) => {
                warn!(row = row.id, error = %error, "cannot mark the row: it will be performed again after its lease")
            }
        }
    }

    /// The sink's performance, cut off at half the lease.
    async fn perform(&self, job: &Job) -> Performed {
        let Some(sink) = self.sinks.get(&job.kind) else {
            return Performed::Retry {
                error: format!("no {} sink is configured here", job.kind),
                after: None,
            };
        };
        let limit = self.settings.lease / 2;
        // A sink that panics fails its row, not the dispatcher.
        let performed = std::panic::AssertUnwindSafe(sink.perform(job)).catch_unwind();
        match tokio::time::timeout(limit, performed).await {
            Ok(Ok(performed)) => performed,
            Ok(Err(_)) => Performed::Failed(format!("the {} action panicked", job.kind)),
            Err(_) => Performed::Retry {
                error: format!("cut off after {limit:?}"),
                after: None,
            },
        }
    }

    fn mark_for(&self, row: &Claimed, performed: Performed) -> Mark {
        match performed {
            Performed::Done => Mark::Sent,
            Performed::Skipped(why) => Mark::Finished("skipped", why),
            Performed::Failed(error) => Mark::Finished("failed", error),
            Performed::Wait(why) => Mark::Wait(why, claim::WAIT_RECHECK),
            Performed::Retry { error, .. } if row.attempts >= self.settings.max_attempts => {
                Mark::Finished(
                    "failed",
                    format!("{error} (after {} attempts)", row.attempts),
                )
            }
            Performed::Retry { error, after } => Mark::Retry {
                after: backoff::delay(
                    self.settings.backoff_min,
                    self.settings.backoff_max,
                    row.attempts,
                    after,
                ),
                error,
            },
        }
    }

    async fn measure_oldest(&self) {
        let Ok(client) = self.pool.get().await else {
            return;
        };
        let oldest = client
            .query_one(
                "SELECT COALESCE(extract(epoch FROM now() - min(created_at)), 0)::float8 \
                 FROM outbox WHERE status = 'pending' AND due_at <= now()",
                &[],
            )
            .await;
        if let Ok(row) = oldest
            && let Ok(seconds) = row.try_get::<_, f64>(0)
        {
            self.metrics.outbox_oldest_pending_seconds.set(seconds);
        }
    }
}
