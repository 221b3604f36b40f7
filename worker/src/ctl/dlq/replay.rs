//! `idvctl dlq replay`: each selected event published again to
//! `stripe.events` (its original bytes, routing key = its type, header
//! `x-idv-replay: dead-letter:<id>`) and its dead letters marked replayed
//! once the broker confirmed the copy.
//!
//! Per event, one short transaction: lock its waiting rows with
//! `FOR UPDATE SKIP LOCKED` (a second replay running at the same time
//! skips them rather than publishing them too), publish, wait for the
//! confirm, mark, commit. Nothing is lost and nothing is duplicated beyond
//! what the worker absorbs:
//! - a failed or unconfirmed publish rolls back: the rows stay waiting;
//! - a crash, a kill, Ctrl-C handled too late or a broker restart between
//!   the confirm and the commit leaves the rows unmarked although the copy
//!   is in the queue: the next replay publishes it again, and the worker,
//!   whose inbox deduplicates by event id, sees it as a duplicate.
//!
//! Ctrl-C (or SIGTERM) stops after the event in hand; so does losing the
//! broker or the database (every publish after it would fail the same
//! way). What was done is printed and the command exits 1 (not 0: the
//! selection was not all replayed), so running it again takes the rest. A
//! copy the broker refuses (a nack, no queue for it) fails that event
//! alone, and the replay goes on.

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::output::{EventLine, Stop, Tally, print_line};
use super::unit::{Skip, Unit};
use super::{Replay, dry_run};
use crate::ctl::republish::{Origin, Outgoing, Republisher};
use crate::ctl::terminal::progress;
use crate::ctl::{CtlSettings, client};
use crate::store::dead_letters_admin as store;

/// How long the broker may take to confirm one copy: past it, the event
/// counts as failed and its rows stay waiting (a confirm arriving later
/// only means the next replay's copy is a duplicate).
const CONFIRM_DEADLINE: Duration = Duration::from_secs(30);

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Published, confirmed, and these rows marked.
    Replayed(Vec<i64>),
    Skipped(Skip),
    /// The error, for the operator (never payload text), and whether the
    /// link it needs is gone (the broker's or the database's).
    Failed(String, Option<Stop>),
}

pub async fn run(settings: &CtlSettings, args: &Replay) -> anyhow::Result<String> {
    let selection = args.select.selection(SystemTime::now(), "replay")?;
    let parse_settings = args.dry_run.then(dry_run::parse_settings).transpose()?;
    let mut client = client(settings).await?;
    if !selection.event_ids.is_empty() {
        let unknown = store::unknown_event_ids(&client, &selection.event_ids)
            .await
            .context("looking the events up")?;
        if !unknown.is_empty() {
            bail!(
                "no dead letter of event {}: nothing replayed",
                unknown.join(", ")
            );
        }
    }
    let candidates = store::candidates(&client, &selection)
        .await
        .context("selecting the dead letters to replay")?;
    let units = Unit::group(candidates);
    if let Some(parse_settings) = parse_settings {
        return dry_run::run(&client, &units, &parse_settings, args.json).await;
    }
    if units.is_empty() {
        return Ok(if args.json {
            Tally::default().json()
        } else {
            "nothing to replay: every dead letter selected was replayed already, or none matches"
                .to_owned()
        });
    }
    // From here on Ctrl-C (or SIGTERM) asks the loop to stop between two
    // events instead of killing the process; before, nothing was done yet.
    let stop = CancellationToken::new();
    let signal = shared::signals::stop_requested();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            signal.await;
            stop.cancel();
        }
    });
    let publisher = Republisher::connect(settings).await?;
    let tally = publish_all(&mut client, &publisher, &units, args, &stop).await;
    publisher.close().await;
    let summary = if args.json {
        tally.json()
    } else {
        tally.text()
    };
    if tally.failed == 0 && tally.stopped.is_none() {
        return Ok(summary);
    }
    print_line(&summary);
    if let Some(stop) = tally.stopped {
        bail!(
            "{}: stopped after the event in hand; {} not attempted",
            stop.as_str(),
            tally.not_attempted
        );
    }
    bail!(
        "{} of {} events failed to replay (see above); their dead letters wait for the next replay",
        tally.failed,
        units.len()
    )
}

