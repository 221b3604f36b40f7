//! `idvctl prune`: delete what is past its use, in small batches: inbox
//! payloads and rows, sent, superseded and skipped outbox rows, replayed
//! dead letters, while keeping what deduplication and the rules still read
//! back (see [`crate::store::prune`] for what stays and why).

use std::io::IsTerminal as _;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use super::{CtlSettings, UsageError, client};
use crate::store::prune::{self, Kept, Part};

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Examples:\n  idvctl prune --older-than 35d --dry-run\n  \
    idvctl prune --older-than 35d --yes    # from cron or a Kubernetes CronJob\n\n\
    Kept whatever their age: inbox rows of counted failed submissions (the attempt count is \
    recomputed from them; their payload is erased), inbox rows an e-mail still to send or retry \
    reads its address from, a subject's limit rows, pending and failed outbox rows, dead letters \
    not replayed. Choose an age past `idvctl resync`'s 30 days (35d): an event pruned from the \
    inbox that comes back is applied again, and the actions pruned with it are performed again."
)]
pub struct Prune {
    /// Age past which rows go (at least 31d: Stripe retries an event for 3 days, resync reaches 30 days back).
    #[arg(long, value_name = "AGE")]
    pub older_than: humantime::Duration,
    /// Delete nothing: count what would go.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Rows deleted (or payloads erased) per transaction, 1 to 100000.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub batch_size: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The youngest `--older-than`: Stripe retries an event for up to 3 days,
/// and `idvctl resync` publishes again any event of the last 30 days the
/// inbox does not hold; its inbox row is the only thing that makes either a
/// duplicate (a pruned event published again would be recorded anew and
/// its pruned actions performed again).
pub const MIN_AGE: Duration = Duration::from_secs(31 * 86_400);

/// The most rows one transaction may remove.
pub const MAX_BATCH: u32 = 100_000;

/// What a prune removed (or, with `--dry-run`, would remove), per table.
#[derive(Debug, Clone, Serialize)]
struct Report {
    dry_run: bool,
    older_than: String,
    /// Rows older than this moment (UTC) were considered.
    cutoff: String,
    inbox_rows_deleted: u64,
    inbox_payloads_erased: u64,
    outbox_rows_deleted: u64,
    dead_letters_deleted: u64,
    /// Inbox rows older than the cutoff that stay.
    inbox_rows_kept: Kept,
}

impl Report {
    fn part(&mut self, part: Part) -> &mut u64 {
        match part {
            Part::InboxRows => &mut self.inbox_rows_deleted,
            Part::InboxPayloads => &mut self.inbox_payloads_erased,
            Part::OutboxRows => &mut self.outbox_rows_deleted,
            Part::DeadLetters => &mut self.dead_letters_deleted,
        }
    }

