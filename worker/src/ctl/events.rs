//! `idvctl events replay`: publish stored events from the inbox again,
//! e.g. after fixing a bug in an action; the worker's rules decide what
//! changes (a seen event changes no state; it may call for actions).

use clap::{Args, Subcommand};

use super::CtlSettings;
use super::rate::Rate;
use super::since::Since;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish the inbox's events received since D to `stripe.events`
    /// again, oldest first, for the worker to apply its rules to them again.
    #[command(after_help = "Examples:\n  idvctl events replay --since 2h\n  \
        idvctl events replay --since 2026-11-01 --type identity.verification_session.verified\n  \
        idvctl events replay --since 30d --session vs_1Sk3Gh2eZvKYlo2CqR8tNw4P --dry-run")]
    Replay(Replay),
}

#[derive(Debug, Clone, Args)]
pub struct Replay {
    /// Events received since then: an age (90m, 36h, 7d) or a UTC date or time.
    #[arg(long, value_name = "D")]
    pub since: Since,
    /// Only events of this type.
    #[arg(long = "type", value_name = "T")]
    pub event_type: Option<String>,
    /// Only events of this VerificationSession.
    #[arg(long, value_name = "vs_…")]
    pub session: Option<String>,
    /// Publish nothing: print what would be published.
    #[arg(long)]
    pub dry_run: bool,
    /// At most this many messages a second (50/s, 0.5/s).
    #[arg(long, value_name = "N/s")]
    pub rate: Option<Rate>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(_settings: &CtlSettings, _command: &Command) -> anyhow::Result<String> {
    anyhow::bail!("idvctl events replay: not built yet")
}
