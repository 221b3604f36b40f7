//! `idvctl dlq replay --dry-run`: publishes and marks nothing, and says per
//! event what the worker would do with it now, by the worker's own rules:
//! - `fail again: <kind>`: [`crate::incoming::parse`] still refuses it
//!   (a refusal by the database cannot be foreseen);
//! - `duplicate`: the inbox has its id;
//! - `stale`: its session's applied order key is not below the event's
//!   ([`Incoming::order_key`], the key the worker compares);
//! - else `apply`.
//!
//! Each event is judged alone against the record as it is: two selected
//! events of one session may each be `apply` although, replayed, the
//! older one would arrive after the newer and be stale.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context as _;
use shared::config::{ConfigError, Env};
use tokio_postgres::Client;

use super::output::EventLine;
use super::unit::{Skip, Unit};
use crate::ctl::text::table;
use crate::incoming::{self, Incoming};
use crate::settings::Settings;
use crate::store::dead_letters_admin as store;
use crate::transition::OrderKey;

/// The only settings [`incoming::parse`] reads: they decide a failure's
/// class and the subject key, never whether an event parses, so a dry run
/// takes them from the environment when set and otherwise the worker's
/// defaults, and asks for nothing else (no dispatcher or sink setting).
const PARSE_VARIABLES: [&str; 2] = ["IDV_SUBJECT_KEY", "IDV_CODE_POLICY"];

/// Events judged per round trip.
const CHUNK: usize = 500;

/// The worker's settings as far as parsing goes (see [`PARSE_VARIABLES`]);
/// a bad value is exit code 2 naming its variable, as for the worker.
pub fn parse_settings() -> Result<Settings, ConfigError> {
    let process = Env::from_process();
    let pairs: Vec<(&str, String)> = PARSE_VARIABLES
        .iter()
        .filter_map(|name| Some((*name, process.optional(name)?.to_owned())))
        .collect();
    Settings::from_env(&Env::from_pairs(pairs))
}

/// What the worker would do with an event now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Apply,
    Stale,
    Duplicate,
    /// `parse` refuses it: the failure's kind.
    FailAgain(&'static str),
    Skipped(Skip),
}

impl Verdict {
    fn result(self) -> &'static str {
        match self {
            Self::Apply => "apply",
            Self::Stale => "stale",
            Self::Duplicate => "duplicate",
            Self::FailAgain(_) => "fail_again",
            Self::Skipped(_) => "skipped",
        }
    }

    fn detail(self) -> Option<&'static str> {
        match self {
            Self::FailAgain(kind) => Some(kind),
            Self::Skipped(skip) => Some(skip.as_str()),
            _ => None,
        }
    }

    /// `apply`, `fail again: status_mismatch`, `skip: no payload: redacted`.
    fn text(self) -> String {
        match self {
            Self::FailAgain(kind) => format!("fail again: {kind}"),
            Self::Skipped(skip) => format!("skip: {skip}"),
            other => other.result().to_owned(),
        }
    }
}

