//! What a replay publishes once: an event, with every selected dead letter
//! of it. The same event may have been dead-lettered several times (Stripe
//! delivered it again, an earlier replay failed again); its copies carry
//! the same bytes, so it is published once, from its newest row, and all
//! of them are marked with that one publish.

use std::collections::HashMap;
use std::fmt;

use crate::store::dead_letters_admin::Candidate;

/// One event to replay (or a row with no event id, alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// `None` for a body that could not be read as an event.
    pub event_id: Option<String>,
    /// The newest row's type, for what is printed.
    pub event_type: Option<String>,
    /// Its dead letters, oldest first.
    pub ids: Vec<i64>,
    /// Why it cannot be replayed, as far as the selection showed.
    pub skip: Option<Skip>,
}

/// Why a dead letter is not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skip {
    /// Its session was redacted: the bytes are gone, nothing can be sent.
    Redacted,
    /// No event type could be read: no routing key to publish it with.
    NoEventType,
    /// Another replay holds it, or replayed it since the selection.
    Taken,
}

impl Skip {
    /// A short label for JSON and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redacted => "no payload: redacted",
            Self::NoEventType => "no event type: cannot be routed",
            Self::Taken => "taken by another replay",
        }
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Unit {
    /// The candidates (oldest first) grouped by event id, in the order of
    /// each event's oldest dead letter.
    pub fn group(candidates: Vec<Candidate>) -> Vec<Self> {
        let mut units: Vec<(Self, Vec<Candidate>)> = Vec::new();
        let mut by_event: HashMap<String, usize> = HashMap::new();
        for candidate in candidates {
            let index = match &candidate.event_id {
                Some(event_id) => *by_event.entry(event_id.clone()).or_insert_with(|| {
                    units.push((Self::new(Some(event_id.clone())), Vec::new()));
                    units.len() - 1
                }),
                None => {
                    units.push((Self::new(None), Vec::new()));
                    units.len() - 1
                }
            };
            if let Some((_, rows)) = units.get_mut(index) {
                rows.push(candidate);
            }
        }
        units
            .into_iter()
            .map(|(mut unit, rows)| {
                unit.ids = rows.iter().map(|row| row.id).collect();
                unit.event_type = rows.iter().rev().find_map(|row| row.event_type.clone());
                unit.skip = if !rows.iter().any(|row| row.has_payload) {
                    Some(Skip::Redacted)
                } else if !rows
                    .iter()
                    .any(|row| row.has_payload && row.event_type.is_some())
                {
                    Some(Skip::NoEventType)
                } else {
                    None
                };
                unit
            })
            .collect()
    }

    fn new(event_id: Option<String>) -> Self {
        Self {
            event_id,
            event_type: None,
            ids: Vec::new(),
            skip: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, event_id: Option<&str>, event_type: Option<&str>, payload: bool) -> Candidate {
        Candidate {
            id,
            event_id: event_id.map(str::to_owned),
            event_type: event_type.map(str::to_owned),
            has_payload: payload,
        }
    }

    #[test]
    fn one_unit_per_event_rows_without_an_id_alone_in_first_seen_order() {
        let units = Unit::group(vec![
            row(1, Some("evt_a"), Some("t.a"), true),
            row(2, None, None, true),
            row(3, Some("evt_b"), Some("t.b"), false),
            row(4, Some("evt_a"), Some("t.a2"), true),
            row(5, None, None, true),
        ]);
        let unit = |event_id: Option<&str>, ids: Vec<i64>, event_type: Option<&str>, skip| Unit {
            event_id: event_id.map(str::to_owned),
            event_type: event_type.map(str::to_owned),
            ids,
            skip,
        };
        assert_eq!(
            units,
            vec![
                unit(Some("evt_a"), vec![1, 4], Some("t.a2"), None),
                unit(None, vec![2], None, Some(Skip::NoEventType)),
                unit(Some("evt_b"), vec![3], Some("t.b"), Some(Skip::Redacted)),
                unit(None, vec![5], None, Some(Skip::NoEventType)),
            ]
        );
    }
}
