//! The admin listener (`WORKER_ADMIN_LISTEN`): `/healthz` (the process is
//! alive), `/readyz` (consuming and the database answering, see
//! [`Readiness`]), `/metrics` (Prometheus text). Bound by the caller so
//! tests can use port 0.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};

use crate::health::Readiness;
use crate::metrics::Metrics;

/// What the handlers read.
#[derive(Debug, Clone)]
struct AdminState {
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "alive"}))
}

async fn readyz(state: web::Data<AdminState>) -> HttpResponse {
    let report = state.readiness.report().await;
    if report.ready {
        HttpResponse::Ok().json(report)
    } else {
        HttpResponse::ServiceUnavailable().json(report)
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
    readiness: Arc<Readiness>,
    metrics_: Arc<Metrics>,
) -> std::io::Result<Server> {
    let state = web::Data::new(AdminState {
        readiness,
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
