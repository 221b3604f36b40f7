//! What `idv-worker`'s `main` does, as a library function, so the tests can
//! run a child process exactly as the binary runs: settings (exit 2 on a bad
//! one), logging, a multi-threaded runtime, build (exit 1 when PostgreSQL or
//! the broker cannot be reached), SIGTERM/SIGINT handling, run.

use std::process::ExitCode;

use shared::config::Env;

use crate::app::{Application, cancel_on_signal};
use crate::settings::Settings;

/// Runs the worker from the process environment until SIGTERM or SIGINT.
pub fn main() -> ExitCode {
    let settings = match Settings::from_env(&Env::from_process()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("idv-worker: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("idv-worker: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // lapin logs a returned message whole at warn: keep payloads out of logs.
    shared::telemetry::init(settings.log_format, "info,lapin=error");
    runtime.block_on(run(settings))
}

async fn run(settings: Settings) -> ExitCode {
    let application = match Application::build(settings).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "start-up failed");
            eprintln!("idv-worker: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(cancel_on_signal(application.shutdown_token()));
    match application.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "worker failed");
            eprintln!("idv-worker: {error:#}");
            ExitCode::FAILURE
        }
    }
}
