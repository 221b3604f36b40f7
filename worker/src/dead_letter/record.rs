//! A DLQ message read into a `dead_letters` row. Every header is read
//! defensively (any type, any value, or none), because the DLQ holds two
//! kinds of message:
//!
//! - dead-lettered by the worker after its retries: the `x-idv-*` headers
//!   say why (kind, reason, attempts, first and last failure). After a
//!   retry cycle its routing key is the work queue's name (the retry
//!   queues dead-letter back to `idv.events` through the default
//!   exchange), and its `x-death` holds only the retry queues' expiries,
//!   whose routing keys are those queues' names;
//! - dead-lettered by the broker from the work queue (`x-delivery-limit`,
//!   a TTL, a reject without requeue): no `x-idv-*` headers; its `x-death`
//!   entry for the work queue says why. On RabbitMQ 3.10.8 a
//!   `delivery_limit` dead letter carries `x-death: [{count: 1, exchange:
//!   stripe.events, queue: idv.events, reason: delivery_limit,
//!   routing-keys: [<type>], time: <unix seconds>}]`, the matching
//!   `x-first-death-{exchange,queue,reason}`, its original headers and
//!   routing key, and `x-delivery-count` (the DLQ's own count).
//!
//! Nothing from the body is kept as text unless it is a valid event id,
//! session id, created time or a sane event type: a body that is not an
//! event is only the payload's bytes.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use shared::envelope::{
    ATTEMPTS, FAILURE_KIND, FAILURE_REASON, FIRST_FAILURE_AT_MS, LAST_FAILURE_AT_MS, header_int,
};
use shared::topology::DELIVERY_LIMIT;
use shared::{EventId, SessionId};

use super::fingerprint::fingerprint;

/// The kinds of failure the worker writes in `x-idv-failure-kind` (see
/// `MessageFailure::kind`); any other value is stored as `unknown`.
pub const WORKER_KINDS: [&str; 4] = ["unparseable", "unknown_type", "status_mismatch", "refused"];

/// Longest reason kept (characters); the worker's are far shorter.
const MAX_REASON: usize = 500;
/// Longest routing key (AMQP's short string).
const MAX_ROUTING_KEY: usize = 255;
/// Latest time stored (9999-12-31), so that no header can make the row
/// unstorable (PostgreSQL's `timestamptz` ends in 294276).
const MAX_MS: i64 = 253_402_300_799_999;

/// Why a dead letter was dead-lettered, as stored in `dead_letters.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The worker's, after its retries: one of [`WORKER_KINDS`].
    Worker(&'static str),
    /// The broker's: returned more often than `x-delivery-limit` allows.
    DeliveryLimit,
    /// The broker's: its TTL ran out in the work queue.
    Expired,
    /// The broker's: a consumer rejected it without requeueing.
    Rejected,
    /// Neither says why, or says it in a way we do not know.
    Unknown,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Worker(kind) => kind,
            Self::DeliveryLimit => "delivery_limit",
            Self::Expired => "expired",
            Self::Rejected => "rejected",
            Self::Unknown => "unknown",
        }
    }
}

/// A `dead_letters` row before it is inserted.
#[derive(Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// See [`fingerprint`]: the same DLQ message always has the same one.
    pub fingerprint: [u8; 32],
    /// From the body, only when valid.
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub session_id: Option<String>,
    pub event_created: Option<i64>,
    /// The key the event was first published with (see [`routing_key`]).
    pub routing_key: String,
    /// The worker's reason (never payload text), or a sentence of ours.
    pub reason: String,
    pub kind: Kind,
    /// The worker's failures, or the broker's deliveries.
    pub attempts: i32,
    pub first_failure_at_ms: i64,
    pub last_failure_at_ms: i64,
    /// The exact bytes.
    pub payload: Vec<u8>,
}

