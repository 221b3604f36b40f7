//! Builds the ingest application and runs it until it is told to stop.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::publisher::{BrokerConfig, Publisher};
use crate::routes::{admin, webhook};
use crate::settings::Settings;

/// What every request handler shares.
#[derive(Debug)]
pub struct AppState {
    pub settings: Settings,
    pub publisher: Publisher,
    pub metrics: Arc<Metrics>,
    /// Set when shutdown begins, so `/readyz` turns traffic away first.
    pub draining: AtomicBool,
    /// One permit per body byte held by a request, process-wide
    /// (`INGEST_BODY_BUDGET_BYTES`): the signature can only be checked
    /// once the whole body is in, so bodies are what an unauthenticated
    /// client can make ingest hold.
    pub body_budget: Arc<Semaphore>,
}

/// A built ingest service: listeners bound, broker connected.
pub struct Application {
    port: u16,
    admin_port: u16,
    server: Server,
    admin: Server,
    state: web::Data<AppState>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .field("admin_port", &self.admin_port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Binds both listeners (port 0 picks a free one), connects to the broker
    /// and declares the topology. Fails with a clear message if any of that
    /// cannot be done.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = crate::listener::bind(settings.listen, settings.listen_backlog)
            .with_context(|| format!("cannot listen on INGEST_LISTEN={}", settings.listen))?;
        let admin_listener = TcpListener::bind(settings.admin_listen).with_context(|| {
            format!(
                "cannot listen on INGEST_ADMIN_LISTEN={}",
                settings.admin_listen
            )
        })?;
        let metrics = Arc::new(Metrics::new());
        let publisher = Publisher::connect(
            BrokerConfig {
                url: settings.amqp_url.clone(),
                topology: settings.topology.clone(),
                channels: settings.publish_channels,
                publish_timeout: settings.publish_timeout,
            },
            metrics.publisher.clone(),
        )
        .await
        .context("cannot connect to RabbitMQ at AMQP_URL and declare the topology")?;
        let port = listener.local_addr()?.port();
        let admin_port = admin_listener.local_addr()?.port();
        let drain_secs = drain_secs(&settings);
        let workers = settings.http_workers;
        let max_connections = settings.max_connections;
        let head_timeout = settings.head_timeout;
        let body_budget = Arc::new(Semaphore::new(
            settings.body_budget_bytes.min(Semaphore::MAX_PERMITS),
        ));
        let state = web::Data::new(AppState {
            body_budget,
            settings,
            publisher: publisher.clone(),
            metrics,
            draining: AtomicBool::new(false),
        });
        let admin_state = state.clone();
        let public_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(public_state.clone())
                .service(web::resource("/webhook").route(web::post().to(webhook::webhook)))
        })
        .workers(workers)
        // Per worker: a flood of idle or slow connections waits in the
        // backlog instead of taking memory without bound.
        .max_connections(max_connections)
        .client_request_timeout(head_timeout)
        // After an early answer (a refused request whose body was not
        // read), unread bytes are discarded for at most this long.
        .client_disconnect_timeout(Duration::from_secs(1))
        .disable_signals() // shutdown is driven by `run_until_stopped`
        .shutdown_timeout(drain_secs)
        .listen(listener)?
        .run();
        let admin = HttpServer::new(move || {
            App::new()
                .app_data(admin_state.clone())
                .route("/healthz", web::get().to(admin::healthz))
                .route("/readyz", web::get().to(admin::readyz))
                .route("/metrics", web::get().to(admin::metrics))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(admin_listener)?
        .run();
        Ok(Self {
            port,
            admin_port,
            server,
            admin,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Serves until `stop` completes, then stops accepting, lets in-flight
    /// requests finish (each still waits for its confirm) and closes the
    /// broker connection.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let supervisor_stop = CancellationToken::new();
        let publisher = self.state.publisher.clone();
        let supervisor = tokio::spawn(publisher.clone().supervise(supervisor_stop.clone()));
        let server_handle = self.server.handle();
        let admin_handle = self.admin.handle();
        let mut server = tokio::spawn(self.server);
        let admin = tokio::spawn(self.admin);
        tracing::info!(
            port = self.port,
            admin_port = self.admin_port,
            "idv-ingest serving"
        );
        let mut outcome = tokio::select! {
            () = stop => {
                tracing::info!("stopping: finishing in-flight requests");
                Ok(())
            }
            ended = &mut server => Err(server_ended(ended)),
        };
        // `/readyz` says 503 first; the listener keeps taking requests for
        // the delay, so a load balancer stops sending before it closes.
        self.state.draining.store(true, Ordering::SeqCst);
        let delay = self.state.settings.shutdown_delay;
        if outcome.is_ok() && !delay.is_zero() {
            tracing::info!(
                delay_ms = delay.as_millis(),
                "readyz says 503; closing the listener after the delay"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                // Dying during the delay is a failure too: not exit 0.
                ended = &mut server => outcome = Err(server_ended(ended)),
            }
        }
        server_handle.stop(true).await;
        admin_handle.stop(true).await;
        if !server.is_finished() {
            let drain = Duration::from_secs(drain_secs(&self.state.settings) + 5);
            let _ = tokio::time::timeout(drain, &mut server).await;
        }
        let _ = admin.await;
        supervisor_stop.cancel();
        let _ = supervisor.await;
        publisher.close().await;
        tracing::info!("idv-ingest stopped");
        outcome
    }
}

/// Why the HTTP server's task ended before it was told to stop.
fn server_ended(ended: Result<std::io::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match ended {
        Ok(Ok(())) => anyhow::anyhow!("the HTTP server stopped by itself"),
        Ok(Err(error)) => anyhow::Error::new(error).context("HTTP server failed"),
        Err(error) => anyhow::Error::new(error).context("HTTP server task failed"),
    }
}

/// Whole seconds in-flight requests get to finish once the listener
/// closes: a request may still be reading its body (the body timeout) and
/// then waiting for its confirm (the publish timeout).
fn drain_secs(settings: &Settings) -> u64 {
    let longest = settings.body_timeout + settings.publish_timeout;
    longest.as_secs() + u64::from(longest.subsec_nanos() > 0) + 1
}
