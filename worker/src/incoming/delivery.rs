//! A delivery as the consumer reads it: the body with the properties that
//! ingest and `idvctl` set. One function, so that the consumer and the fuzz
//! target (`fuzz/fuzz_targets/worker_delivery.rs`) run the same code.

use lapin::BasicProperties;

use super::{Incoming, MessageFailure, Origin, parse};
use crate::settings::Settings;

/// Parses a delivery: its `body`, the receive time from ingest's
/// `x-received-at-ms` header (`now_ms()` when the header is missing or not
/// an integer) and whether `idvctl events replay` sent it from the inbox.
pub fn parse_delivery(
    body: &[u8],
    properties: &BasicProperties,
    settings: &Settings,
    now_ms: impl FnOnce() -> i64,
) -> Result<Incoming, MessageFailure> {
    let received = shared::envelope::received_at_ms(properties).unwrap_or_else(now_ms);
    let origin = Origin::of(properties);
    parse(body, received, settings).map(|event| event.with_origin(origin))
}

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, FieldTable, LongString};
    use shared::config::Env;
    use shared::envelope::{RECEIVED_AT_MS, REPLAY};

    use super::*;

    const VERIFIED: &[u8] = include_bytes!("../../../shared/fixtures/evt_verified.json");

    #[test]
    fn the_headers_give_the_receive_time_and_origin_else_the_clock() {
        let settings = Settings::from_env(&Env::default()).unwrap();
        let bare = parse_delivery(VERIFIED, &BasicProperties::default(), &settings, || 7).unwrap();
        assert_eq!((bare.received_at_ms, bare.origin), (7, Origin::Delivered));

        let mut headers = FieldTable::default();
        headers.insert(RECEIVED_AT_MS.into(), AMQPValue::LongLongInt(1_000));
        headers.insert(
            REPLAY.into(),
            AMQPValue::LongString(LongString::from("inbox")),
        );
        let properties = BasicProperties::default().with_headers(headers);
        let replayed = parse_delivery(VERIFIED, &properties, &settings, || 7).unwrap();
        assert_eq!(
            (replayed.received_at_ms, replayed.origin),
            (1_000, Origin::InboxReplay)
        );
    }
}
