//! `idvctl prune`: delete what is past its use, in small batches: inbox
//! payloads and rows, sent and superseded outbox rows, replayed dead
//! letters, while keeping the inbox rows deduplication still needs.

use clap::Args;

use super::CtlSettings;

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Examples:\n  idvctl prune --older-than 35d --dry-run\n  \
    idvctl prune --older-than 35d --yes    # from cron or a Kubernetes CronJob"
)]
pub struct Prune {
    /// Age past which rows go (at least 4d: Stripe retries an event for 3 days).
    #[arg(long, value_name = "AGE")]
    pub older_than: humantime::Duration,
    /// Delete nothing: count what would go.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Rows deleted per transaction.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub batch_size: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(_settings: &CtlSettings, _args: &Prune) -> anyhow::Result<String> {
    anyhow::bail!("idvctl prune: not built yet")
}
