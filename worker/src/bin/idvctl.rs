//! `idvctl`: apply the schema, declare the topology, read the record.

use clap::{Parser, Subcommand};
use shared::config::Env;
use worker::ctl::{self, CtlSettings, UsageError};

/// Operator tool for idv-pipeline. Reads DATABASE_URL, AMQP_URL, AMQP_PREFIX
/// and IDV_MAX_FAILED_ATTEMPTS from the environment.
#[derive(Debug, Parser)]
#[command(name = "idvctl", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the database if missing and apply the embedded migrations.
    Migrate,
    /// Declare the AMQP exchanges, queues and bindings.
    Topology,
    /// A person being verified.
    Subject {
        #[command(subcommand)]
        action: Show,
    },
    /// A VerificationSession.
    Session {
        #[command(subcommand)]
        action: Show,
    },
}

#[derive(Debug, Subcommand)]
enum Show {
    /// Print the record.
    Show {
        /// The subject key or the session id (`vs_…`).
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = match CtlSettings::from_env(&Env::from_process()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("idvctl: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match &cli.command {
        Command::Migrate => ctl::migrate(&settings).await,
        Command::Topology => ctl::topology(&settings).await,
        Command::Subject {
            action: Show::Show { id, json },
        } => ctl::subject_show(&settings, id, *json).await,
        Command::Session {
            action: Show::Show { id, json },
        } => ctl::session_show(&settings, id, *json).await,
    };
    match result {
        Ok(output) => {
            println!("{output}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("idvctl: {error:#}");
            let usage = error.downcast_ref::<UsageError>().is_some();
            std::process::ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
