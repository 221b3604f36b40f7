//! `idvctl scenario`: send a whole story of signed events to ingest, wait
//! for the worker, print the resulting subject record and say whether it
//! is what the rules predict.

use clap::{Args, ValueEnum};
use shared::config::Env;

use super::CtlSettings;
use super::test_event::DEFAULT_INGEST_URL;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioName {
    Happy,
    RetryThenVerified,
    AttemptsExhausted,
    NotRetryable,
    OutOfOrder,
    Duplicates,
    Redacted,
}

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Signs with --secret, else STRIPE_WEBHOOK_SECRET; reads the record \
    from DATABASE_URL.\n\nExamples:\n  idvctl scenario happy\n  \
    idvctl scenario attempts-exhausted --subject user_demo_1\n  \
    idvctl scenario out-of-order --to http://127.0.0.1:4242/webhook --json"
)]
pub struct Scenario {
    #[arg(value_enum)]
    pub name: ScenarioName,
    /// Who the story is about (a new `scenario_…` key if not given).
    #[arg(long, value_name = "KEY")]
    pub subject: Option<String>,
    /// Ingest's webhook URL.
    #[arg(long, value_name = "URL", default_value = DEFAULT_INGEST_URL)]
    pub to: String,
    /// The endpoint's signing secret (default: STRIPE_WEBHOOK_SECRET).
    #[arg(long, value_name = "whsec_…")]
    pub secret: Option<String>,
    /// How long to wait for the worker, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(_settings: &CtlSettings, _env: &Env, _args: &Scenario) -> anyhow::Result<String> {
    anyhow::bail!("idvctl scenario: not built yet")
}
