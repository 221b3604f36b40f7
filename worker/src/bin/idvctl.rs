//! `idvctl`: apply the schema, declare the topology, read the record, see
//! and re-drive the outbox and the dead letters, recover missed events,
//! rehearse with signed test events, prune what is past its use.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use shared::config::{ConfigError, Env};
use shared::telemetry::{self, LogFormat};
use worker::ctl::{self, CtlSettings, RetryTarget, UsageError};

/// Operator tool for idv-pipeline. Reads DATABASE_URL, AMQP_URL, AMQP_PREFIX,
/// IDV_MAX_FAILED_ATTEMPTS and RUST_LOG from the environment (and, for the
/// commands that need them, STRIPE_API_KEY, STRIPE_API_BASE and
/// STRIPE_WEBHOOK_SECRET). Exit codes: 0 done, 1 not found, refused,
/// not confirmed or a failure, 2 bad input or a bad setting.
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
    /// The effects to perform (outbox rows) and what became of them.
    Outbox {
        #[command(subcommand)]
        action: Outbox,
    },
    /// Dead letters: list, replay after fixing the cause, purge.
    Dlq {
        #[command(subcommand)]
        action: ctl::dlq::Command,
    },
    /// Events of the inbox.
    Events {
        #[command(subcommand)]
        action: ctl::events::Command,
    },
    /// Publish the Identity events Stripe holds that the inbox has not seen.
    Resync(ctl::resync::Resync),
    /// Sign a realistic Identity event and POST it to ingest.
    SendTestEvent(ctl::test_event::SendTestEvent),
    /// Send a whole story of events and check the record the worker made.
    Scenario(ctl::scenario::Scenario),
    /// Create the webhook endpoint at Stripe and print its signing secret once.
    RegisterEndpoint(ctl::register::RegisterEndpoint),
    /// Delete inbox rows, outbox rows and dead letters past an age.
    Prune(ctl::prune::Prune),
}

#[derive(Debug, Subcommand)]
enum Outbox {
    /// List rows, newest first, without their payloads.
    List {
        #[arg(long, value_name = "STATUS", help = format!(
            "Only rows with this status: {}", ctl::allowed_statuses()))]
        status: Option<String>,
        #[arg(long, value_name = "KIND", help = format!(
            "Only rows of this kind: {}", ctl::allowed_kinds()))]
        kind: Option<String>,
        /// At most this many rows.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make failed rows pending and due now (attempts 0, no error), once
    /// what failed them is fixed.
    Retry(Retry),
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Retry {
    /// The row's id (as `outbox list` shows it); it must be failed.
    id: Option<i64>,
    /// Every failed row.
    #[arg(long)]
    all_failed: bool,
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
async fn main() -> ExitCode {
    let cli = Cli::parse(); // exits 2 itself on a bad command line
    let env = Env::from_process();
    let settings = match CtlSettings::from_env(&env) {
        Ok(settings) => settings,
        Err(error) => {
            say(format_args!("{error}"));
            return ExitCode::from(2);
        }
    };
    // Logs go to stderr, quiet by default so that stdout is only the answer.
    telemetry::init(LogFormat::Text, "warn,lapin=error");
    let result = match &cli.command {
        Command::Migrate => ctl::migrate(&settings).await,
        Command::Topology => ctl::topology(&settings).await,
        Command::Subject {
            action: Show::Show { id, json },
        } => ctl::subject_show(&settings, id, *json).await,
        Command::Session {
            action: Show::Show { id, json },
        } => ctl::session_show(&settings, id, *json).await,
        Command::Outbox {
            action:
                Outbox::List {
                    status,
                    kind,
                    limit,
                    json,
                },
        } => ctl::outbox_list(&settings, status.as_deref(), kind.as_deref(), *limit, *json).await,
        Command::Outbox {
            action: Outbox::Retry(retry),
        } => {
            // The group lets exactly one of them through.
            let target = match retry.id {
                Some(id) => RetryTarget::One(id),
                None => RetryTarget::AllFailed,
            };
            ctl::outbox_retry(&settings, target).await
        }
        Command::Dlq { action } => ctl::dlq::run(&settings, action).await,
        Command::Events { action } => ctl::events::run(&settings, action).await,
        Command::Resync(args) => ctl::resync::run(&settings, &env, args).await,
        Command::SendTestEvent(args) => ctl::test_event::run(&settings, &env, args).await,
        Command::Scenario(args) => ctl::scenario::run(&settings, &env, args).await,
        Command::RegisterEndpoint(args) => ctl::register::run(&settings, &env, args).await,
        Command::Prune(args) => ctl::prune::run(&settings, args).await,
    };
    match result {
        Ok(output) => print(&output),
        Err(error) => {
            say(format_args!("{error:#}"));
            let usage = error.downcast_ref::<UsageError>().is_some()
                || error.downcast_ref::<ConfigError>().is_some();
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// Writes `output` to stdout. A reader that went away (`idvctl … | head`)
/// is not an error: the command did its work, so it exits 0 quietly.
fn print(output: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{output}").and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            say(format_args!("writing to stdout: {error}"));
            ExitCode::FAILURE
        }
    }
}

/// A line on stderr. A closed stderr is no reason to panic (and exit 101
/// instead of the code the line explains).
fn say(message: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "idvctl: {message}");
}
