//! The application: built (pool connected, topology declared, admin
//! listener bound) before it runs, so start-up fails fast; then consumers
//! (with the dead-letter drain and gauges beside them) and the dispatcher
//! under one cancellation token and task tracker until shutdown.

use std::net::TcpListener;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::consume::{self, Context};
use crate::dead_letter;
use crate::dispatch::Dispatcher;
use crate::health::{Health, Readiness};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::{self, Rules, Store};

/// A built worker, ready to run.
#[derive(Debug)]
pub struct Application {
    context: Arc<Context>,
    admin: TcpListener,
    /// `/readyz`'s own connection to PostgreSQL (see [`Readiness`]).
    readiness_pool: deadpool_postgres::Pool,
    /// The dead-letter drain's and gauges' two connections, apart from the
    /// lanes' (see [`dead_letter`]); only where the worker consumes.
    dead_letter_pool: Option<deadpool_postgres::Pool>,
    /// Built with the rest (its templates and sinks checked), unless this
    /// process only consumes.
    dispatcher: Option<Dispatcher>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = store::connect_pool(&settings.database_url, settings.pool_size).await?;
        let readiness_pool = store::connect_pool(&settings.database_url, 1).await?;
        let dead_letter_pool = if settings.dispatch.role.consumes() {
            Some(store::lazy_pool(&settings.database_url, 2)?)
        } else {
            None
        };
        declare_topology(&settings).await?;
        let admin = TcpListener::bind(settings.admin_listen)
            .with_context(|| format!("binding WORKER_ADMIN_LISTEN {}", settings.admin_listen))?;
        admin.set_nonblocking(true)?;
        info!(
            // The bound address: with port 0, the only place to learn it.
            admin = %admin.local_addr()?,
            consumers = settings.consumers,
            pool_size = settings.pool_size,
            prefetch = settings.prefetch,
            batch_size = settings.batch_size,
            batch_linger_ms = settings.batch_linger.as_millis(),
            queue = %settings.topology.events_queue(),
            dlq_drain = settings.dlq_drain && dead_letter_pool.is_some(),
            "worker built"
        );
        let rules = Rules::from_settings(&settings);
        let metrics = Arc::new(Metrics::default());
        let dispatcher = if settings.dispatch.role.dispatches() {
            let dispatcher = Dispatcher::new(&settings, pool.clone(), Arc::clone(&metrics))
                .context("building the dispatcher")?;
            Some(dispatcher)
        } else {
            None
        };
        Ok(Self {
            context: Arc::new(Context {
                store: Store::new(pool, rules),
                settings,
                metrics,
                health: Arc::new(Health::default()),
                shutdown: CancellationToken::new(),
            }),
            admin,
            readiness_pool,
            dead_letter_pool,
            dispatcher,
        })
    }

    /// The admin listener's port (useful with port 0).
    pub fn admin_port(&self) -> u16 {
        self.admin.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.context.metrics)
    }

    /// Consumes until `stop` resolves (a signal, or a test's token), then
    /// finishes the batches in hand, closes the broker links and the admin
    /// listener. The same run API as ingest's.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let shutdown = self.context.shutdown.clone();
        tokio::spawn(async move {
            stop.await;
            shutdown.cancel();
        });
        let ctx = self.context;
        let readiness = Readiness::new(Arc::clone(&ctx.health), self.readiness_pool);
        let server = crate::admin::serve(self.admin, Arc::new(readiness), Arc::clone(&ctx.metrics))
            .context("starting the admin listener")?;
        let server_handle = server.handle();
        let admin_task = tokio::spawn(server);
        let tracker = TaskTracker::new();
        let role = ctx.settings.dispatch.role;
        if role.consumes() {
            // One consumer, feeding `consumers` lanes (see `consume::lanes`).
            tracker.spawn(consume::run_consumer(Arc::clone(&ctx), 0));
        }
        if let Some(pool) = self.dead_letter_pool {
            let tasks = Arc::new(dead_letter::Tasks {
                pool,
                amqp_url: ctx.settings.amqp_url.clone(),
                topology: ctx.settings.topology.clone(),
                metrics: Arc::clone(&ctx.metrics),
                health: Arc::clone(&ctx.health),
                shutdown: ctx.shutdown.clone(),
            });
            if ctx.settings.dlq_drain {
                tracker.spawn(dead_letter::drain::run(Arc::clone(&tasks)));
            }
            tracker.spawn(dead_letter::gauges::run(tasks));
        }
        if !role.consumes() {
            ctx.health.dispatcher_only();
        }
        if let Some(dispatcher) = self.dispatcher {
            let shutdown = ctx.shutdown.clone();
            tracker.spawn(async move {
                dispatcher.run(shutdown.clone()).await;
                if !shutdown.is_cancelled() {
                    tracing::error!("the dispatcher stopped before shutdown");
                }
            });
        }
        tracker.close();
        ctx.shutdown.cancelled().await;
        info!("shutting down: finishing the batches in hand");
        tracker.wait().await;
        server_handle.stop(true).await;
        let _ = admin_task.await;
        ctx.store.pool().close();
        info!("stopped");
        Ok(())
    }
}

/// Declares the topology once at start, so a wrong `AMQP_URL` fails fast.
async fn declare_topology(settings: &Settings) -> anyhow::Result<()> {
    let timeout = crate::consume::OPEN_TIMEOUT;
    let declare = shared::topology::declare_at(&settings.amqp_url, &settings.topology);
    let declared = match tokio::time::timeout(timeout, declare).await {
        Ok(declared) => declared.map_err(anyhow::Error::from),
        Err(_) => Err(anyhow::anyhow!("no answer within {timeout:?}")),
    };
    declared.context("connecting to the broker (AMQP_URL) and declaring the AMQP topology")
}
