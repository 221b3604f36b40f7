//! `idvctl resync`: list Identity events from Stripe's Events API and
//! publish those the inbox has not seen, to recover what Stripe could not
//! deliver. Idempotent, and safe to run on a schedule.
//!
//! `GET /v1/events` with `types[]` for the six session types,
//! `created[gte]` (at most 30 days back: Stripe keeps events no longer),
//! `limit=100`, `delivery_success=false` with `--only-undelivered`, and
//! `starting_after` = the last id of the page before while `has_more`.
//! Page by page: the page's ids are looked up in the inbox (`events`) in
//! one query, and each unseen event is published, oldest of the page
//! first, exactly as the list holds it (the bytes of its element of
//! `data`: the object Stripe would have POSTed), through the confirmed
//! [`Republisher`] with routing key = its type. Memory stays one page
//! whatever the window; the worker minds neither order nor a duplicate
//! (an event published twice by two overlapping runs is a duplicate in
//! its inbox).

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Args;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use shared::config::Env;
use shared::event::{EventEnvelope, EventType};

use super::CtlSettings;
use super::rate::Rate;
use super::republish::{Origin, Outgoing, Republisher};
use super::since::Since;
use super::stripe_api::{ApiError, Purpose, StripeApi};
use super::terminal::progress;
use super::text::table;

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Reads STRIPE_API_KEY (a secret key, or a restricted key with read \
    access to Events) and STRIPE_API_BASE (default https://api.stripe.com); \
    STRIPE_API_RETRIES (default 5), STRIPE_API_BACKOFF_MS (first wait, default 1000) and \
    STRIPE_API_TIMEOUT_MS (default 30000) bound the retries of 429, 5xx and timeouts.\n\n\
    Safe on a schedule: an event the inbox holds is never published again.\n\n\
    Examples:\n  idvctl resync --since 3d\n  \
    idvctl resync --since 30d --only-undelivered --dry-run\n  \
    idvctl resync --since 2026-11-01 --rate 50/s --json"
)]
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

/// How long Stripe keeps events: the Events API lists no older ones.
pub const RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// Events a page holds (Stripe's most).
const PAGE_SIZE: &str = "100";

const PURPOSE: Purpose = Purpose {
    command: "resync",
    permission: "read access to Events",
};

/// Ids the inbox holds, or that wait as dead letters: a resync on a
/// schedule must not dead-letter an event that keeps failing once more
/// every run (each a new row, and the alert on them would never clear).
const SEEN: &str = "SELECT id FROM events WHERE id = ANY($1) \
     UNION SELECT event_id FROM dead_letters WHERE event_id = ANY($1) AND replayed_at IS NULL";

/// One page of `GET /v1/events`: each event kept as the bytes it arrived as.
#[derive(Deserialize)]
struct Page {
    data: Vec<Box<RawValue>>,
    has_more: bool,
}

/// An event of a page: its envelope, read as ingest reads one, and its bytes.
struct Listed {
    envelope: EventEnvelope,
    raw: Box<RawValue>,
}

/// The moment listed from: `--since`, or 30 days ago if that is earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `created[gte]`, Unix seconds.
    pub from: i64,
    /// `--since` reached further back than Stripe keeps events.
    pub clamped: bool,
}

impl Window {
    pub fn of(since: Since, now: SystemTime) -> Self {
        let asked = since.unix_seconds(now);
        let floor = Since::Ago(RETENTION).unix_seconds(now);
        Self {
            from: asked.max(floor),
            clamped: asked < floor,
        }
    }
}

/// What a run did, for its summary.
#[derive(Debug, Default)]
struct Tally {
    pages: u32,
    listed: u64,
    in_inbox: u64,
    /// Of a type other than the six (Stripe filters them; never published).
    ignored: u64,
    /// Published (or, with `--dry-run`, to publish): id, type, created.
    published: Vec<(String, String, i64)>,
}

