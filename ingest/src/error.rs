//! How each way a webhook request can fail is answered.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use shared::SignatureError;
use shared::event::EnvelopeError;

use crate::publisher::PublishError;

/// Every way `POST /webhook` can fail. The sender's mistakes are 4xx and
/// change nothing; only the broker's unavailability is 503.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Signature(#[from] SignatureError),
    #[error("body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("could not read the request body")]
    BodyRead,
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("{0}")]
    NotAnEvent(#[from] EnvelopeError),
    #[error("event livemode is {}, this endpoint accepts only livemode {expected}", found.map_or("missing".to_owned(), |f| f.to_string()))]
    WrongMode { found: Option<bool>, expected: bool },
    #[error("the event could not be stored now; retry later")]
    Unavailable(#[source] PublishError),
    /// The process-wide budget of body bytes in flight is spent.
    #[error("too many request bodies in flight; retry later")]
    Overloaded,
}

impl WebhookError {
    /// The `outcome` label of the requests metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Signature(_) => "bad_signature",
            Self::TooLarge { .. } => "too_large",
            Self::BodyRead | Self::NotAnEvent(_) => "bad_request",
            Self::BodyTimeout(_) => "body_timeout",
            Self::WrongMode { .. } => "wrong_livemode",
            Self::Unavailable(_) => "unavailable",
            Self::Overloaded => "overloaded",
        }
    }
}

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Signature(_) | Self::BodyRead | Self::NotAnEvent(_) | Self::WrongMode { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable(_) | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut response = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header(("Retry-After", "1"));
        }
        // A refused request ends its connection: actix times only a
        // connection's first head, and drains an unread chunked body with
        // no timer, so a client that was refused (most likely one that
        // cannot sign) must not get to send another head or keep sending.
        // An overloaded refusal leaves its body unread too.
        if status.is_client_error() || matches!(self, Self::Overloaded) {
            response.force_close();
        }
        response.json(serde_json::json!({ "error": self.to_string() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_close_the_connection_and_broker_trouble_does_not() {
        for error in [
            WebhookError::BodyRead,
            WebhookError::TooLarge { limit: 1 },
            WebhookError::BodyTimeout(std::time::Duration::from_secs(1)),
            WebhookError::Signature(SignatureError::MalformedHeader),
            WebhookError::Overloaded,
        ] {
            let response = error.error_response();
            assert!(
                !response.head().keep_alive(),
                "{error:?} keeps the connection"
            );
        }
        let overloaded = WebhookError::Overloaded.error_response();
        assert_eq!(overloaded.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(overloaded.headers().get("Retry-After").unwrap(), "1");
        let unavailable = WebhookError::Unavailable(PublishError::Unavailable).error_response();
        assert!(unavailable.head().keep_alive());
    }
}