/// Replays `units` in order, paced by `--rate`, until done or `stop`.
async fn publish_all(
    client: &mut Client,
    publisher: &Republisher,
    units: &[Unit],
    args: &Replay,
    stop: &CancellationToken,
) -> Tally {
    let bar = progress(u64::try_from(units.len()).unwrap_or(u64::MAX), "events");
    let mut pacer = args.rate.map(|rate| rate.pacer());
    let mut tally = Tally::default();
    for (done, unit) in units.iter().enumerate() {
        let outcome = match unit.skip {
            Some(skip) => Outcome::Skipped(skip),
            None => {
                let paced = async {
                    if let Some(pacer) = pacer.as_mut() {
                        pacer.tick().await;
                    }
                };
                let go = tokio::select! {
                    biased;
                    () = stop.cancelled() => false,
                    () = paced => true,
                };
                if !go {
                    tally.stop(Stop::Interrupted, units.len() - done);
                    break;
                }
                replay_one(client, publisher, unit).await
            }
        };
        let line = match &outcome {
            Outcome::Replayed(ids) => {
                tally.replayed += 1;
                EventLine {
                    dead_letters: ids,
                    ..EventLine::new(unit, "replayed", None)
                }
                .render(args.json)
            }
            Outcome::Skipped(skip) => {
                tally.skip(*skip);
                EventLine::new(unit, "skipped", Some(skip.as_str())).render(args.json)
            }
            Outcome::Failed(error, _) => {
                tally.failed += 1;
                EventLine::new(unit, "failed", Some(error)).render(args.json)
            }
        };
        // Text shows only what was not replayed; JSON every event.
        if args.json || !matches!(outcome, Outcome::Replayed(_)) {
            bar.suspend(|| print_line(&line));
        }
        bar.inc(1);
        if let Outcome::Failed(_, Some(stop)) = outcome {
            tally.stop(stop, units.len() - done - 1);
            break;
        }
    }
    bar.finish_and_clear();
    tally
}

async fn replay_one(client: &mut Client, publisher: &Republisher, unit: &Unit) -> Outcome {
    match try_replay(client, publisher, unit).await {
        Ok(outcome) => outcome,
        Err(error) => {
            // A lapin error is the channel or the connection failing (a
            // nack or a returned message is an error of ours, not lapin's).
            let stop = if client.is_closed() {
                Some(Stop::DatabaseLost)
            } else if error.chain().any(|cause| cause.is::<lapin::Error>())
                || error.is::<ConfirmTimeout>()
            {
                Some(Stop::BrokerLost)
            } else {
                None
            };
            Outcome::Failed(format!("{error:#}"), stop)
        }
    }
}

/// The broker took longer than [`CONFIRM_DEADLINE`] to confirm a copy.
#[derive(Debug, thiserror::Error)]
#[error("the broker did not confirm within {CONFIRM_DEADLINE:?}; not marked")]
struct ConfirmTimeout;

/// Lock, publish, confirm, mark, commit: one event in one transaction.
async fn try_replay(
    client: &mut Client,
    publisher: &Republisher,
    unit: &Unit,
) -> anyhow::Result<Outcome> {
    let tx = client
        .transaction()
        .await
        .context("starting a transaction")?;
    let locked = store::lock_waiting(&tx, &unit.ids)
        .await
        .context("locking the dead letters")?;
    if locked.is_empty() {
        return Ok(Outcome::Skipped(Skip::Taken));
    }
    // The newest copy that can be sent (they all carry the same bytes).
    let Some((row, body, event_type)) = locked
        .iter()
        .find_map(|row| Some((row, row.payload.as_deref()?, row.event_type.as_deref()?)))
    else {
        let erased = locked.iter().all(|row| row.payload.is_none());
        return Ok(Outcome::Skipped(if erased {
            Skip::Redacted
        } else {
            Skip::NoEventType
        }));
    };
    // A dead letter whose event the inbox holds is an inbox replay that
    // failed (`idvctl events replay`, e.g. its new action refused): sent
    // again as one, so the worker derives its actions, not a duplicate.
    let in_inbox = match unit.event_id.as_deref() {
        Some(id) => !store::seen_in_inbox(&tx, &[id.to_owned()])
            .await
            .context("reading the inbox (events)")?
            .is_empty(),
        None => false,
    };
    let outgoing = Outgoing {
        body,
        event_type,
        event_id: unit.event_id.as_deref(),
        created: row.event_created,
        origin: if in_inbox {
            Origin::Inbox
        } else {
            Origin::DeadLetter(row.id)
        },
    };
    tokio::time::timeout(CONFIRM_DEADLINE, publisher.publish(outgoing))
        .await
        .map_err(|_| ConfirmTimeout)??;
    crate::fail_point::after_replay_confirm();
    let ids: Vec<i64> = locked.iter().map(|row| row.id).collect();
    let marked = async {
        store::mark_replayed(&tx, &ids).await?;
        tx.commit().await
    };
    marked.await.context(
        "published and confirmed, but not marked replayed: the next replay publishes it \
         again and the worker's dedupe absorbs the copy",
    )?;
    Ok(Outcome::Replayed(ids))
}
