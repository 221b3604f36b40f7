//! `idvctl register-endpoint`: create the webhook endpoint at Stripe
//! (`POST /v1/webhook_endpoints`) with the six Identity events, and print
//! its id and its secret once.

use clap::Args;
use shared::config::Env;

use super::CtlSettings;

#[derive(Debug, Clone, Args)]
#[command(after_help = "Reads STRIPE_API_KEY (and STRIPE_API_BASE, default \
    https://api.stripe.com).\n\nExamples:\n  \
    idvctl register-endpoint --url https://idv.example.com/webhook\n  \
    idvctl register-endpoint --url https://idv.example.com/webhook \
    --events identity.verification_session.verified,identity.verification_session.requires_input")]
pub struct RegisterEndpoint {
    /// The public HTTPS URL of ingest's `/webhook`.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The events to enable (default: the six Identity events).
    #[arg(long, value_name = "TYPE", value_delimiter = ',', num_args = 1..)]
    pub events: Vec<String>,
    /// A description shown in Stripe's Dashboard.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(
    _settings: &CtlSettings,
    _env: &Env,
    _args: &RegisterEndpoint,
) -> anyhow::Result<String> {
    anyhow::bail!("idvctl register-endpoint: not built yet")
}