/// Never the payload: it may hold a person's data.
impl std::fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetter")
            .field("event_id", &self.event_id)
            .field("event_type", &self.event_type)
            .field("session_id", &self.session_id)
            .field("routing_key", &self.routing_key)
            .field("kind", &self.kind)
            .field("attempts", &self.attempts)
            .field("payload_bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// One entry of the broker's `x-death` header.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Death {
    queue: String,
    reason: String,
    exchange: String,
    routing_keys: Vec<String>,
    count: Option<i64>,
    /// Unix milliseconds (the header has seconds).
    at_ms: Option<i64>,
}

/// What the drain knows besides the message.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The work queue's name (`idv.events` with its prefix): a death there
    /// is the broker dead-lettering the message into the DLQ.
    pub work_queue: &'a str,
    /// When the drain took the message: the fallback for times.
    pub now_ms: i64,
}

/// Reads a DLQ message (`body`, the `routing_key` it was delivered with,
/// its `properties`) into a row.
pub fn read(
    body: &[u8],
    routing_key: &str,
    properties: &BasicProperties,
    context: Context<'_>,
) -> DeadLetter {
    let headers = properties.headers().as_ref();
    let deaths = deaths(headers);
    let from_work_queue = deaths.iter().find(|d| d.queue == context.work_queue);
    let worker_kind = text_header(headers, FAILURE_KIND).map(|kind| {
        WORKER_KINDS
            .into_iter()
            .find(|known| *known == kind)
            .map_or(Kind::Unknown, Kind::Worker)
    });
    let positive = |ms: i64| (ms > 0).then_some(ms);
    let first_header = header_int(headers, FIRST_FAILURE_AT_MS).and_then(positive);
    let earliest_death = deaths.iter().filter_map(|d| d.at_ms).min();

    // The broker's dead-lettering from the work queue is why it is here,
    // even if the worker had failed it before (its x-idv-* headers stay).
    let (kind, reason, attempts, last_ms) = match (from_work_queue, worker_kind) {
        (Some(death), _) => broker(death),
        (None, Some(kind)) => (
            kind,
            text_header(headers, FAILURE_REASON)
                .map(|reason| clean(&reason, MAX_REASON))
                .filter(|reason| !reason.is_empty())
                .unwrap_or_else(|| "the worker dead-lettered it without a reason".to_owned()),
            header_int(headers, ATTEMPTS).unwrap_or(1),
            header_int(headers, LAST_FAILURE_AT_MS).and_then(positive),
        ),
        (None, None) => match deaths.first() {
            Some(death) => broker(death),
            None => (
                Kind::Unknown,
                "dead-lettered without x-idv-failure-* or x-death headers".to_owned(),
                1,
                None,
            ),
        },
    };
    let first_ms = first_header
        .or(earliest_death)
        .or(last_ms)
        .unwrap_or(context.now_ms)
        .clamp(0, MAX_MS);
    let last_ms = last_ms.unwrap_or(context.now_ms).clamp(first_ms, MAX_MS);
    let event = BodyFields::read(body);
    DeadLetter {
        fingerprint: fingerprint(body, headers),
        event_id: event.id,
        event_type: event.event_type,
        session_id: event.session_id,
        event_created: event.created,
        routing_key: self::routing_key(&deaths, properties, routing_key),
        reason,
        kind,
        attempts: i32::try_from(attempts.max(0)).unwrap_or(i32::MAX),
        first_failure_at_ms: first_ms,
        last_failure_at_ms: last_ms,
        payload: body.to_vec(),
    }
}

/// Kind, reason, attempts and time of the broker's dead-lettering `death`.
fn broker(death: &Death) -> (Kind, String, i64, Option<i64>) {
    let queue = clean(&death.queue, MAX_ROUTING_KEY);
    let count = death.count.unwrap_or(1);
    let (kind, reason, attempts) = match death.reason.as_str() {
        "delivery_limit" => (
            Kind::DeliveryLimit,
            format!(
                "the broker dead-lettered it from {queue}: delivered more than its \
                 x-delivery-limit ({DELIVERY_LIMIT}) times without an ack (a worker \
                 crashed or lost its link while holding it)"
            ),
            // Deliveries: the first, then one per return the limit allows.
            DELIVERY_LIMIT + 1,
        ),
        "expired" => (
            Kind::Expired,
            format!("the broker dead-lettered it from {queue}: its TTL ran out"),
            count,
        ),
        "rejected" => (
            Kind::Rejected,
            format!("the broker dead-lettered it from {queue}: a consumer rejected it"),
            count,
        ),
        other => (
            Kind::Unknown,
            format!(
                "the broker dead-lettered it from {queue} (reason {:?})",
                clean(other, 40)
            ),
            count,
        ),
    };
    (kind, reason, attempts, death.at_ms)
}

