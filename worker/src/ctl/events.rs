//! `idvctl events replay`: publish stored events from the inbox again,
//! e.g. after fixing a bug in an action; the worker's rules decide what
//! changes (a seen event changes no state; it may call for actions).
//!
//! Each event goes to `stripe.events` with routing key = its type and the
//! header `x-idv-replay: inbox`, confirmed by the broker one at a time. The
//! worker reads that header: an event its inbox has seen is then not a
//! duplicate but a request to derive its outbox rows again with the sinks
//! configured now (rows already there stay as they are), and to reconcile
//! its subject's limit rows; no session or subject changes. An event the
//! inbox no longer holds is applied as any delivery is.
//!
//! The bytes published are PostgreSQL's rendering of the stored JSON
//! (`payload::text`), not Stripe's original bytes: the same event, keys
//! and spacing as `jsonb` keeps them. Replaying is idempotent: an
//! interrupted replay is simply run again.

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;
use shared::{EventType, SessionId};

use super::rate::Rate;
use super::republish::{Origin, Outgoing, Republisher};
use super::since::Since;
use super::{CtlSettings, UsageError, client};
use crate::store::inbox_admin::{self, ReplayFilter, StoredEvent};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish the inbox's events received since D to `stripe.events`
    /// again, oldest first, for the worker to apply its rules to them again:
    /// an event it has seen changes no state, but the actions it calls for
    /// with today's settings (a sink configured since, an action fixed) are
    /// added; actions already there are not repeated.
    #[command(after_help = "Examples:\n  idvctl events replay --since 2h\n  \
        idvctl events replay --since 2026-11-01 --type identity.verification_session.verified\n  \
        idvctl events replay --since 30d --session vs_1Sk3Gh2eZvKYlo2CqR8tNw4P --dry-run\n\n\
        Only events whose payload is still stored are replayed (a redacted session's, or one \
        `idvctl prune` erased, are not). Replay no further back than the age you prune at: an \
        event whose actions were pruned would have them performed again. The bytes published \
        are PostgreSQL's rendering of the stored JSON, not Stripe's original bytes.")]
    Replay(Replay),
}