pub async fn run(settings: &CtlSettings, env: &Env, args: &Resync) -> anyhow::Result<String> {
    let api = StripeApi::from_env(env, PURPOSE)?;
    let window = Window::of(args.since, SystemTime::now());
    let client = super::client(settings).await?;
    let seen = client
        .prepare(SEEN)
        .await
        .context("reading the inbox (events)")?;
    let publisher = if args.dry_run {
        None
    } else {
        Some(Republisher::connect(settings).await?)
    };
    let mut tally = Tally::default();
    let result = resync(
        &api,
        &client,
        &seen,
        publisher.as_ref(),
        args,
        window,
        &mut tally,
    )
    .await;
    if let Some(publisher) = publisher {
        publisher.close().await;
    }
    if let Err(error) = result {
        let done = tally.published.len();
        let context = if done == 0 || args.dry_run {
            format!(
                "resync stopped at page {} of Stripe's events",
                tally.pages + 1
            )
        } else {
            format!(
                "resync stopped at page {} of Stripe's events, after publishing {done} \
                 (running it again is safe: it publishes only what the inbox has not seen)",
                tally.pages + 1
            )
        };
        return Err(error.context(context));
    }
    Ok(if args.json {
        render_json(args, window, &tally)
    } else {
        render_text(args, window, &tally)
    })
}

async fn resync(
    api: &StripeApi,
    client: &tokio_postgres::Client,
    seen: &tokio_postgres::Statement,
    publisher: Option<&Republisher>,
    args: &Resync,
    window: Window,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let bar = progress(
        0,
        if args.dry_run {
            "events to publish"
        } else {
            "events published"
        },
    );
    let mut pacer = args.rate.map(Rate::pacer);
    let mut after: Option<String> = None;
    loop {
        let query = query(window, args.only_undelivered, after.as_deref());
        let page: Page = api.get("/v1/events", &query).await?;
        let has_more = page.has_more;
        let events = listed(page)?;
        let ids: Vec<&str> = events.iter().map(|e| e.envelope.id.as_str()).collect();
        let known: HashSet<String> = client
            .query(seen, &[&ids])
            .await
            .context("reading the inbox (events)")?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()
            .context("reading the inbox (events)")?;
        tally.listed += events.len() as u64;
        let fresh: Vec<&Listed> = events
            .iter()
            .rev() // Stripe lists newest first: the page's oldest goes first.
            .filter(|e| !known.contains(e.envelope.id.as_str()))
            .collect();
        tally.in_inbox += (events.len() - fresh.len()) as u64;
        bar.inc_length(fresh.len() as u64);
        for event in fresh {
            let envelope = &event.envelope;
            if matches!(EventType::parse(&envelope.event_type), EventType::Other(_)) {
                tally.ignored += 1;
                bar.dec_length(1);
                continue;
            }
            if let Some(publisher) = publisher {
                if let Some(pacer) = pacer.as_mut() {
                    pacer.tick().await;
                }
                publisher
                    .publish(Outgoing {
                        body: event.raw.get().as_bytes(),
                        event_type: &envelope.event_type,
                        event_id: Some(envelope.id.as_str()),
                        created: Some(envelope.created),
                        origin: Origin::Resync,
                    })
                    .await
                    .with_context(|| format!("publishing {}", envelope.id))?;
            }
            tally.published.push((
                envelope.id.to_string(),
                envelope.event_type.clone(),
                envelope.created,
            ));
            bar.inc(1);
        }
        tally.pages += 1;
        let last = events.last().map(|e| e.envelope.id.to_string());
        if !has_more || last.is_none() {
            break;
        }
        if last == after {
            // A cursor that does not move would list the same page forever.
            return Err(ApiError::Unexpected {
                what: "GET /v1/events".to_owned(),
                detail: "has_more, though the next page starts where this one did".to_owned(),
            }
            .into());
        }
        after = last;
    }
    bar.finish_and_clear();
    Ok(())
}

/// The query of one page.
fn query(
    window: Window,
    only_undelivered: bool,
    after: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut query: Vec<(&str, String)> = EventType::SESSION_EVENTS
        .iter()
        .map(|t| ("types[]", t.as_str().to_owned()))
        .collect();
    query.push(("created[gte]", window.from.to_string()));
    query.push(("limit", PAGE_SIZE.to_owned()));
    if only_undelivered {
        query.push(("delivery_success", "false".to_owned()));
    }
    if let Some(after) = after {
        query.push(("starting_after", after.to_owned()));
    }
    query
}

/// The page's events, each read as ingest reads a body: one that is not
/// an event ingest would take stops the run (nothing of it is printed).
fn listed(page: Page) -> Result<Vec<Listed>, ApiError> {
    page.data
        .into_iter()
        .enumerate()
        .map(
            |(i, raw)| match EventEnvelope::parse(raw.get().as_bytes()) {
                Ok(envelope) => Ok(Listed { envelope, raw }),
                Err(error) => Err(ApiError::Unexpected {
                    what: "GET /v1/events".to_owned(),
                    detail: format!("element {i} of data: {}", kind_of(&error)),
                }),
            },
        )
        .collect()
}

