//! `idvctl`: the operator's commands, apart from argument parsing so they
//! can be tested. Each returns the text to print or an error to report.

use std::fmt::Write as _;

use anyhow::Context as _;
use secrecy::{ExposeSecret, SecretString};
use shared::SessionId;
use shared::config::{ConfigError, Env};
use shared::topology::Topology;
use tokio_postgres::NoTls;

use crate::settings::{DEFAULT_AMQP_URL, database_url};
use crate::store::read::{self, SessionView, SubjectView};

/// The settings `idvctl` reads (a subset of the worker's), all checked at
/// load whatever the command, so a bad one is exit code 2 and names itself.
#[derive(Debug, Clone)]
pub struct CtlSettings {
    /// `DATABASE_URL`: may carry a password.
    pub database_url: SecretString,
    /// `AMQP_URL`: may carry a password.
    pub amqp_url: SecretString,
    /// `AMQP_PREFIX`: the names `idvctl topology` declares.
    pub topology: Topology,
    /// `IDV_MAX_FAILED_ATTEMPTS`: shown as `max_attempts` beside a subject.
    pub max_failed_attempts: i32,
}

impl CtlSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        shared::telemetry::check_filter(env)?;
        Ok(Self {
            database_url: database_url(env)?,
            amqp_url: shared::config::amqp_url(env, DEFAULT_AMQP_URL)?,
            topology: Topology::from_env(env)?,
            max_failed_attempts: i32::try_from(env.number_or(
                "IDV_MAX_FAILED_ATTEMPTS",
                3,
                1..=1000,
            )?)
            .unwrap_or(i32::MAX),
        })
    }
}

/// A problem with what the operator asked for (exit code 2), as opposed to
/// a failure to do it (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub async fn migrate(settings: &CtlSettings) -> anyhow::Result<String> {
    let applied = crate::migrate::migrate(&settings.database_url).await?;
    Ok(if applied.is_empty() {
        "schema up to date; no migration applied".to_owned()
    } else {
        format!("applied: {}", applied.join(", "))
    })
}

pub async fn topology(settings: &CtlSettings) -> anyhow::Result<String> {
    shared::topology::declare_at(settings.amqp_url.expose_secret(), &settings.topology)
        .await
        .context("connecting to the broker (AMQP_URL) and declaring the topology")?;
    let t = &settings.topology;
    Ok(format!(
        "declared exchange {} (alternate {}), queues {}, {}, {}, and the retry queues",
        t.events_exchange(),
        t.unrouted_exchange(),
        t.events_queue(),
        t.dead_letter_queue(),
        t.unrouted_queue()
    ))
}

async fn client(settings: &CtlSettings) -> anyhow::Result<tokio_postgres::Client> {
    let config = crate::store::pg_config(&settings.database_url)?;
    let (client, connection) = config
        .connect(NoTls)
        .await
        .context("connecting to the database (DATABASE_URL)")?;
    tokio::spawn(connection);
    Ok(client)
}

pub async fn subject_show(settings: &CtlSettings, key: &str, json: bool) -> anyhow::Result<String> {
    if key.trim().is_empty() || key.len() > 255 {
        return Err(UsageError("a subject key is 1 to 255 characters".to_owned()).into());
    }
    let client = client(settings).await?;
    let subject = read::subject(&client, key, settings.max_failed_attempts)
        .await
        .context("reading the subject")?
        .ok_or_else(|| anyhow::anyhow!("no subject with key {key:?}"))?;
    if json {
        return Ok(serde_json::to_string_pretty(&subject)?);
    }
    Ok(subject_text(&subject))
}

pub async fn session_show(settings: &CtlSettings, id: &str, json: bool) -> anyhow::Result<String> {
    let id = SessionId::parse(id)
        .map_err(|e| UsageError(format!("{id:?} is not a VerificationSession id: {e}")))?;
    let client = client(settings).await?;
    let session = read::session(&client, id.as_str())
        .await
        .context("reading the session")?
        .ok_or_else(|| anyhow::anyhow!("no session {id}"))?;
    if json {
        return Ok(serde_json::to_string_pretty(&session)?);
    }
    Ok(session_text(&session, ""))
}

fn or_dash(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

fn subject_text(subject: &SubjectView) -> String {
    let mut text = format!(
        "subject {}\n  status: {}\n  failed attempts: {} of {}\n  last error: {}\n  decided by: {}\n",
        subject.key,
        subject.status,
        subject.failed_attempts,
        subject.max_attempts,
        or_dash(subject.last_error_code.as_deref()),
        or_dash(subject.decided_by_session.as_deref()),
    );
    for session in &subject.sessions {
        text.push_str(&session_text(session, "  "));
    }
    text.trim_end().to_owned()
}

fn session_text(session: &SessionView, indent: &str) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "{indent}session {}", session.id);
    let _ = writeln!(
        text,
        "{indent}  subject: {}",
        or_dash(session.subject.as_deref())
    );
    let _ = writeln!(text, "{indent}  status: {}", session.status);
    let _ = writeln!(
        text,
        "{indent}  last error: {}",
        or_dash(session.last_error_code.as_deref())
    );
    let _ = writeln!(
        text,
        "{indent}  last event: {} (created {})",
        or_dash(session.last_event_id.as_deref()),
        session
            .last_event_created
            .map_or("-".to_owned(), |c| c.to_string())
    );
    if session.redacted {
        let _ = writeln!(text, "{indent}  redacted");
    }
    text
}
