//! `idvctl dlq list | replay | purge`: the dead letters the worker drained
//! from `idv.events.dlq` into the `dead_letters` table.

use clap::{Args, Subcommand};

use super::CtlSettings;
use super::rate::Rate;
use super::since::Since;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List dead letters, newest first: event id, type, session, reason,
    /// attempts, first and last failure, and whether it was replayed.
    #[command(after_help = "Examples:\n  idvctl dlq list\n  \
        idvctl dlq list --kind unparseable --since 1d\n  \
        idvctl dlq list --type identity.verification_session.verified --json")]
    List {
        #[command(flatten)]
        filter: Filter,
        /// At most this many dead letters.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Publish dead letters again to `stripe.events` (the original bytes,
    /// routing key = the event's type), each confirmed by the broker before
    /// it is marked replayed. Replays only those not replayed yet.
    #[command(
        after_help = "Examples:\n  idvctl dlq replay --event-id evt_1 --dry-run\n  \
        idvctl dlq replay --kind refused --since 2h --rate 50/s\n  \
        idvctl dlq replay --all"
    )]
    Replay(Replay),
    /// Delete dead letters, after printing what will go.
    #[command(after_help = "Examples:\n  idvctl dlq purge --kind unparseable\n  \
        idvctl dlq purge --since 30d --yes")]
    Purge {
        #[command(flatten)]
        select: Selection,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// Filters of `dlq list` (all optional; each narrows the list).
#[derive(Debug, Clone, Args)]
pub struct Filter {
    /// Only dead letters of this event type.
    #[arg(long = "type", value_name = "T")]
    pub event_type: Option<String>,
    /// Only dead letters whose reason contains this text.
    #[arg(long, value_name = "R")]
    pub reason: Option<String>,
    /// Only dead letters of this failure kind (unparseable, unknown_type,
    /// status_mismatch, refused, delivery_limit, …).
    #[arg(long, value_name = "K")]
    pub kind: Option<String>,
    /// Only dead letters dead-lettered since then: an age (90m, 36h, 7d) or
    /// a UTC date or time.
    #[arg(long, value_name = "D")]
    pub since: Option<Since>,
}

/// Which dead letters `dlq replay` and `dlq purge` take: `--all`, or the
/// filters given. Neither is a usage error (exit 2), checked before any
/// connection: nothing is taken by default.
#[derive(Debug, Clone, Args)]
pub struct Selection {
    /// Every dead letter.
    #[arg(long, conflicts_with_all = ["event_ids", "event_type", "reason", "kind", "since"])]
    pub all: bool,
    /// Only these events (repeat the flag or separate with commas).
    #[arg(long = "event-id", value_name = "ID", value_delimiter = ',', num_args = 1..)]
    pub event_ids: Vec<String>,
    #[command(flatten)]
    pub filter: Filter,
}

#[derive(Debug, Clone, Args)]
pub struct Replay {
    #[command(flatten)]
    pub select: Selection,
    /// Publish nothing: say, per event, what the worker would do with it
    /// now (apply, stale, duplicate, fail again).
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
    anyhow::bail!("idvctl dlq: not built yet")
}
