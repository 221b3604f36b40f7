//! The admin listener (`WORKER_ADMIN_LISTEN`): `/healthz` (the process is
//! alive), `/readyz` (consuming and the database answering), `/metrics`
//! (Prometheus text). Bound by the caller so tests can use port 0.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};

use crate::health::Health;
use crate::metrics::Metrics;

/// What the handlers read.
#[derive(Debug, Clone)]
struct AdminState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "alive"}))
}

async fn readyz(state: web::Data<AdminState>) -> HttpResponse {
    let body = serde_json::json!({
        "ready": state.health.ready(),
        "consumers": state.health.consumers(),
    });
    if state.health.ready() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode())
}

/// The admin server on `listener`; run it by awaiting (or spawning) it.
pub fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    metrics_: Arc<Metrics>,
) -> std::io::Result<Server> {
    let state = web::Data::new(AdminState {
        health,
        metrics: metrics_,
    });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
    })
    .workers(1) // a handful of scrapes a minute
    .disable_signals() // the application owns shutdown
    .shutdown_timeout(1)
    .listen(listener)?
    .run())
}
