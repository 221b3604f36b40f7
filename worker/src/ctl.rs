//! `idvctl`: the operator's commands, apart from argument parsing so they
//! can be tested. Each returns the text to print or an error to report.

use std::fmt::Write as _;

use anyhow::Context as _;
use secrecy::{ExposeSecret, SecretString};
use shared::SessionId;
use shared::config::{ConfigError, Env};
use shared::topology::Topology;
use tokio_postgres::NoTls;

use crate::domain::outbox::ActionKind;
use crate::settings::{DEFAULT_AMQP_URL, database_url};
use crate::store::outbox_admin::{
    self, DUE_ON_NEXT_EVENT, ListFilter, OutboxRowView, RetryOne, RowStatus,
};
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

/// The most rows `outbox list --limit` may ask for.
pub const MAX_LIST_LIMIT: u32 = 10_000;

/// The values `--status` takes, for help and errors.
pub fn allowed_statuses() -> String {
    RowStatus::ALL.map(RowStatus::as_str).join(", ")
}

/// The values `--kind` takes, for help and errors.
pub fn allowed_kinds() -> String {
    ActionKind::ALL.map(ActionKind::as_str).join(", ")
}

/// `idvctl outbox list`: the rows, newest first, without their payloads.
/// The filters are checked before any connection.
pub async fn outbox_list(
    settings: &CtlSettings,
    status: Option<&str>,
    kind: Option<&str>,
    limit: u32,
    json: bool,
) -> anyhow::Result<String> {
    let filter = ListFilter {
        status: status
            .map(|raw| {
                RowStatus::parse(raw).ok_or_else(|| {
                    UsageError(format!(
                        "unknown --status {raw:?}: expected one of {}",
                        allowed_statuses()
                    ))
                })
            })
            .transpose()?,
        kind: kind
            .map(|raw| {
                ActionKind::parse(raw).ok_or_else(|| {
                    UsageError(format!(
                        "unknown --kind {raw:?}: expected one of {}",
                        allowed_kinds()
                    ))
                })
            })
            .transpose()?,
        limit: if (1..=MAX_LIST_LIMIT).contains(&limit) {
            limit
        } else {
            return Err(UsageError(format!("--limit is 1 to {MAX_LIST_LIMIT}")).into());
        },
    };
    let client = client(settings).await?;
    let rows = outbox_admin::list(&client, filter)
        .await
        .context("reading the outbox")?;
    if json {
        return Ok(serde_json::to_string_pretty(&rows)?);
    }
    if rows.is_empty() {
        return Ok("no outbox rows".to_owned());
    }
    Ok(outbox_table(&rows))
}

/// Which rows `idvctl outbox retry` re-drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryTarget {
    /// This row, which must be failed.
    One(i64),
    /// Every failed row.
    AllFailed,
}

/// `idvctl outbox retry`: failed rows become pending and due now, with no
/// attempts and no error, for the dispatcher to perform again.
pub async fn outbox_retry(settings: &CtlSettings, target: RetryTarget) -> anyhow::Result<String> {
    let client = client(settings).await?;
    let redriven = match target {
        RetryTarget::AllFailed => outbox_admin::retry_all_failed(&client)
            .await
            .context("re-driving the failed outbox rows")?,
        RetryTarget::One(id) => match outbox_admin::retry_one(&client, id)
            .await
            .context("re-driving the outbox row")?
        {
            RetryOne::Redriven => 1,
            RetryOne::NotFound => anyhow::bail!("no outbox row {id}"),
            RetryOne::NotFailed(status) if status == RowStatus::Failed.as_str() => {
                anyhow::bail!("outbox row {id} changed while it was retried: run the command again")
            }
            RetryOne::NotFailed(status) => anyhow::bail!(
                "outbox row {id} is {status}, not failed: only failed rows are retried; nothing changed"
            ),
        },
    };
    Ok(match redriven {
        0 => "re-driven: 0 rows (none was failed)".to_owned(),
        1 => "re-driven: 1 failed row, now pending and due".to_owned(),
        n => format!("re-driven: {n} failed rows, now pending and due"),
    })
}

/// When a row is due (pending) or was done (otherwise): a label and a time.
fn when(row: &OutboxRowView) -> (&'static str, String) {
    if row.status != RowStatus::Pending.as_str() {
        ("done", or_dash(row.done_at.as_deref()).to_owned())
    } else if row.due_at == DUE_ON_NEXT_EVENT {
        ("due", "on next event".to_owned())
    } else {
        ("due", row.due_at.clone())
    }
}

/// `value` on one line of a terminal: texts from other services (an SMTP
/// reply in `last_error`) or from the platform (a subject key) may hold a
/// line break or an escape sequence.
fn one_line(value: Option<&str>) -> String {
    or_dash(value)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn outbox_table(rows: &[OutboxRowView]) -> String {
    const HEADER: [&str; 8] = [
        "ID",
        "KIND",
        "STATUS",
        "ATTEMPTS",
        "DUE/DONE",
        "SUBJECT",
        "SESSION",
        "LAST_ERROR",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|row| {
            let (label, time) = when(row);
            [
                row.id.to_string(),
                one_line(Some(&row.kind)),
                one_line(Some(&row.status)),
                row.attempts.to_string(),
                format!("{label} {time}"),
                one_line(row.subject_key.as_deref()),
                one_line(row.session_id.as_deref()),
                one_line(row.last_error.as_deref()),
            ]
        })
        .collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header = HEADER.map(str::to_owned);
    for line in std::iter::once(&header).chain(&cells) {
        let mut out = String::new();
        for (cell, width) in line.iter().zip(widths) {
            let _ = write!(out, "{cell:<width$}  ");
        }
        text.push_str(out.trim_end());
        text.push('\n');
    }
    text.trim_end().to_owned()
}

fn action_text(row: &OutboxRowView, indent: &str) -> String {
    let (label, time) = when(row);
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{indent}action {} {}",
        row.id,
        one_line(Some(&row.kind))
    );
    let _ = writeln!(
        text,
        "{indent}  session: {}",
        one_line(row.session_id.as_deref())
    );
    let _ = writeln!(text, "{indent}  status: {}", one_line(Some(&row.status)));
    let _ = writeln!(text, "{indent}  attempts: {}", row.attempts);
    let _ = writeln!(text, "{indent}  {label}: {time}");
    let _ = writeln!(
        text,
        "{indent}  last error: {}",
        one_line(row.last_error.as_deref())
    );
    text
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
    if subject.actions.is_empty() {
        text.push_str("  no actions\n");
    }
    for action in &subject.actions {
        text.push_str(&action_text(action, "  "));
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