/// Why an element is not an event, without the serde message (which may
/// quote the data).
fn kind_of(error: &shared::event::EnvelopeError) -> &'static str {
    use shared::event::EnvelopeError;
    match error {
        EnvelopeError::NotJson(_) => "not an event (id, object, type, created)",
        EnvelopeError::NotAnEvent => "its object is not \"event\"",
        EnvelopeError::BadId(_) => "its id is not an evt_ id",
        EnvelopeError::BadType => "its type is not an event type",
        EnvelopeError::BadShape(_) => {
            "it is not UTF-8, is nested too deep, or has an escape or number out of range"
        }
    }
}

fn moment(unix: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

fn render_text(args: &Resync, window: Window, tally: &Tally) -> String {
    let mut lines = Vec::new();
    if window.clamped {
        lines.push(format!(
            "--since reaches further back than the 30 days Stripe keeps events: \
             listed from {} instead",
            moment(window.from)
        ));
    }
    lines.push(format!(
        "Identity events created at Stripe since {}{}",
        moment(window.from),
        if args.only_undelivered {
            ", only those Stripe failed to deliver"
        } else {
            ""
        }
    ));
    if args.dry_run && !tally.published.is_empty() {
        let rows: Vec<[String; 3]> = tally
            .published
            .iter()
            .map(|(id, kind, created)| [id.clone(), kind.clone(), moment(*created)])
            .collect();
        lines.push(table(["EVENT", "TYPE", "CREATED"], &rows));
    }
    let count = tally.published.len();
    let mut summary = format!(
        "listed {}, already in the inbox or waiting as dead letters {}, {}",
        tally.listed,
        tally.in_inbox,
        if args.dry_run {
            format!("would publish {count}")
        } else {
            format!("published {count}")
        }
    );
    if tally.ignored > 0 {
        summary.push_str(&format!(
            ", not Identity session events (left alone) {}",
            tally.ignored
        ));
    }
    if args.dry_run {
        summary.push_str(" (dry run: nothing published)");
    }
    lines.push(summary);
    lines.join("\n")
}

fn render_json(args: &Resync, window: Window, tally: &Tally) -> String {
    let events: Vec<serde_json::Value> = tally
        .published
        .iter()
        .map(|(id, kind, created)| json!({"id": id, "type": kind, "created": created}))
        .collect();
    json!({
        "since": window.from,
        "clamped": window.clamped,
        "only_undelivered": args.only_undelivered,
        "dry_run": args.dry_run,
        "listed": tally.listed,
        "in_inbox": tally.in_inbox,
        "ignored": tally.ignored,
        "published": if args.dry_run { 0 } else { events.len() },
        "events": events,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_goes_back_30_days_at_most() {
        let now = UNIX_EPOCH + Duration::from_secs(100 * 86_400);
        let week = Window::of(Since::Ago(Duration::from_secs(7 * 86_400)), now);
        assert_eq!(
            week,
            Window {
                from: 93 * 86_400,
                clamped: false
            }
        );
        let quarter = Window::of(Since::Ago(Duration::from_secs(90 * 86_400)), now);
        assert_eq!(
            quarter,
            Window {
                from: 70 * 86_400,
                clamped: true
            }
        );
        let date = Window::of(Since::At(UNIX_EPOCH), now);
        assert!(date.clamped && date.from == 70 * 86_400);
    }

    #[test]
    fn the_query_names_the_six_types_and_the_filters() {
        let window = Window {
            from: 1_700_000_000,
            clamped: false,
        };
        let first = query(window, false, None);
        let types: Vec<&str> = first
            .iter()
            .filter(|(k, _)| *k == "types[]")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(types.len(), 6);
        assert!(
            types
                .iter()
                .all(|t| t.starts_with("identity.verification_session."))
        );
        assert!(first.contains(&("created[gte]", "1700000000".to_owned())));
        assert!(first.contains(&("limit", "100".to_owned())));
        assert!(
            !first
                .iter()
                .any(|(k, _)| *k == "starting_after" || *k == "delivery_success")
        );
        let next = query(window, true, Some("evt_1"));
        assert!(next.contains(&("starting_after", "evt_1".to_owned())));
        assert!(next.contains(&("delivery_success", "false".to_owned())));
    }
}
