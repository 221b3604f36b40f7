//! `idvctl outbox list` and `idvctl outbox retry`: the actions to perform
//! and what became of them, and re-driving the failed ones.

use std::fmt::Write as _;

use anyhow::Context as _;

use super::text::{one_line, or_dash};
use super::{CtlSettings, UsageError, client};
use crate::domain::outbox::ActionKind;
use crate::store::outbox_admin::{
    self, DUE_ON_NEXT_EVENT, ListFilter, OutboxRowView, RetryOne, RowStatus,
};

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
pub(super) fn when(row: &OutboxRowView) -> (&'static str, String) {
    if row.status != RowStatus::Pending.as_str() {
        ("done", or_dash(row.done_at.as_deref()).to_owned())
    } else if row.due_at == DUE_ON_NEXT_EVENT {
        ("due", "on next event".to_owned())
    } else {
        ("due", row.due_at.clone())
    }
}

pub(super) fn outbox_table(rows: &[OutboxRowView]) -> String {
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
    super::text::table(HEADER, &cells)
}

pub(super) fn action_text(row: &OutboxRowView, indent: &str) -> String {
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