pub async fn run(
    client: &Client,
    units: &[Unit],
    settings: &Settings,
    json: bool,
) -> anyhow::Result<String> {
    let mut verdicts = Vec::with_capacity(units.len());
    for chunk in units.chunks(CHUNK) {
        verdicts.extend(judge(client, chunk, settings).await?);
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut skipped: BTreeMap<Skip, usize> = BTreeMap::new();
    for verdict in &verdicts {
        *counts.entry(verdict.result()).or_default() += 1;
        if let Verdict::Skipped(skip) = verdict {
            *skipped.entry(*skip).or_default() += 1;
        }
    }
    let count = |result: &str| counts.get(result).copied().unwrap_or(0);
    if json {
        let mut lines: Vec<String> = units
            .iter()
            .zip(&verdicts)
            .map(|(unit, verdict)| {
                EventLine::new(unit, verdict.result(), verdict.detail()).render(true)
            })
            .collect();
        let reasons: BTreeMap<&str, usize> =
            skipped.iter().map(|(why, n)| (why.as_str(), *n)).collect();
        lines.push(
            serde_json::json!({
                "summary": {
                    "dry_run": true,
                    "apply": count("apply"),
                    "stale": count("stale"),
                    "duplicate": count("duplicate"),
                    "fail_again": count("fail_again"),
                    "skipped": count("skipped"),
                    "skipped_reasons": reasons,
                }
            })
            .to_string(),
        );
        return Ok(lines.join("\n"));
    }
    let summary = format!(
        "dry run, nothing published or marked: apply {}, stale {}, duplicate {}, \
         fail again {}, skipped {}{}",
        count("apply"),
        count("stale"),
        count("duplicate"),
        count("fail_again"),
        count("skipped"),
        super::output::reasons(&skipped)
    );
    if units.is_empty() {
        return Ok(summary);
    }
    Ok(format!("{}\n{summary}", verdict_table(units, &verdicts)))
}

/// The verdicts of `units`, in order: their payloads, the inbox and their
/// sessions read in three round trips.
async fn judge(
    client: &Client,
    units: &[Unit],
    settings: &Settings,
) -> anyhow::Result<Vec<Verdict>> {
    let ids: Vec<i64> = units
        .iter()
        .filter(|unit| unit.skip.is_none())
        .flat_map(|unit| unit.ids.iter().copied())
        .collect();
    let payloads = store::payloads(client, &ids)
        .await
        .context("reading the dead letters' payloads")?;
    let now_ms = crate::consume::now_ms();
    let parsed: Vec<Result<Result<Incoming, &'static str>, Skip>> = units
        .iter()
        .map(|unit| {
            if let Some(skip) = unit.skip {
                return Err(skip);
            }
            // The newest copy still there (erased since the selection: skipped).
            let body = unit
                .ids
                .iter()
                .rev()
                .find_map(|id| payloads.get(id))
                .ok_or(Skip::Redacted)?;
            Ok(incoming::parse(body, now_ms, settings).map_err(|failure| failure.kind()))
        })
        .collect();
    let events: Vec<&Incoming> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok()?.as_ref().ok())
        .collect();
    let event_ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    let session_ids: Vec<String> = events.iter().map(|e| e.session_id.clone()).collect();
    let seen: HashSet<String> = store::seen_in_inbox(client, &event_ids)
        .await
        .context("reading the inbox")?;
    let applied: HashMap<String, OrderKey> = store::applied_order_keys(client, &session_ids)
        .await
        .context("reading the sessions")?;
    Ok(parsed
        .iter()
        .map(|parsed| match parsed {
            Err(skip) => Verdict::Skipped(*skip),
            Ok(Err(kind)) => Verdict::FailAgain(kind),
            Ok(Ok(event)) => verdict(event, &seen, &applied),
        })
        .collect())
}

/// The worker's order of checks: a seen id is a duplicate whatever it
/// carries; a lifecycle event is applied only if its key is above the
/// session's (`plan.rs`, `record`: `session.last < key`); a redaction,
/// which has no key, always applies.
fn verdict(
    event: &Incoming,
    seen: &HashSet<String>,
    applied: &HashMap<String, OrderKey>,
) -> Verdict {
    if seen.contains(&event.event_id) {
        return Verdict::Duplicate;
    }
    match event.order_key() {
        Some(key) if applied.get(&event.session_id) >= Some(&key) => Verdict::Stale,
        _ => Verdict::Apply,
    }
}

fn verdict_table(units: &[Unit], verdicts: &[Verdict]) -> String {
    const HEADER: [&str; 4] = ["EVENT_ID", "TYPE", "DEAD_LETTERS", "WORKER_WOULD"];
    let cells: Vec<[String; 4]> = units
        .iter()
        .zip(verdicts)
        .map(|(unit, verdict)| {
            let ids: Vec<String> = unit.ids.iter().map(i64::to_string).collect();
            [
                crate::ctl::text::one_line(unit.event_id.as_deref()),
                crate::ctl::text::one_line(unit.event_type.as_deref()),
                ids.join(","),
                verdict.text(),
            ]
        })
        .collect();
    table(HEADER, &cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, created: i64) -> Incoming {
        let body = format!(
            r#"{{"id":"{id}","object":"event","type":"identity.verification_session.processing",
            "created":{created},"livemode":false,
            "data":{{"object":{{"id":"vs_1","object":"identity.verification_session",
            "status":"processing"}}}}}}"#
        );
        let settings = Settings::from_env(&Env::default()).unwrap_or_else(|e| panic!("{e}"));
        incoming::parse(body.as_bytes(), 0, &settings).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn duplicate_before_stale_before_apply() {
        let newer = event("evt_2", 200);
        let older = event("evt_1", 100);
        let mut applied = HashMap::new();
        let mut seen = HashSet::new();
        assert_eq!(verdict(&older, &seen, &applied), Verdict::Apply);
        applied.insert(
            "vs_1".to_owned(),
            newer.order_key().unwrap_or_else(|| panic!()),
        );
        assert_eq!(verdict(&older, &seen, &applied), Verdict::Stale);
        // Its own key applied: the inbox has it too, and that comes first.
        assert_eq!(verdict(&newer, &seen, &applied), Verdict::Stale);
        seen.insert("evt_2".to_owned());
        assert_eq!(verdict(&newer, &seen, &applied), Verdict::Duplicate);
    }
}
