//! The ceiling `idv-ingest`'s CPU per request is compared with: an actix-web
//! server whose only handler verifies the `Stripe-Signature` over the body
//! with `shared::SignatureVerifier` and answers 200 (400 otherwise). No
//! broker, no metrics, no limits: what any Rust webhook endpoint must spend.
//!
//! `bench_ingest` starts it as its own process (so its CPU time is its own,
//! not the load generator's) with the same number of HTTP workers as
//! idv-ingest: `bench_handler --listen 127.0.0.1:PORT [--workers N]`; the
//! secret is the tests' published one.

use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use clap::Parser;
use idv_tests::fixtures::{TEST_SECRET, now_unix};
use shared::{SignatureVerifier, WebhookSecret};

#[derive(Debug, Parser)]
#[command(about = "An actix handler that verifies the signature and answers 200")]
struct Args {
    /// Where to listen, `IP:PORT`.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// HTTP worker threads (idv-ingest's default is 2).
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

async fn webhook(
    request: HttpRequest,
    body: web::Bytes,
    verifier: web::Data<SignatureVerifier>,
) -> HttpResponse {
    let header = request
        .headers()
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok());
    match verifier.verify(header, &body, now_unix()) {
        Ok(()) => HttpResponse::Ok().body("{\"received\":true}"),
        Err(error) => HttpResponse::BadRequest().body(error.reason()),
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret = WebhookSecret::parse(TEST_SECRET).map_err(|e| anyhow::anyhow!(e))?;
    let verifier = web::Data::new(SignatureVerifier::new(
        vec![secret],
        Duration::from_secs(300),
    ));
    HttpServer::new(move || {
        App::new()
            .app_data(verifier.clone())
            .service(web::resource("/webhook").route(web::post().to(webhook)))
    })
    .workers(args.workers)
    .bind(args.listen)
    .map_err(|error| anyhow::anyhow!("cannot listen on --listen {}: {error}", args.listen))?
    .run()
    .await?;
    Ok(())
}
