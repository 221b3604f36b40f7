//! `idvctl dlq list | replay | purge`: the dead letters the worker drained
//! from `idv.events.dlq` into the `dead_letters` table.
//!
//! The table, not the queue, is what these commands read: browsing a
//! quorum queue with get/requeue would count each look toward its
//! delivery limit. `list` and `purge` are here; `replay` (and its dry run)
//! in [`replay`].

use std::time::SystemTime;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::rate::Rate;
use super::since::Since;
use super::text::{one_line, table};
use super::{CtlSettings, UsageError, client};
use crate::store::dead_letters_admin::{self as store, DeadLetterView};

mod dry_run;
mod output;
mod replay;
mod unit;

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
        idvctl dlq replay --all\n\n\
        One publish per event (its newest dead letter), and all its selected dead letters\n\
        marked with it. Dead letters whose payload was erased by a redaction, or with no\n\
        event type, are skipped and reported. Ctrl-C stops after the event in hand and exits 1:\n\
        run the command again for the rest. A copy published but not marked (a crash between\n\
        the broker's confirm and the mark) is published again by the next replay, and the\n\
        worker sees it as a duplicate."
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
    /// Print JSON lines instead of text: one per event (`event_id`,
    /// `event_type`, `dead_letters`, `result`, `detail`), then a summary.
    #[arg(long)]
    pub json: bool,
}

/// The most dead letters `dlq list --limit` may ask for.
pub const MAX_LIST_LIMIT: u32 = 10_000;

/// How many of the dead letters a purge takes it shows before asking.
const PURGE_PREVIEW: usize = 20;

/// The `kind` values the drain writes (the worker's failure kinds, then
/// the broker's reasons), for `--kind` and its errors.
pub fn kinds() -> Vec<&'static str> {
    use crate::dead_letter::Kind;
    let broker = [
        Kind::DeliveryLimit,
        Kind::Expired,
        Kind::Rejected,
        Kind::Unknown,
    ];
    // A kind added to the drain stops the build here until it is listed.
    let _listed = |kind: Kind| match kind {
        Kind::Worker(_) | Kind::DeliveryLimit | Kind::Expired | Kind::Rejected | Kind::Unknown => {}
    };
    crate::dead_letter::record::WORKER_KINDS
        .into_iter()
        .chain(broker.map(Kind::as_str))
        .collect()
}

pub async fn run(settings: &CtlSettings, command: &Command) -> anyhow::Result<String> {
    match command {
        Command::List {
            filter,
            limit,
            json,
        } => list(settings, filter, *limit, *json).await,
        Command::Replay(args) => replay::run(settings, args).await,
        Command::Purge { select, yes } => purge(settings, select, *yes).await,
    }
}

impl Filter {
    /// The store's selection, as of `now`; a `--kind` the drain never
    /// writes is a usage error (a typo would otherwise select nothing).
    fn selection(&self, now: SystemTime) -> Result<store::Selection, UsageError> {
        if let Some(kind) = &self.kind
            && !kinds().contains(&kind.as_str())
        {
            return Err(UsageError(format!(
                "unknown --kind {kind:?}: expected one of {}",
                kinds().join(", ")
            )));
        }
        Ok(store::Selection {
            event_ids: Vec::new(),
            event_type: self.event_type.clone(),
            reason: self.reason.clone(),
            kind: self.kind.clone(),
            since_ms: self.since.map(|since| since.unix_millis(now)),
            waiting_only: false,
        })
    }

    fn is_empty(&self) -> bool {
        self.event_type.is_none()
            && self.reason.is_none()
            && self.kind.is_none()
            && self.since.is_none()
    }
}

impl Selection {
    /// The store's selection, as of `now`. Nothing given is a usage
    /// error: a replay or a purge never takes everything by default.
    fn selection(&self, now: SystemTime, command: &str) -> Result<store::Selection, UsageError> {
        if !self.all && self.event_ids.is_empty() && self.filter.is_empty() {
            return Err(UsageError(format!(
                "say which dead letters to {command}: --all, or one or more of --event-id, \
                 --type, --reason, --kind, --since"
            )));
        }
        let mut selection = self.filter.selection(now)?;
        selection.event_ids = self
            .event_ids
            .iter()
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty())
            .collect();
        Ok(selection)
    }
}

