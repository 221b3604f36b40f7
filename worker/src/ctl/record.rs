//! `idvctl subject show` and `idvctl session show`: the record, as text
//! or JSON.

use std::fmt::Write as _;

use anyhow::Context as _;
use shared::SessionId;

use super::outbox::action_text;
use super::text::or_dash;
use super::{CtlSettings, UsageError, client};
use crate::store::read::{self, SessionView, SubjectView};

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
