//! How a delivery reached the worker: from Stripe (through ingest, a
//! dead-letter replay or a resync, all applied the same way), or as the
//! inbox's own copy of an event sent again by `idvctl events replay`.

use lapin::BasicProperties;
use lapin::types::AMQPValue;
use shared::envelope::{REPLAY, REPLAY_FROM_INBOX};

/// Where an event comes from, as far as the rules care.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Origin {
    /// A delivery like any other: an event the inbox has seen is a
    /// duplicate and changes nothing.
    #[default]
    Delivered,
    /// `x-idv-replay: inbox`: an operator asks the rules to derive the
    /// event's actions again (after fixing an action or configuring a
    /// sink). A seen event still changes no state (the record is a
    /// function of the set of events), but its outbox rows are derived
    /// again with the sinks configured now. A header anyone with access to
    /// the broker could set, which is harmless: it can only add the rows
    /// the rules call for (limit rows only where the stored record is at
    /// manual review), never change the record or take an action back.
    InboxReplay,
}

impl Origin {
    /// Reads the [`REPLAY`] header of a delivery: only [`REPLAY_FROM_INBOX`]
    /// makes it an [`Origin::InboxReplay`] (a dead-letter replay or a
    /// resync is applied as any delivery is).
    pub fn of(properties: &BasicProperties) -> Self {
        let headers = properties.headers().as_ref();
        let from_inbox = match headers.and_then(|headers| headers.inner().get(REPLAY)) {
            Some(AMQPValue::LongString(text)) => text.as_bytes() == REPLAY_FROM_INBOX.as_bytes(),
            Some(AMQPValue::ShortString(text)) => text.as_str() == REPLAY_FROM_INBOX,
            _ => false,
        };
        if from_inbox {
            Self::InboxReplay
        } else {
            Self::Delivered
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldTable, LongString};

    fn with_replay(value: &str) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            REPLAY.into(),
            AMQPValue::LongString(LongString::from(value)),
        );
        BasicProperties::default().with_headers(headers)
    }

    #[test]
    fn only_the_inbox_value_is_an_inbox_replay() {
        assert_eq!(Origin::of(&with_replay("inbox")), Origin::InboxReplay);
        for other in ["dead-letter:7", "resync", "INBOX", ""] {
            assert_eq!(
                Origin::of(&with_replay(other)),
                Origin::Delivered,
                "{other:?}"
            );
        }
        assert_eq!(Origin::of(&BasicProperties::default()), Origin::Delivered);
    }
}
