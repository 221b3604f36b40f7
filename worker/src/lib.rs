//! `idv-worker`: consumes Stripe Identity events from `idv.events` and
//! records each session's outcome in PostgreSQL exactly once, whatever the
//! order or the number of deliveries; and `idvctl`, the operator tool.
//!
//! - [`incoming`] parses a delivery into an event (or a message failure),
//! - [`domain`] holds the rules, without I/O: the state machine
//!   ([`transition`]), the code table ([`policy`]), whose session it is
//!   ([`subject_key`]), a batch planned in memory and its outbox rows,
//! - [`store`] reads, locks and writes them, one transaction per batch,
//! - [`consume`] is the consume loop, retries and dead-lettering,
//! - [`dead_letter`] drains the dead-letter queue into `dead_letters` and
//!   keeps its gauges,
//! - [`startup`] wires it together with the admin endpoint ([`admin`], [`metrics`]);
//!   [`entry`] is `idv-worker`'s `main`.

pub mod domain;
pub mod incoming;
pub mod migrate;
pub mod settings;
pub mod store;

// The rules' modules, also at the top where they have always been.
pub use domain::{policy, subject_key, transition};

pub mod admin;
pub mod consume;
pub mod ctl;
pub mod dead_letter;
pub mod dispatch;
pub mod entry;
pub mod fail_point;
pub mod health;
pub mod metrics;
pub mod startup;
