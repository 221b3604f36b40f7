//! `idv-worker`: consumes Stripe Identity events from `idv.events` and
//! records each session's outcome in PostgreSQL exactly once, whatever the
//! order or the number of deliveries; and `idvctl`, the operator tool.
//!
//! - [`incoming`] parses a delivery into an event (or a message failure),
//! - [`transition`] is the pure state machine, [`policy`] the code table,
//! - [`store`] applies batches of events in transactions,
//! - [`consume`] is the consume loop, retries and dead-lettering,
//! - [`app`] wires it together with the admin endpoint ([`admin`], [`metrics`]);
//!   [`entry`] is `idv-worker`'s `main`.

pub mod incoming;
pub mod migrate;
pub mod policy;
pub mod settings;
pub mod store;
pub mod subject_key;
pub mod transition;

pub mod admin;
pub mod app;
pub mod consume;
pub mod ctl;
pub mod entry;
pub mod fail_point;
pub mod health;
pub mod metrics;
