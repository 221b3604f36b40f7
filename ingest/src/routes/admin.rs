//! The admin listener: liveness, readiness and Prometheus metrics.

use std::sync::atomic::Ordering;

use actix_web::{HttpResponse, web};

use crate::startup::AppState;

/// Alive: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

/// Ready: not shutting down, and the broker connection and the confirm
/// channels are up.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.draining.load(Ordering::SeqCst) {
        HttpResponse::ServiceUnavailable().body("shutting down")
    } else if state.publisher.is_ready() {
        HttpResponse::Ok().body("ready")
    } else {
        HttpResponse::ServiceUnavailable().body("broker connection down")
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode())
}
