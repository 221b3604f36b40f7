//! `idv-worker`: load settings, set up logging, build, run until SIGTERM.

use shared::config::Env;
use worker::app::{Application, cancel_on_signal};
use worker::settings::Settings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = match Settings::from_env(&Env::from_process()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("idv-worker: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    // lapin logs a returned message whole at warn: keep payloads out of logs.
    shared::telemetry::init(settings.log_format, "info,lapin=error");
    let application = match Application::build(settings).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "start-up failed");
            return std::process::ExitCode::FAILURE;
        }
    };
    tokio::spawn(cancel_on_signal(application.shutdown_token()));
    match application.run_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "worker failed");
            std::process::ExitCode::FAILURE
        }
    }
}
