//! The wire contract between `idv-ingest` and `idv-worker`.
//!
//! Everything both sides must agree on lives here, so that it is written once:
//! the Stripe event and VerificationSession types ([`event`], [`session`]),
//! the message envelope: header names and properties ([`envelope`]),
//! webhook signature verification and test signing ([`signature`]),
//! configuration helpers that name the variable at fault ([`config`]), the
//! AMQP names and queue arguments ([`topology`]), logging set-up
//! ([`telemetry`]) and stopping on a signal ([`signals`]).
//!
//! The crate builds without a broker client; the `amqp` feature adds the
//! lapin code that declares the topology.

#[cfg(feature = "amqp")]
pub mod amqp_addresses;
pub mod config;
pub mod envelope;
pub mod event;
pub mod session;
pub mod signals;
pub mod signature;
pub mod telemetry;
pub mod topology;

pub use event::{EventEnvelope, EventId, EventType, StripeEvent};
pub use session::{LastError, LastErrorCode, SessionId, SessionStatus, VerificationSession};
pub use signature::{SignatureError, SignatureVerifier, WebhookSecret, sign_test_header};
