//! `idvctl send-test-event`: build a realistic Identity event in Stripe's
//! exact shape, sign it as Stripe does and POST it to ingest.
//!
//! - [`event`] builds the body (the fixtures' fields and key order),
//! - [`ids`] makes fresh `evt_…`/`vs_…` ids, [`reasons`] Stripe's texts,
//! - [`checks`] turns the flags into trusted values,
//! - [`ingest`] signs and POSTs, and reads ingest's answer.
//!
//! `idvctl scenario` sends its stories through the same pieces.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use serde::Serialize;
use shared::config::Env;

use super::text::{one_line, or_dash};
use super::{CtlSettings, UsageError};

pub mod checks;
pub mod event;
pub mod ids;
pub mod ingest;
pub mod reasons;

pub use event::{BuiltEvent, EventSpec, build};
pub use ingest::{Answer, Ingest};

/// The six Identity event types, by the status they announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TestEventKind {
    Created,
    Processing,
    // Stripe's spelling; clap's default would be `requires-input`.
    #[value(name = "requires_input", alias = "requires-input")]
    RequiresInput,
    Verified,
    Canceled,
    Redacted,
}

impl TestEventKind {
    /// `identity.verification_session.<kind>`.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Created => "identity.verification_session.created",
            Self::Processing => "identity.verification_session.processing",
            Self::RequiresInput => "identity.verification_session.requires_input",
            Self::Verified => "identity.verification_session.verified",
            Self::Canceled => "identity.verification_session.canceled",
            Self::Redacted => "identity.verification_session.redacted",
        }
    }

    /// The session's `status` inside such an event: a new session waits
    /// for input (with no error), and a redacted one keeps the status it
    /// had (here, as in the fixture, `verified`).
    pub fn session_status(self) -> &'static str {
        match self {
            Self::Created | Self::RequiresInput => "requires_input",
            Self::Processing => "processing",
            Self::Verified | Self::Redacted => "verified",
            Self::Canceled => "canceled",
        }
    }
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

/// What was sent and what ingest said, for `--json`.
#[derive(Debug, Serialize)]
struct Sent<'a> {
    event_id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    session: &'a str,
    subject: Option<&'a str>,
    code: Option<&'a str>,
    created: i64,
    to: String,
    status: u16,
    body: &'a str,
}

pub async fn run(
    _settings: &CtlSettings,
    env: &Env,
    args: &SendTestEvent,
) -> anyhow::Result<String> {
    let session = args.session.as_deref().map(checks::session).transpose()?;
    let subject = args.subject.as_deref().map(checks::subject).transpose()?;
    let code = args.code.as_deref().map(checks::code).transpose()?;
    if code.is_some() && args.kind != TestEventKind::RequiresInput {
        return Err(UsageError(
            "--code goes with requires_input only: other events carry no last_error".to_owned(),
        )
        .into());
    }
    let created = args.created.map(checks::created).transpose()?;
    let ingest = Ingest::new(&args.to, args.secret.as_deref(), env)?;

    let created = created.unwrap_or_else(now_unix);
    let session = session.unwrap_or_else(ids::session_id);
    let event = build(&EventSpec {
        kind: args.kind,
        session: &session,
        subject: subject.as_deref(),
        code: code.as_deref(),
        created,
        // A session is created before anything else happens to it.
        session_created: if args.kind == TestEventKind::Created {
            created
        } else {
            created.saturating_sub(60)
        },
        sent_by: "idvctl send-test-event",
    });
    let answer = ingest.send(&event).await?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&Sent {
            event_id: &event.id,
            event_type: &event.event_type,
            session: &event.session,
            subject: event.subject.as_deref(),
            code: event.code.as_deref(),
            created: event.created,
            to: ingest.shown_url(),
            status: answer.status,
            body: &answer.body,
        })?);
    }
    Ok(sent_text(&event, &ingest, &answer))
}

fn sent_text(event: &BuiltEvent, ingest: &Ingest, answer: &Answer) -> String {
    let subject = match event.subject.as_deref() {
        Some(subject) => one_line(Some(subject)),
        None => "- (no client_reference_id: the worker files it under the session id)".to_owned(),
    };
    let mut text = format!(
        "sent {}\n  event:   {}\n  session: {}\n  subject: {subject}\n",
        event.event_type, event.id, event.session
    );
    if event.code.is_some() {
        text.push_str(&format!(
            "  code:    {}\n",
            one_line(Some(or_dash(event.code.as_deref())))
        ));
    }
    text.push_str(&format!(
        "  created: {}\n  to:      {}\n  ingest:  {}",
        event.created,
        ingest.shown_url(),
        answer.describe()
    ));
    text
}

/// Now, in Unix seconds.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
