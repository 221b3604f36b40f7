//! `POST /webhook`: verify, check, publish, wait for the broker's confirm,
//! answer. No processing happens before the answer.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::http::header::{CONTENT_LENGTH, ContentType, HeaderMap, HeaderName};
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use futures_util::{Stream, StreamExt};
use shared::{EventEnvelope, EventId};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::WebhookError;
use crate::metrics::{InFlight, ReasonLabel};
use crate::publisher::OutgoingEvent;
use crate::startup::AppState;

/// The answer to an event the broker has confirmed.
const RECEIVED: &str = r#"{"received":true}"#;

/// Header names built once: looked up by `&str`, a name is parsed (and,
/// not being a standard header, allocated) on every request.
static STRIPE_SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest `X-Request-Id` taken from a caller; anything else gets a new one.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Most reserved for a body before any of it arrives, whatever its
/// `Content-Length` says: the header is not yet authenticated. Larger
/// bodies grow the buffer as their bytes come.
const MAX_PREALLOCATED_BODY: usize = 32 * 1024;

pub async fn webhook(
    request: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let metrics = &state.metrics;
    let in_flight = InFlight::enter(&metrics.in_flight);
    let request_id = request_id(request.headers());
    // The request's lines carry its ids as fields, not through a span:
    // nothing inside `receive` logs, and a span costs every request (the
    // log layer formats its fields when it opens and again on each record,
    // and it is entered on every poll) about as much CPU as the envelope
    // parse, for lines that only refused and failed requests write.
    let mut event_id = None;
    let result = receive(&request, &mut payload, &state, &request_id, &mut event_id).await;
    drop(in_flight);
    let event_id = event_id.as_ref().map(EventId::as_str);
    match &result {
        Ok(_) => {
            metrics.count_outcome("accepted");
            tracing::debug!(request_id, event_id, "event accepted");
        }
        Err(error) => {
            metrics.count_outcome(error.outcome());
            if let WebhookError::Signature(reason) = error {
                let reason = reason.reason();
                metrics
                    .signature_failures
                    .get_or_create(&ReasonLabel { reason })
                    .inc();
            }
            match error {
                WebhookError::Unavailable(cause) => {
                    tracing::warn!(request_id, event_id, error = %cause, cause = ?std::error::Error::source(cause), "event not stored; answered 503");
                }
                // Only labels: the error text of a bad body quotes the body.
                other => tracing::info!(
                    request_id,
                    event_id,
                    outcome = other.outcome(),
                    "request refused"
                ),
            }
        }
    }
    match result {
        Ok(response) => response,
        Err(error) => {
            let response = error.error_response();
            if response.head().keep_alive() {
                response
            } else {
                holding(response, payload)
            }
        }
    }
}

/// `response` with the request's `payload` kept alive until its body is
/// written. actix-http drains a chunked body whose payload was dropped for
/// as long as chunks come, with no timer, whatever the response says; a
/// payload still unread when the answer is written makes it close the
/// connection instead (after the client disconnect timeout).
fn holding(response: HttpResponse, payload: web::Payload) -> HttpResponse {
    response
        .map_body(|_, body| HoldingPayload {
            body,
            _payload: payload,
        })
        .map_into_boxed_body()
}

/// A response body that owns the request's payload until it is dropped.
struct HoldingPayload {
    body: BoxBody,
    _payload: web::Payload,
}

impl MessageBody for HoldingPayload {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

async fn receive(
    request: &HttpRequest,
    payload: &mut web::Payload,
    state: &AppState,
    request_id: &str,
    event_id: &mut Option<EventId>,
) -> Result<HttpResponse, WebhookError> {
    let received_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let signature = match request.headers().get(&STRIPE_SIGNATURE) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| shared::SignatureError::MalformedHeader)?,
        ),
    };
    let now = i64::try_from(received_at.as_secs()).unwrap_or(i64::MAX);
    // Nothing costly before authentication: a missing, malformed or stale
    // signature is refused before a byte of the body is read.
    state.settings.verifier.check_header(signature, now)?;
    // actix bounds only the head: the body gets its own deadline.
    let limit = state.settings.max_body_bytes;
    let body_timeout = state.settings.body_timeout;
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    // The body's share of the budget is held until the request ends.
    let (body, _budget) = tokio::time::timeout(
        body_timeout,
        read_body(declared, payload, limit, &state.body_budget),
    )
    .await
    .map_err(|_| WebhookError::BodyTimeout(body_timeout))??;
    state.settings.verifier.verify(signature, &body, now)?;
    let envelope = EventEnvelope::parse(&body)?;
    let id = event_id.insert(envelope.id);
    if let Some(expected) = state.settings.expected_livemode
        && envelope.livemode != Some(expected)
    {
        return Err(WebhookError::WrongMode {
            found: envelope.livemode,
            expected,
        });
    }
    let started = Instant::now();
    let outgoing = OutgoingEvent {
        body: body.freeze(),
        event_id: id.as_str(),
        event_type: &envelope.event_type,
        created: envelope.created,
        request_id,
        received_at_ms: i64::try_from(received_at.as_millis()).unwrap_or(i64::MAX),
    };
    match state.publisher.publish(outgoing).await {
        Ok(()) => {
            state
                .metrics
                .publish_seconds
                .observe(started.elapsed().as_secs_f64());
            Ok(HttpResponse::Ok()
                .content_type(ContentType::json())
                .body(RECEIVED))
        }
        Err(error) => {
            let reason = error.reason();
            state
                .metrics
                .publish_failures
                .get_or_create(&ReasonLabel { reason })
                .inc();
            Err(WebhookError::Unavailable(error))
        }
    }
}

