//! What `dlq replay` and `dlq purge` print as they go: one line per event
//! (text, or a JSON object per line with `--json`), then a summary.
//!
//! `--json` lines are a contract for scripts. Each event line has
//! `event_id` (string or null), `event_type` (string or null),
//! `dead_letters` (the row ids it covers), `result` (`replayed`, `skipped`,
//! `failed`; with `--dry-run`: `apply`, `stale`, `duplicate`,
//! `fail_again`, `skipped`) and `detail` (why it was skipped, the error,
//! or the failure kind; null otherwise). The last line is
//! `{"summary": {…}}` with a count per result.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use serde::Serialize;

use super::unit::{Skip, Unit};
use crate::ctl::text::one_line;

/// A line on stdout, now: a long replay shows what it did as it goes, and
/// an interrupted one has printed all it did. A reader that went away
/// (`| head`) is no reason to stop the work in hand.
pub fn print_line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
}

/// One event's line of `--json` output.
#[derive(Debug, Serialize)]
pub struct EventLine<'a> {
    pub event_id: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub dead_letters: &'a [i64],
    pub result: &'a str,
    pub detail: Option<&'a str>,
}

impl<'a> EventLine<'a> {
    pub fn new(unit: &'a Unit, result: &'a str, detail: Option<&'a str>) -> Self {
        Self {
            event_id: unit.event_id.as_deref(),
            event_type: unit.event_type.as_deref(),
            dead_letters: &unit.ids,
            result,
            detail,
        }
    }

    /// The line as JSON, or as text: `skipped evt_1 (identity…verified;
    /// dead letters 3, 7): no payload: redacted`.
    pub fn render(&self, json: bool) -> String {
        if json {
            return serde_json::to_string(self).unwrap_or_default();
        }
        let ids: Vec<String> = self.dead_letters.iter().map(i64::to_string).collect();
        let mut text = format!(
            "{} {} ({}; dead letter{} {})",
            self.result,
            one_line(self.event_id),
            one_line(self.event_type),
            if ids.len() == 1 { "" } else { "s" },
            ids.join(", ")
        );
        if let Some(detail) = self.detail {
            let _ = write!(text, ": {}", one_line(Some(detail)));
        }
        text
    }
}

/// Why a replay ended before its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The broker connection or channel failed: every publish would.
    BrokerLost,
    /// The database connection closed: no row could be locked or marked.
    DatabaseLost,
}

impl Stop {
    /// For the summary (text) and its `stopped` field (JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interrupted => "interrupted",
            Self::BrokerLost => "the broker connection was lost",
            Self::DatabaseLost => "the database connection was lost",
        }
    }
}

/// What a replay did, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Events published, confirmed and marked.
    pub replayed: usize,
    pub skipped: BTreeMap<Skip, usize>,
    /// Events not published, or published but not marked.
    pub failed: usize,
    /// Events left when the run stopped early.
    pub not_attempted: usize,
    /// Why it stopped early, if it did.
    pub stopped: Option<Stop>,
}

impl Tally {
    /// The run ends early for `why`, with `left` events not attempted.
    pub fn stop(&mut self, why: Stop, left: usize) {
        self.stopped = Some(why);
        self.not_attempted = left;
    }

    pub fn skip(&mut self, why: Skip) {
        *self.skipped.entry(why).or_default() += 1;
    }

    fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }

    /// `replayed 12, skipped 1 (no payload: redacted), failed 0`, and what
    /// an interruption left.
    pub fn text(&self) -> String {
        let mut text = format!(
            "replayed {}, skipped {}{}, failed {}",
            self.replayed,
            self.skipped_total(),
            reasons(&self.skipped),
            self.failed
        );
        if let Some(stop) = self.stopped {
            let _ = write!(
                text,
                "; {}: {} not attempted (run the command again for them)",
                stop.as_str(),
                self.not_attempted
            );
        }
        text
    }

    /// `{"summary": {"replayed": …, "skipped": …, "skipped_reasons": {…},
    /// "failed": …, "not_attempted": …, "stopped": null | "…"}}`.
    pub fn json(&self) -> String {
        let reasons: BTreeMap<&str, usize> = self
            .skipped
            .iter()
            .map(|(why, n)| (why.as_str(), *n))
            .collect();
        serde_json::json!({
            "summary": {
                "replayed": self.replayed,
                "skipped": self.skipped_total(),
                "skipped_reasons": reasons,
                "failed": self.failed,
                "not_attempted": self.not_attempted,
                "stopped": self.stopped.map(Stop::as_str),
            }
        })
        .to_string()
    }
}

/// ` (no payload: redacted)` for one reason, ` (2 no payload: redacted,
/// 1 no event type: cannot be routed)` for several, nothing for none.
pub fn reasons(skipped: &BTreeMap<Skip, usize>) -> String {
    match skipped.len() {
        0 => String::new(),
        1 => skipped
            .keys()
            .map(|why| format!(" ({why})"))
            .collect::<String>(),
        _ => {
            let parts: Vec<String> = skipped
                .iter()
                .map(|(why, n)| format!("{n} {why}"))
                .collect();
            format!(" ({})", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_why_events_were_skipped() {
        let mut tally = Tally {
            replayed: 12,
            ..Tally::default()
        };
        tally.skip(Skip::Redacted);
        assert_eq!(
            tally.text(),
            "replayed 12, skipped 1 (no payload: redacted), failed 0"
        );
        tally.skip(Skip::NoEventType);
        tally.skip(Skip::Redacted);
        tally.stop(Stop::Interrupted, 4);
        assert_eq!(
            tally.text(),
            "replayed 12, skipped 3 (2 no payload: redacted, 1 no event type: cannot be routed), \
             failed 0; interrupted: 4 not attempted (run the command again for them)"
        );
    }
}
