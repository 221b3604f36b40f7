//! `idv-ingest`: load settings, set up logging, serve until SIGTERM/SIGINT.

use std::process::ExitCode;

use ingest::{Application, Settings, shutdown_signal};
use shared::config::Env;
use shared::telemetry::{self, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let env = Env::from_process();
    let settings = telemetry::check_filter(&env)
        .and_then(|()| LogFormat::from_env(&env))
        .and_then(|format| {
            // lapin stays at error whatever RUST_LOG says (see `telemetry`).
            telemetry::init(format, "info,lapin=error");
            Settings::from_env(&env)
        });
    let settings = match settings {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("idv-ingest: {error}");
            return ExitCode::from(2);
        }
    };
    let result = async {
        Application::build(settings)
            .await?
            .run_until_stopped(shutdown_signal())
            .await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = ?error, "idv-ingest failed");
            eprintln!("idv-ingest: {error:#}");
            ExitCode::FAILURE
        }
    }
}