/// Reads the whole body, refusing it as soon as it passes `limit`. The
/// `declared` length is the sender's word only: it can refuse a body at
/// once, but never reserves more than [`MAX_PREALLOCATED_BODY`] of memory.
///
/// The body's bytes are taken from `budget` (the process-wide bound on
/// bodies in flight) as they arrive, chunk by chunk, with or without a
/// declared length: taking the declared length up front would let heads
/// that never send a byte (no secret needed to pass the head check) spend
/// the whole budget. With the budget spent, [`WebhookError::Overloaded`].
/// The permits come back with the body, to be held as long as it is.
async fn read_body<E>(
    declared: Option<usize>,
    mut payload: impl Stream<Item = Result<Bytes, E>> + Unpin,
    limit: usize,
    budget: &std::sync::Arc<Semaphore>,
) -> Result<(BytesMut, OwnedSemaphorePermit), WebhookError> {
    if declared.is_some_and(|length| length > limit) {
        return Err(WebhookError::TooLarge { limit });
    }
    let take = |bytes: usize| {
        let bytes = u32::try_from(bytes).map_err(|_| WebhookError::Overloaded)?;
        budget
            .clone()
            .try_acquire_many_owned(bytes)
            .map_err(|_| WebhookError::Overloaded)
    };
    let mut held = take(0)?;
    let mut body = BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(MAX_PREALLOCATED_BODY));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| WebhookError::BodyRead)?;
        if body.len() + chunk.len() > limit {
            return Err(WebhookError::TooLarge { limit });
        }
        held.merge(take(chunk.len())?);
        body.extend_from_slice(&chunk);
    }
    Ok((body, held))
}

/// The caller's `X-Request-Id` when it is short and printable, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_REQUEST_ID_LEN
                && id.bytes().all(|b| b.is_ascii_graphic())
        })
        .map_or_else(new_request_id, str::to_owned)
}

/// A new request id: a random UUID, lowercase and hyphenated (as its
/// `Display`, written without the formatting machinery).
fn new_request_id() -> String {
    let mut buffer = uuid::Uuid::encode_buffer();
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut buffer)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, ()>> + Unpin {
        futures_util::stream::iter(parts.iter().map(|part| Ok(Bytes::from_static(part))))
    }

    fn budget(bytes: usize) -> std::sync::Arc<Semaphore> {
        std::sync::Arc::new(Semaphore::new(bytes))
    }

    #[test]
    fn a_new_request_id_is_written_as_a_uuid_displays() {
        let id = new_request_id();
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(id, parsed.to_string());
        assert_eq!(parsed.get_version_num(), 4);
    }

    #[tokio::test]
    async fn a_declared_length_reserves_at_most_a_small_buffer() {
        let (body, _held) = read_body(
            Some(1_000_000),
            chunks(&[b"{}"]),
            1024 * 1024,
            &budget(1024 * 1024),
        )
        .await
        .unwrap();
        assert_eq!(&body[..], b"{}");
        assert!(
            body.capacity() <= MAX_PREALLOCATED_BODY,
            "reserved {} bytes on the sender's word",
            body.capacity()
        );
    }

    #[tokio::test]
    async fn a_body_is_refused_past_the_limit_declared_or_not() {
        let budget = budget(100);
        let declared = read_body(Some(11), chunks(&[b"x"]), 10, &budget).await;
        assert!(matches!(
            declared,
            Err(WebhookError::TooLarge { limit: 10 })
        ));
        let streamed = read_body(None, chunks(&[b"123456", b"78901"]), 10, &budget).await;
        assert!(matches!(
            streamed,
            Err(WebhookError::TooLarge { limit: 10 })
        ));
        let (exact, _held) = read_body(None, chunks(&[b"12345", b"67890"]), 10, &budget)
            .await
            .unwrap();
        assert_eq!(&exact[..], b"1234567890");
    }

    #[tokio::test]
    async fn bodies_take_the_budget_until_they_are_dropped() {
        let budget = budget(10);
        // Taken as the bytes arrive, whatever the length declared.
        let (_, first) = read_body(Some(6), chunks(&[b"123", b"456"]), 10, &budget)
            .await
            .unwrap();
        assert_eq!(budget.available_permits(), 4);
        // Refused at the chunk that does not fit, and what the refused body
        // took is given back.
        let refused = read_body(None, chunks(&[b"123", b"45"]), 10, &budget).await;
        assert!(matches!(refused, Err(WebhookError::Overloaded)));
        let refused = read_body(Some(5), chunks(&[b"12", b"345"]), 10, &budget).await;
        assert!(matches!(refused, Err(WebhookError::Overloaded)));
        assert_eq!(budget.available_permits(), 4);
        let (_, second) = read_body(None, chunks(&[b"12", b"34"]), 10, &budget)
            .await
            .unwrap();
        assert_eq!(budget.available_permits(), 0);
        drop(first);
        drop(second);
        assert_eq!(budget.available_permits(), 10);
    }
}
