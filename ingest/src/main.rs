//! `idv-ingest`: load settings, set up logging, serve until SIGTERM/SIGINT.

use std::process::ExitCode;

use ingest::{Application, Settings};
use shared::config::Env;
use shared::telemetry::{self, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let env = Env::from_process();
    let settings = telemetry::check_filter(&env)
        .and_then(|()| LogFormat::from_env(&env))
        .and_then(|format| {
            // lapin stays at error whatever RUST_LOG says (see `telemetry`).
            // actix-http logs an ERROR for every request head it cannot parse: a
            // client sending garbage could fill the log. Such a request is
            // answered 400 by actix itself; set RUST_LOG to see them.
            telemetry::init(format, "info,lapin=error,actix_http::h1::dispatcher=off");
            Settings::from_env(&env)
        });
    let settings = match settings {
        Ok(settings) => settings,
        Err(error) => {
            say(format_args!("{error}"));
            return ExitCode::from(2);
        }
    };
    // Listening from here on: a signal during start-up (while the broker is
    // still being reached) stops it cleanly instead of killing it.
    let mut stop = std::pin::pin!(shared::signals::stop_requested());
    let built = tokio::select! {
        built = Application::build(settings) => built,
        () = &mut stop => {
            tracing::info!("stopped during start-up");
            return ExitCode::SUCCESS;
        }
    };
    let result = match built {
        Ok(application) => application.run_until_stopped(stop).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = ?error, "idv-ingest failed");
            say(format_args!("{error:#}"));
            ExitCode::FAILURE
        }
    }
}

/// A line on stderr. A closed stderr is no reason to panic (and exit 101
/// instead of the code the line explains).
fn say(message: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "idv-ingest: {message}");
}
