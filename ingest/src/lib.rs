//! `idv-ingest`: receives Stripe Identity webhooks, verifies their
//! signature, publishes the raw event durably to RabbitMQ and answers 200
//! only once the broker has confirmed it (503 when it cannot, so Stripe
//! retries). It holds no database and no business logic.

pub mod error;
pub mod listener;
pub mod metrics;
pub mod publisher;
pub mod routes;
pub mod settings;
pub mod startup;

pub use settings::Settings;
pub use startup::Application;
