//! Dead letters: wherever the worker consumes, it also drains
//! `idv.events.dlq` into the `dead_letters` table, so that operators list,
//! filter, replay and purge them with `idvctl dlq` instead of browsing a
//! quorum queue (where every get-and-requeue counts toward a delivery
//! limit, and nothing can be filtered or erased).
//!
//! - [`record`] reads a DLQ message into a row: why it is there (the
//!   worker's `x-idv-*` headers, or the broker's `x-death`), the key it was
//!   first published with, the event's ids when the body is a valid
//!   event, and the exact bytes; [`fingerprint`] identifies one
//!   dead-lettering, so that a redelivered DLQ message is the same row;
//! - [`drain`] consumes the DLQ on a link of its own and inserts in
//!   batches (`ON CONFLICT (fingerprint) DO NOTHING`), acking only once the
//!   insert committed. While PostgreSQL is unavailable it holds what it
//!   has and retries with backoff (never a nack or a requeue); a lost
//!   broker link is reopened with backoff; shutdown stops it taking more,
//!   finishes the batch in hand and closes;
//! - [`gauges`] refreshes the metrics an alert fires on: dead letters
//!   waiting (not replayed), the age of the oldest, and the ready messages
//!   of the work queue and the DLQ.
//!
//! A `redacted` event erases the payloads of its session's dead letters in
//! its own transaction, and a dead letter drained after its session was
//! redacted is stored without payload; [`crate::store::dead_letters`] says
//! how the two are kept from interleaving.
//!
//! Both tasks have a pool of their own (two connections, opened on first
//! use), so that they never take a connection the lanes wait for, and a
//! worker that never gets to consume opens none for them.
//! `WORKER_DLQ_DRAIN=off` leaves the DLQ to RabbitMQ's tools (the gauges
//! still run).

pub mod drain;
pub mod fingerprint;
pub mod gauges;
pub mod record;

pub use record::{DeadLetter, Kind};

use deadpool_postgres::Pool;
use shared::topology::Topology;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics::Metrics;

/// What the drain and the gauges share.
#[derive(Debug, Clone)]
pub struct Tasks {
    /// Their own pool, apart from the lanes'.
    pub pool: Pool,
    /// `AMQP_URL`: the broker's address(es); may carry passwords.
    pub amqp_url: shared::amqp_addresses::AmqpAddresses,
    /// Where the work queue and the DLQ are.
    pub topology: Topology,
    pub metrics: Arc<Metrics>,
    /// The consumer's: the drain consumes only while the consumer does.
    pub health: Arc<Health>,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
}