/// The key the event was first published with: the routing key of a
/// death through a named exchange (the broker keeps the original key; the
/// retry queues are reached through the default exchange, whose keys are
/// queue names), else the `type` property (ingest and `idvctl` set it to
/// the key they publish with), else the key it was delivered with.
fn routing_key(deaths: &[Death], properties: &BasicProperties, delivered: &str) -> String {
    let published = deaths
        .iter()
        .filter(|d| !d.exchange.is_empty())
        .min_by_key(|d| d.at_ms.unwrap_or(i64::MAX))
        .and_then(|d| d.routing_keys.first().cloned());
    let typed = properties
        .kind()
        .as_ref()
        .map(|t| t.as_str().to_owned())
        .filter(|t| sane_type(t));
    let key = published.or(typed).unwrap_or_else(|| delivered.to_owned());
    clean(&key, MAX_ROUTING_KEY)
}

/// The fields of the body kept as text, each only when valid.
#[derive(Debug, Default, PartialEq, Eq)]
struct BodyFields {
    id: Option<String>,
    event_type: Option<String>,
    session_id: Option<String>,
    created: Option<i64>,
}

impl BodyFields {
    fn read(body: &[u8]) -> Self {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Self::default();
        };
        let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        Self {
            id: text(&value["id"])
                .and_then(|id| EventId::parse(&id).ok())
                .map(|id| id.as_str().to_owned()),
            event_type: text(&value["type"]).filter(|t| sane_type(t)),
            session_id: text(&value["data"]["object"]["id"])
                .and_then(|id| SessionId::parse(&id).ok())
                .map(|id| id.as_str().to_owned()),
            created: value["created"].as_i64(),
        }
    }
}

/// 1 to 255 characters of `a-z`, `0-9`, `.` and `_` (ingest's rule).
fn sane_type(candidate: &str) -> bool {
    !candidate.is_empty()
        && candidate.len() <= 255
        && candidate
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
}

/// `text` without control characters (PostgreSQL refuses NUL in text),
/// at most `max` characters.
fn clean(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// A header's text (a long or short string), lossily decoded.
fn text_header(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    headers?.inner().get(name).and_then(as_text)
}

fn as_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn as_int(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

/// The `x-death` entries, each field read if it has the expected shape.
fn deaths(headers: Option<&FieldTable>) -> Vec<Death> {
    let Some(AMQPValue::FieldArray(entries)) = headers.and_then(|h| h.inner().get("x-death"))
    else {
        return Vec::new();
    };
    entries
        .as_slice()
        .iter()
        .filter_map(|entry| match entry {
            AMQPValue::FieldTable(entry) => Some(entry),
            _ => None,
        })
        .map(|entry| {
            let field = |name: &str| entry.inner().get(name);
            Death {
                queue: field("queue").and_then(as_text).unwrap_or_default(),
                reason: field("reason").and_then(as_text).unwrap_or_default(),
                exchange: field("exchange").and_then(as_text).unwrap_or_default(),
                routing_keys: match field("routing-keys") {
                    Some(AMQPValue::FieldArray(keys)) => {
                        keys.as_slice().iter().filter_map(as_text).collect()
                    }
                    _ => Vec::new(),
                },
                count: field("count").and_then(as_int),
                // Unix seconds (a timestamp, or any integer).
                at_ms: field("time")
                    .and_then(as_int)
                    .and_then(|s| s.checked_mul(1000)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