/// `idvctl dlq list`: newest first, as a table or JSON, never a payload.
async fn list(
    settings: &CtlSettings,
    filter: &Filter,
    limit: u32,
    json: bool,
) -> anyhow::Result<String> {
    let selection = filter.selection(SystemTime::now())?;
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(UsageError(format!("--limit is 1 to {MAX_LIST_LIMIT}, not {limit}")).into());
    }
    let client = client(settings).await?;
    let rows = store::list(&client, &selection, limit)
        .await
        .context("reading the dead letters")?;
    if json {
        return Ok(serde_json::to_string_pretty(&rows)?);
    }
    if rows.is_empty() {
        return Ok("no dead letters".to_owned());
    }
    Ok(dead_letter_table(&rows))
}

/// `idvctl dlq purge`: shows what the selection takes (its count and its
/// newest rows), asks unless `--yes`, then deletes exactly the rows it
/// showed the count of (by id: a dead letter drained meanwhile stays).
async fn purge(settings: &CtlSettings, select: &Selection, yes: bool) -> anyhow::Result<String> {
    let selection = select.selection(SystemTime::now(), "purge")?;
    let client = client(settings).await?;
    let ids = store::ids(&client, &selection)
        .await
        .context("selecting the dead letters to purge")?;
    if ids.is_empty() {
        return Ok("nothing to purge: no dead letter matches".to_owned());
    }
    let shown = &ids[..ids.len().min(PURGE_PREVIEW)];
    let rows = store::views(&client, shown)
        .await
        .context("reading the dead letters to purge")?;
    let mut preview = format!(
        "{} will be deleted:\n{}",
        count(ids.len()),
        dead_letter_table(&rows)
    );
    if ids.len() > shown.len() {
        preview.push_str(&format!(
            "\n… and {} more (idvctl dlq list shows them)",
            ids.len() - shown.len()
        ));
    }
    output::print_line(&preview);
    super::terminal::confirm(&format!("Delete {}?", count(ids.len())), yes)?;
    let deleted = store::delete(&client, &ids)
        .await
        .context("deleting the dead letters")?;
    let deleted = usize::try_from(deleted).unwrap_or(usize::MAX);
    Ok(if deleted == ids.len() {
        format!("purged {}", count(deleted))
    } else {
        format!(
            "purged {} of the {} selected (the others were gone already)",
            count(deleted),
            ids.len()
        )
    })
}

/// `1 dead letter`, `3 dead letters`.
fn count(n: usize) -> String {
    match n {
        1 => "1 dead letter".to_owned(),
        n => format!("{n} dead letters"),
    }
}

fn dead_letter_table(rows: &[DeadLetterView]) -> String {
    const HEADER: [&str; 11] = [
        "ID",
        "EVENT_ID",
        "TYPE",
        "SESSION",
        "KIND",
        "REASON",
        "ATTEMPTS",
        "FIRST_FAILURE",
        "LAST_FAILURE",
        "DEAD_LETTERED",
        "REPLAYED",
    ];
    let cells: Vec<[String; 11]> = rows
        .iter()
        .map(|row| {
            [
                row.id.to_string(),
                one_line(row.event_id.as_deref()),
                one_line(row.event_type.as_deref()),
                one_line(row.session_id.as_deref()),
                one_line(Some(&row.kind)),
                one_line(Some(&row.reason)),
                row.attempts.to_string(),
                one_line(Some(&row.first_failure_at)),
                one_line(Some(&row.last_failure_at)),
                one_line(Some(&row.dead_lettered_at)),
                one_line(row.replayed_at.as_deref()),
            ]
        })
        .collect();
    table(HEADER, &cells)
}
