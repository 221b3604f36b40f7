//! What `idv-worker`'s `main` does, as a library function, so the tests can
//! run a child process exactly as the binary runs: settings (exit 2 on a bad
//! one), logging, a multi-threaded runtime, build (exit 1 when PostgreSQL or
//! the broker cannot be reached), SIGTERM/SIGINT handling, run.

use std::io::Write as _;
use std::process::ExitCode;

use shared::config::Env;
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;
use crate::startup::Application;

/// A line on stderr for the operator. A closed stderr is no reason to
/// panic (and exit 101 instead of the code the line explains).
fn say(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "idv-worker: {message}");
}

/// Runs the worker from the process environment until SIGTERM or SIGINT.
/// `arguments` (the command line's, without the program name):
/// `--dispatcher-only` runs the dispatcher alone (as `WORKER_ROLE=dispatcher`).
pub fn main(arguments: impl IntoIterator<Item = String>) -> ExitCode {
    let mut settings = match Settings::from_env(&Env::from_process()) {
        Ok(settings) => settings,
        Err(error) => {
            say(format_args!("{error}"));
            return ExitCode::from(2);
        }
    };
    for argument in arguments {
        match argument.as_str() {
            "--dispatcher-only" => settings.dispatch.role = crate::dispatch::Role::Dispatcher,
            "-h" | "--help" => {
                say(format_args!(
                    "usage: idv-worker [--dispatcher-only]; settings come from the environment (see README)"
                ));
                return ExitCode::SUCCESS;
            }
            other => {
                say(format_args!(
                    "unknown argument {other:?}: the only one is --dispatcher-only"
                ));
                return ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            say(format_args!("cannot start the async runtime: {error}"));
            return ExitCode::FAILURE;
        }
    };
    // lapin logs a returned message whole at warn: keep payloads out of logs.
    shared::telemetry::init(settings.log_format, "info,lapin=error");
    runtime.block_on(run(settings))
}

async fn run(settings: Settings) -> ExitCode {
    // Signals are handled from here on, start-up included: a SIGTERM while
    // PostgreSQL or the broker is still being reached stops the worker
    // cleanly (exit 0) instead of killing it.
    let stop = CancellationToken::new();
    let requested = shared::signals::stop_requested();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        requested.await;
        on_signal.cancel();
    });
    let built = tokio::select! {
        built = Application::build(settings) => built,
        () = stop.cancelled() => {
            tracing::info!("stopped during start-up");
            return ExitCode::SUCCESS;
        }
    };
    let application = match built {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "start-up failed");
            say(format_args!("{error:#}"));
            return ExitCode::FAILURE;
        }
    };
    match application.run_until_stopped(stop.cancelled_owned()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "worker failed");
            say(format_args!("{error:#}"));
            ExitCode::FAILURE
        }
    }
}
