//! `idvctl send-test-event`: build a realistic Identity event in Stripe's
//! exact shape, sign it as Stripe does and POST it to ingest.

use clap::{Args, ValueEnum};
use shared::config::Env;

use super::CtlSettings;

/// The six Identity event types, by the status they announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TestEventKind {
    Created,
    Processing,
    RequiresInput,
    Verified,
    Canceled,
    Redacted,
}

/// Where `send-test-event` and `scenario` post when `--to` is not given.
pub const DEFAULT_INGEST_URL: &str = "http://127.0.0.1:4242/webhook";

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Signs with --secret, else STRIPE_WEBHOOK_SECRET (the secret ingest \
    checks).\n\nExamples:\n  idvctl send-test-event verified --subject user_42\n  \
    idvctl send-test-event requires_input --session vs_123 --code selfie_face_mismatch\n  \
    idvctl send-test-event canceled --to https://idv.example.com/webhook --secret whsec_…"
)]
pub struct SendTestEvent {
    /// The event: identity.verification_session.<KIND>.
    #[arg(value_enum)]
    pub kind: TestEventKind,
    /// The VerificationSession's id (a new `vs_…` if not given).
    #[arg(long, value_name = "vs_…")]
    pub session: Option<String>,
    /// The session's `client_reference_id`: who is being verified.
    #[arg(long, value_name = "KEY")]
    pub subject: Option<String>,
    /// `last_error.code` of a requires_input event (default
    /// document_unverified_other).
    #[arg(long, value_name = "CODE")]
    pub code: Option<String>,
    /// Ingest's webhook URL.
    #[arg(long, value_name = "URL", default_value = DEFAULT_INGEST_URL)]
    pub to: String,
    /// The endpoint's signing secret (default: STRIPE_WEBHOOK_SECRET).
    #[arg(long, value_name = "whsec_…")]
    pub secret: Option<String>,
    /// The event's `created`, Unix seconds (default: now).
    #[arg(long, value_name = "T")]
    pub created: Option<i64>,
    /// Print the response as JSON (event id, status, body).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(
    _settings: &CtlSettings,
    _env: &Env,
    _args: &SendTestEvent,
) -> anyhow::Result<String> {
    anyhow::bail!("idvctl send-test-event: not built yet")
}
