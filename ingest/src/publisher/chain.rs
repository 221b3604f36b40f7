//! Checks that the whole chain a published event relies on exists:
//! `stripe.events`, its alternate exchange `stripe.events.unrouted`, the
//! `stripe.events.unrouted` queue and `idv.events`.
//!
//! With the alternate exchange every message reaches some queue, and this
//! check makes sure that queue is there: with the chain missing, ingest
//! answers 503 and `/readyz` 503. `mandatory` covers the moments between
//! checks: each channel carries one unconfirmed publish at a time
//! ([`super::slot`]), so a return rides on its own message's confirm; it
//! answers that request 503 and marks the chain missing at once.
//!
//! The checks are passive declares on a channel of their own, never a
//! confirm channel: a passive declare of something missing closes its
//! channel (404), and the next check opens another. AMQP has no passive
//! check of a binding; the bindings are declared again with the topology.

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ExchangeKind};
use shared::topology::Topology;

fn passive_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        passive: true,      // only check that it exists
        durable: true,      // ignored when passive
        auto_delete: false, // ignored when passive
        internal: false,    // ignored when passive
        nowait: false,      // the answer is the check
    }
}

fn passive_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,      // only check that it exists
        durable: true,      // ignored when passive
        exclusive: false,   // ignored when passive
        auto_delete: false, // ignored when passive
        nowait: false,      // the answer is the check
    }
}

/// The channel the checks run on, opened again after a check closed it.
#[derive(Debug, Default)]
pub(super) struct ChainChecker {
    channel: Option<Channel>,
}

impl ChainChecker {
    async fn channel(&mut self, connection: &Connection) -> Result<Channel, lapin::Error> {
        match &self.channel {
            Some(channel) if channel.status().connected() => Ok(channel.clone()),
            _ => {
                let channel = connection.create_channel().await?;
                self.channel = Some(channel.clone());
                Ok(channel)
            }
        }
    }

    /// `Ok(None)` when every link of the chain exists, `Ok(Some(name))`
    /// naming the first one missing, `Err` when the check itself could not
    /// run (no channel: the link is failing, which is seen elsewhere).
    pub(super) async fn missing(
        &mut self,
        connection: &Connection,
        topology: &Topology,
    ) -> Result<Option<String>, lapin::Error> {
        let channel = self.channel(connection).await?;
        for exchange in [topology.events_exchange(), topology.unrouted_exchange()] {
            let found = channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Topic,
                    passive_exchange(),
                    FieldTable::default(),
                )
                .await;
            match found {
                Ok(()) => {}
                Err(error) if is_not_found(&error) => return Ok(Some(exchange)),
                Err(error) => return Err(error),
            }
        }
        for queue in [topology.unrouted_queue(), topology.events_queue()] {
            let found = channel
                .queue_declare(
                    queue.as_str().into(),
                    passive_queue(),
                    FieldTable::default(),
                )
                .await;
            match found {
                Ok(_) => {}
                Err(error) if is_not_found(&error) => return Ok(Some(queue)),
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }

    /// Declares the whole topology again (exchanges, queues, bindings).
    pub(super) async fn redeclare(
        &mut self,
        connection: &Connection,
        topology: &Topology,
    ) -> Result<(), lapin::Error> {
        let channel = self.channel(connection).await?;
        shared::topology::declare(&channel, topology).await
    }

    pub(super) async fn close(&self) {
        if let Some(channel) = &self.channel {
            let _ = channel.close(200, "ingest stopping".into()).await;
        }
    }
}

/// The broker's 404: what a passive declare of something missing gets.
fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}