    fn total(&self) -> u64 {
        self.inbox_rows_deleted
            + self.inbox_payloads_erased
            + self.outbox_rows_deleted
            + self.dead_letters_deleted
    }
}

pub async fn run(settings: &CtlSettings, args: &Prune) -> anyhow::Result<String> {
    let age: Duration = args.older_than.into();
    if age < MIN_AGE {
        return Err(UsageError(format!(
            "--older-than {} is under 31 days: Stripe retries an event for up to 3 days and \
             `idvctl resync` reaches 30 days back, and only an event's inbox row makes a late \
             retry or a resync of it a duplicate",
            age_text(age)
        ))
        .into());
    }
    if !(1..=MAX_BATCH).contains(&args.batch_size) {
        return Err(UsageError(format!("--batch-size is 1 to {MAX_BATCH}")).into());
    }
    if !args.dry_run && !args.yes && !std::io::stdin().is_terminal() {
        return Err(UsageError(
            "prune deletes rows and there is no terminal to confirm on: pass --yes \
             (or --dry-run to count only)"
                .to_owned(),
        )
        .into());
    }
    let now = SystemTime::now();
    let cutoff = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
    let cutoff_ms = cutoff
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let client = client(settings).await?;
    // A batch never waits long on a lock a worker holds: it fails instead,
    // having removed nothing, and the prune can be run again.
    client
        .batch_execute("SET lock_timeout = '10s'")
        .await
        .context("setting lock_timeout")?;

    let mut report = Report {
        dry_run: args.dry_run,
        older_than: age_text(age),
        cutoff: humantime::format_rfc3339_seconds(cutoff).to_string(),
        inbox_rows_deleted: 0,
        inbox_payloads_erased: 0,
        outbox_rows_deleted: 0,
        dead_letters_deleted: 0,
        inbox_rows_kept: Kept::default(),
    };
    for part in Part::ALL {
        let count = prune::count(&client, part, cutoff_ms)
            .await
            .with_context(|| format!("counting {}", what(part)))?;
        *report.part(part) = u64::try_from(count).unwrap_or(0);
    }
    if !args.dry_run {
        if report.total() == 0 {
            report.inbox_rows_kept = kept(&client, cutoff_ms).await?;
            return Ok(render(&report, args.json));
        }
        super::terminal::confirm(
            &format!(
                "delete {} inbox rows, erase {} inbox payloads, delete {} outbox rows and {} \
                 dead letters, older than {}?",
                report.inbox_rows_deleted,
                report.inbox_payloads_erased,
                report.outbox_rows_deleted,
                report.dead_letters_deleted,
                report.older_than
            ),
            args.yes,
        )?;
        prune_all(&client, cutoff_ms, i64::from(args.batch_size), &mut report).await?;
    }
    report.inbox_rows_kept = kept(&client, cutoff_ms).await?;
    Ok(render(&report, args.json))
}

async fn kept(client: &tokio_postgres::Client, cutoff_ms: i64) -> anyhow::Result<Kept> {
    prune::kept(client, cutoff_ms)
        .await
        .context("counting the inbox rows kept")
}

/// Removes each part in batches, replacing the counts of `report` with
/// what was removed. A failure says how far it got: what went is gone,
/// and running the prune again finishes it.
async fn prune_all(
    client: &tokio_postgres::Client,
    cutoff_ms: i64,
    batch_size: i64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let bar = super::terminal::progress(report.total(), "rows");
    for part in Part::ALL {
        *report.part(part) = 0;
        let mut after = part.start();
        loop {
            let (done, next) = prune::batch(client, part, cutoff_ms, &after, batch_size)
                .await
                .with_context(|| {
                    format!(
                        "pruning {} ({} so far; what went is gone: run the prune again to finish)",
                        what(part),
                        report.part(part)
                    )
                })?;
            *report.part(part) += done;
            bar.inc(done);
            match next {
                Some(next) => after = next,
                None => break,
            }
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// `35d` rather than humantime's `1month 4days 13h 26m 24s` (its month is
/// 30.44 days).
fn age_text(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        _ => humantime::format_duration(age).to_string(),
    }
}

fn what(part: Part) -> &'static str {
    match part {
        Part::InboxRows => "inbox rows",
        Part::InboxPayloads => "inbox payloads",
        Part::OutboxRows => "outbox rows",
        Part::DeadLetters => "dead letters",
    }
}

fn render(report: &Report, json: bool) -> String {
    if json {
        return serde_json::to_string_pretty(report).unwrap_or_default();
    }
    let (verb, erase) = if report.dry_run {
        ("would delete", "would erase")
    } else {
        ("deleted", "erased")
    };
    let kept = report.inbox_rows_kept;
    let lines = [
        format!(
            "{} rows older than {} (before {}):",
            if report.dry_run {
                "dry run, nothing changed: pruning"
            } else {
                "pruned"
            },
            report.older_than,
            report.cutoff
        ),
        format!(
            "  inbox (events):         {verb} {} rows, {erase} {} payloads",
            report.inbox_rows_deleted, report.inbox_payloads_erased
        ),
        format!(
            "  outbox:                 {verb} {} rows (sent, superseded, skipped)",
            report.outbox_rows_deleted
        ),
        format!(
            "  dead letters:           {verb} {} (replayed)",
            report.dead_letters_deleted
        ),
        format!(
            "  kept in the inbox:      {} counted failed submissions (the attempt count is \
             recomputed from them)",
            kept.counted_failures
        ),
        format!(
            "                          {} payloads an e-mail still to send or retry reads its \
             address from",
            kept.payloads_for_an_email
        ),
    ];
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_shown_in_days_when_whole() {
        assert_eq!(age_text(Duration::from_secs(35 * 86_400)), "35d");
        assert_eq!(age_text(Duration::from_secs(100 * 3_600)), "100h");
        assert_eq!(
            age_text(Duration::from_secs(4 * 86_400 + 61)),
            "4days 1m 1s"
        );
    }

    #[test]
    fn the_minimum_age_is_past_stripes_retries_and_resyncs_reach() {
        assert!(MIN_AGE > Duration::from_secs(30 * 86_400));
        let two_days = "2d".parse::<humantime::Duration>().map(Duration::from);
        assert!(two_days.is_ok_and(|age| age < MIN_AGE));
    }
}