#[derive(Debug, Clone, Args)]
pub struct Replay {
    /// Events received since then: an age (90m, 36h, 7d) or a UTC date or time.
    #[arg(long, value_name = "D")]
    pub since: Since,
    /// Only events of this type (`verified` is short for
    /// `identity.verification_session.verified`).
    #[arg(long = "type", value_name = "T")]
    pub event_type: Option<String>,
    /// Only events of this VerificationSession.
    #[arg(long, value_name = "vs_…")]
    pub session: Option<String>,
    /// Publish nothing: print what would be published.
    #[arg(long)]
    pub dry_run: bool,
    /// At most this many messages a second (50/s, 0.5/s).
    #[arg(long, value_name = "N/s")]
    pub rate: Option<Rate>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Payloads read from the database at a time.
const PAGE: usize = 100;

pub async fn run(settings: &CtlSettings, command: &Command) -> anyhow::Result<String> {
    let Command::Replay(args) = command;
    replay(settings, args).await
}

/// What a replay did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Serialize)]
struct Summary {
    dry_run: bool,
    /// The `--since` moment, UTC.
    since: String,
    /// Events the filters selected.
    selected: usize,
    /// Published and confirmed by the broker (0 on a dry run).
    published: usize,
    /// Selected, but their payload was gone when their turn came.
    skipped: usize,
    /// Published (or to publish), by event type.
    by_type: BTreeMap<String, usize>,
    /// With `--dry-run`: the events, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<StoredEvent>>,
}

async fn replay(settings: &CtlSettings, args: &Replay) -> anyhow::Result<String> {
    let event_type = args.event_type.as_deref().map(event_type).transpose()?;
    let session = args
        .session
        .as_deref()
        .map(|raw| {
            SessionId::parse(raw).map_err(|e| {
                UsageError(format!(
                    "--session {raw:?} is not a VerificationSession id: {e}"
                ))
            })
        })
        .transpose()?;
    let moment = args.since.moment(SystemTime::now());
    let filter = ReplayFilter {
        since_ms: args.since.unix_millis(SystemTime::now()),
        event_type: event_type.as_ref().map(EventType::as_str),
        session_id: session.as_ref().map(SessionId::as_str),
    };
    let client = client(settings).await?;
    let events = inbox_admin::select(&client, filter)
        .await
        .context("reading the inbox")?;
    let mut summary = Summary {
        dry_run: args.dry_run,
        since: humantime::format_rfc3339_seconds(moment).to_string(),
        selected: events.len(),
        published: 0,
        skipped: 0,
        by_type: BTreeMap::new(),
        events: None,
    };
    if args.dry_run {
        for event in &events {
            *summary.by_type.entry(event.event_type.clone()).or_default() += 1;
        }
        summary.events = Some(events);
    } else if !events.is_empty() {
        publish_all(settings, &client, &events, args.rate, &mut summary).await?;
    }
    Ok(if args.json {
        serde_json::to_string_pretty(&summary)?
    } else {
        summary_text(&summary, &settings.topology.events_exchange())
    })
}

/// Publishes `events` in order, a page of payloads at a time, paced by
/// `rate`, counting into `summary`. A failure stops the replay and says
/// how far it got: running it again is harmless.
async fn publish_all(
    settings: &CtlSettings,
    client: &tokio_postgres::Client,
    events: &[StoredEvent],
    rate: Option<Rate>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let republisher = Republisher::connect(settings).await?;
    let bar = super::terminal::progress(events.len() as u64, "events");
    let mut pacer = rate.map(Rate::pacer);
    let result = async {
        for page in events.chunks(PAGE) {
            let ids: Vec<&str> = page.iter().map(|e| e.id.as_str()).collect();
            let payloads = inbox_admin::payloads(client, &ids)
                .await
                .context("reading payloads from the inbox")?;
            for event in page {
                bar.inc(1);
                let Some(body) = payloads.get(&event.id) else {
                    summary.skipped += 1;
                    continue;
                };
                if let Some(pacer) = pacer.as_mut() {
                    pacer.tick().await;
                }
                republisher
                    .publish(Outgoing {
                        body: body.as_bytes(),
                        event_type: &event.event_type,
                        event_id: Some(&event.id),
                        created: Some(event.created),
                        origin: Origin::Inbox,
                    })
                    .await
                    .with_context(|| {
                        format!(
                            "publishing {} ({} of {} published; running the replay again \
                             publishes them again, which the worker absorbs)",
                            event.id, summary.published, summary.selected
                        )
                    })?;
                summary.published += 1;
                *summary.by_type.entry(event.event_type.clone()).or_default() += 1;
            }
        }
        anyhow::Ok(())
    }
    .await;
    bar.finish_and_clear();
    republisher.close().await;
    result
}

fn summary_text(summary: &Summary, exchange: &str) -> String {
    let types = || {
        summary
            .by_type
            .iter()
            .map(|(t, n)| format!("{} {n}", short_type(t)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if summary.selected == 0 {
        return format!(
            "no stored event received since {} matches; nothing published",
            summary.since
        );
    }
    let mut text = String::new();
    if let Some(events) = &summary.events {
        let rows: Vec<[String; 4]> = events
            .iter()
            .map(|e| {
                [
                    e.received_at.clone(),
                    super::text::one_line(Some(&e.id)),
                    short_type(&e.event_type).to_owned(),
                    super::text::one_line(Some(&e.session_id)),
                ]
            })
            .collect();
        text.push_str(&super::text::table(
            ["RECEIVED", "EVENT", "TYPE", "SESSION"],
            &rows,
        ));
        text.push('\n');
        text.push_str(&format!(
            "dry run: would publish {} event{} received since {} to {exchange} ({}); nothing published",
            summary.selected,
            plural(summary.selected),
            summary.since,
            types()
        ));
        return text;
    }
    text.push_str(&format!(
        "published {} event{} from the inbox (received since {}) to {exchange}, confirmed by the broker",
        summary.published,
        plural(summary.published),
        summary.since
    ));
    if summary.published > 0 {
        text.push_str(&format!(": {}", types()));
    }
    if summary.skipped > 0 {
        text.push_str(&format!(
            "\nskipped {} whose payload was erased (redacted or pruned) after it was selected",
            summary.skipped
        ));
    }
    text
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `verified` for `identity.verification_session.verified`.
fn short_type(event_type: &str) -> &str {
    event_type
        .strip_prefix("identity.verification_session.")
        .unwrap_or(event_type)
}

/// `--type`: one of the six session event types, in full or short.
fn event_type(raw: &str) -> Result<EventType, UsageError> {
    let full = if raw.contains('.') {
        raw.to_owned()
    } else {
        format!("identity.verification_session.{raw}")
    };
    match EventType::parse(&full) {
        EventType::Other(_) => Err(UsageError(format!(
            "unknown --type {raw:?}: expected one of {}",
            EventType::SESSION_EVENTS
                .iter()
                .map(|t| short_type(t.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        known => Ok(known),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_taken_in_full_or_short_and_others_refused() {
        assert_eq!(
            event_type("verified").ok(),
            Some(EventType::SessionVerified)
        );
        assert_eq!(
            event_type("identity.verification_session.requires_input").ok(),
            Some(EventType::SessionRequiresInput)
        );
        let refused = event_type("customer.created").err().map(|e| e.0);
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("requires_input, verified")),
            "{refused:?}"
        );
        assert!(event_type("approved").is_err());
    }
}
