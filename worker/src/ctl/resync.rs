//! `idvctl resync`: list Identity events from Stripe's Events API and
//! publish those the inbox has not seen, to recover what Stripe could not
//! deliver. Idempotent, and safe to run on a schedule.

use clap::Args;
use shared::config::Env;

use super::CtlSettings;
use super::rate::Rate;
use super::since::Since;

#[derive(Debug, Clone, Args)]
#[command(after_help = "Reads STRIPE_API_KEY (and STRIPE_API_BASE, default \
    https://api.stripe.com).\n\nExamples:\n  idvctl resync --since 3d\n  \
    idvctl resync --since 30d --only-undelivered --dry-run")]
pub struct Resync {
    /// Events created since then (at most 30 days back, as Stripe keeps
    /// them): an age (36h, 7d) or a UTC date or time.
    #[arg(long, value_name = "D")]
    pub since: Since,
    /// Only events Stripe failed to deliver (`delivery_success=false`).
    #[arg(long)]
    pub only_undelivered: bool,
    /// Publish nothing: print which events would be published.
    #[arg(long)]
    pub dry_run: bool,
    /// At most this many messages a second (50/s, 0.5/s).
    #[arg(long, value_name = "N/s")]
    pub rate: Option<Rate>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(_settings: &CtlSettings, _env: &Env, _args: &Resync) -> anyhow::Result<String> {
    anyhow::bail!("idvctl resync: not built yet")
}
