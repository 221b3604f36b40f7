//! The message envelope: what travels with an event's raw bytes through
//! RabbitMQ. Header names are written once here, for ingest (which
//! publishes), the worker (which reads them and adds its failure and
//! deferral headers), the tests and the benchmarks. The body is never
//! changed and never copied into a header.

/// The caller's `X-Request-Id` (or a new UUID), set by ingest.
pub const REQUEST_ID: &str = "x-request-id";
/// When ingest received the request, unix milliseconds.
pub const RECEIVED_AT_MS: &str = "x-received-at-ms";
/// Failures of this message so far, set by the worker when it forwards a
/// failed message to a retry queue or the DLQ.
pub const ATTEMPTS: &str = "x-idv-attempts";
/// Unix milliseconds of the first failure.
pub const FIRST_FAILURE_AT_MS: &str = "x-idv-first-failure-at-ms";
/// Unix milliseconds of the latest failure (the one that sent it on).
pub const LAST_FAILURE_AT_MS: &str = "x-idv-last-failure-at-ms";
/// Why the last attempt failed: a class and a position, never payload text.
pub const FAILURE_REASON: &str = "x-idv-failure-reason";
/// The failure's kind (`unparseable`, `unknown_type`, …).
pub const FAILURE_KIND: &str = "x-idv-failure-kind";
/// Times the worker deferred this message behind a held-up person's others.
pub const DEFERRALS: &str = "x-idv-deferrals";

/// Set by `idvctl` on what it publishes again: `dead-letter:<id>` (a dead
/// letter replayed), `resync` (an event fetched from Stripe's Events API)
/// or [`REPLAY_FROM_INBOX`].
pub const REPLAY: &str = "x-idv-replay";
/// The [`REPLAY`] value of an event `idvctl events replay` took from the
/// inbox: the worker applies its rules to it again although the inbox has
/// seen it (a seen event changes no state; it may call for actions that
/// were not configured, or were wrongly derived, the first time).
pub const REPLAY_FROM_INBOX: &str = "inbox";

/// AMQP delivery mode 2: the broker writes the message to disk.
pub const PERSISTENT: u8 = 2;
/// Every event body is Stripe's JSON, unchanged.
pub const CONTENT_TYPE: &str = "application/json";

#[cfg(feature = "amqp")]
pub use with_amqp::{Envelope, header_int, received_at_ms};

#[cfg(feature = "amqp")]
mod with_amqp {
    use lapin::BasicProperties;
    use lapin::types::{AMQPValue, FieldTable, LongString};

    /// What is said about an event when it is published: the properties of
    /// its message. Ingest knows all of it; a test or a benchmark may know
    /// only the type.
    #[derive(Debug, Clone, Copy)]
    pub struct Envelope<'a> {
        /// Routing key and `type` property.
        pub event_type: &'a str,
        /// `message_id`: Stripe's event id.
        pub event_id: Option<&'a str>,
        /// `timestamp`: Stripe's `created`, unix seconds.
        pub created: Option<i64>,
        /// The [`super::REQUEST_ID`] header.
        pub request_id: Option<&'a str>,
        /// The [`super::RECEIVED_AT_MS`] header.
        pub received_at_ms: i64,
    }

    impl Envelope<'_> {
        /// Persistent, JSON, with the event's type and the headers above.
        pub fn properties(&self) -> BasicProperties {
            let mut headers = FieldTable::default();
            if let Some(request_id) = self.request_id {
                headers.insert(
                    super::REQUEST_ID.into(),
                    AMQPValue::LongString(LongString::from(request_id)),
                );
            }
            headers.insert(
                super::RECEIVED_AT_MS.into(),
                AMQPValue::LongLongInt(self.received_at_ms),
            );
            let mut properties = BasicProperties::default()
                .with_delivery_mode(super::PERSISTENT)
                .with_content_type(super::CONTENT_TYPE.into())
                .with_type(self.event_type.into())
                .with_headers(headers);
            if let Some(event_id) = self.event_id {
                properties = properties.with_message_id(event_id.into());
            }
            if let Some(created) = self.created {
                properties = properties.with_timestamp(u64::try_from(created).unwrap_or(0));
            }
            properties
        }
    }

    /// The integer header `name` of a message, whatever integer width the
    /// publisher chose.
    pub fn header_int(headers: Option<&FieldTable>, name: &str) -> Option<i64> {
        match headers?.inner().get(name)? {
            AMQPValue::LongLongInt(n) => Some(*n),
            AMQPValue::LongInt(n) => Some(i64::from(*n)),
            AMQPValue::ShortInt(n) => Some(i64::from(*n)),
            AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
            AMQPValue::LongUInt(n) => Some(i64::from(*n)),
            AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
            AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
            _ => None,
        }
    }

    /// When ingest received the event (the [`super::RECEIVED_AT_MS`] header).
    pub fn received_at_ms(properties: &BasicProperties) -> Option<i64> {
        header_int(properties.headers().as_ref(), super::RECEIVED_AT_MS)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn ingest_properties_carry_every_field_and_read_back() {
            let envelope = Envelope {
                event_type: "identity.verification_session.verified",
                event_id: Some("evt_1"),
                created: Some(1_700_000_000),
                request_id: Some("req_1"),
                received_at_ms: 1_700_000_000_123,
            };
            let properties = envelope.properties();
            assert_eq!(properties.delivery_mode(), &Some(super::super::PERSISTENT));
            assert_eq!(
                properties.kind().as_ref().map(|t| t.as_str()),
                Some("identity.verification_session.verified")
            );
            assert_eq!(
                properties.message_id().as_ref().map(|t| t.as_str()),
                Some("evt_1")
            );
            assert_eq!(properties.timestamp(), &Some(1_700_000_000));
            assert_eq!(received_at_ms(&properties), Some(1_700_000_000_123));
        }

        #[test]
        fn a_test_envelope_sets_only_what_it_knows() {
            let properties = Envelope {
                event_type: "x",
                event_id: None,
                created: None,
                request_id: None,
                received_at_ms: 5,
            }
            .properties();
            assert_eq!(properties.message_id(), &None);
            assert_eq!(properties.timestamp(), &None);
            assert_eq!(received_at_ms(&properties), Some(5));
            let headers = properties.headers().clone().unwrap_or_default();
            assert!(!headers.inner().contains_key(super::super::REQUEST_ID));
        }
    }
}
