//! What reached the broker: every message of `idv.events` and of the
//! unrouted queue, read back and sorted into good events (by id, with how
//! many copies) and anything else (by the family its id names).

use std::collections::{BTreeMap, HashMap};

use super::family::Family;
use crate::broker::TestBroker;

/// The messages found, sorted.
#[derive(Debug, Default)]
pub struct Published {
    /// Copies of each message whose id is not a hostile one.
    pub by_id: HashMap<String, usize>,
    /// Messages of the hostile corpus, by family.
    pub hostile: BTreeMap<Family, usize>,
    /// Messages with no id that could be read (a body that is not JSON).
    pub unreadable: usize,
}

/// Takes every message from the events queue and the unrouted queue. Every
/// `200` was confirmed by the broker before it was answered, so once the
/// senders are done everything published is already there. Taken until
/// `basic.get` finds the queue empty: a quorum queue's message count, read
/// with a passive declare, is 0 whenever the leader is slow to answer.
pub async fn drain(broker: &TestBroker) -> Published {
    let mut published = Published::default();
    for queue in [
        broker.topology.events_queue(),
        broker.topology.unrouted_queue(),
    ] {
        while let Some(message) = broker.try_get(&queue).await {
            let id = message
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.to_string())
                .or_else(|| {
                    serde_json::from_slice::<serde_json::Value>(&message.body)
                        .ok()
                        .and_then(|value| value["id"].as_str().map(str::to_owned))
                });
            match id {
                None => published.unreadable += 1,
                Some(id) => match family_of(&id) {
                    Some(family) => *published.hostile.entry(family).or_default() += 1,
                    None => *published.by_id.entry(id).or_default() += 1,
                },
            }
        }
    }
    published
}

/// The family whose ids look like `id`, if any.
fn family_of(id: &str) -> Option<Family> {
    let rest = id.strip_prefix("evt_hostile_")?;
    Family::ALL.into_iter().find(|family| {
        rest.strip_prefix(family.code())
            .and_then(|n| n.strip_prefix('_'))
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_family() {
        for family in Family::ALL {
            assert_eq!(family_of(&family.event_id(7)), Some(family));
        }
        assert_eq!(family_of("evt_bench0000000000000001"), None);
    }
}
