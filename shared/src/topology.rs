//! The AMQP topology: exchange and queue names, their arguments and bindings.
//!
//! ```text
//! stripe.events (topic) ──identity.verification_session.*──▶ idv.events (quorum)
//!      │ alternate exchange                                   │ dead letters
//!      ▼                                                      ▼
//! stripe.events.unrouted (fanout) ▶ stripe.events.unrouted    idv.events.dlx (fanout) ▶ idv.events.dlq
//!
//! idv.events.retry.{5s,30s,5m}: a message waits out its TTL there, then is
//! dead-lettered back to idv.events through the default exchange.
//!
//! idv.outcomes (topic): the outcome messages the dispatcher publishes,
//! routed by outcome (verified, requires_input, manual_review, canceled,
//! redacted); the platform binds its own queues.
//! ```
//!
//! Every name takes an optional prefix (`AMQP_PREFIX`) so that tests and
//! several deployments can share one broker. The topology is described here
//! as data; the `amqp` feature declares it with lapin.

#[cfg(feature = "amqp")]
mod declare;

#[cfg(feature = "amqp")]
pub use declare::{DeclareError, declare, declare_at, delete};

use std::time::Duration;

use crate::config::{ConfigError, Env, invalid};

/// Routing pattern for the events the worker consumes.
pub const SESSION_EVENTS_BINDING: &str = "identity.verification_session.*";

/// How long a failed message waits before each retry; one retry queue each.
pub const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(300),
];

/// Deliveries of one message before the broker dead-letters it: a backstop
/// against crash loops, well above the retries the worker makes itself.
pub const DELIVERY_LIMIT: i64 = 20;

/// The kinds of exchange we declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Topic,
    Fanout,
}

/// An exchange to declare (always durable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSpec {
    pub name: String,
    pub kind: ExchangeKind,
    /// Where messages that match no binding go instead of being dropped.
    pub alternate_exchange: Option<String>,
}

/// A queue argument's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    Str(String),
    Int(i64),
}

/// A queue to declare (always durable), with its `x-` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    pub arguments: Vec<(&'static str, ArgValue)>,
}

/// A queue bound to an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingSpec {
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
}

/// Names of one deployment's exchanges and queues.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topology {
    /// Prepended to every name; empty in production.
    prefix: String,
}

impl Topology {
    /// A prefix may hold ASCII letters, digits, `.`, `_` and `-`.
    pub fn new(prefix: &str) -> Result<Self, &'static str> {
        let ok = prefix.len() <= 100
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self {
                prefix: prefix.to_owned(),
            })
        } else {
            Err("at most 100 ASCII letters, digits, `.`, `_` or `-`")
        }
    }

    /// Reads `AMQP_PREFIX` (empty when unset).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let prefix = env.optional("AMQP_PREFIX").unwrap_or("");
        Self::new(prefix).map_err(|expected| invalid("AMQP_PREFIX", expected, Some(prefix)))
    }

    fn name(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// The topic exchange ingest publishes to; routing key = event type.
    pub fn events_exchange(&self) -> String {
        self.name("stripe.events")
    }

    /// Alternate exchange of `stripe.events`: catches types nobody consumes.
    pub fn unrouted_exchange(&self) -> String {
        self.name("stripe.events.unrouted")
    }

    /// Keeps the events no binding wanted.
    pub fn unrouted_queue(&self) -> String {
        self.name("stripe.events.unrouted")
    }

    /// The worker's queue.
    pub fn events_queue(&self) -> String {
        self.name("idv.events")
    }

    /// Where `idv.events` dead-letters.
    pub fn dead_letter_exchange(&self) -> String {
        self.name("idv.events.dlx")
    }

    /// Dead letters, kept for operators to inspect and replay.
    pub fn dead_letter_queue(&self) -> String {
        self.name("idv.events.dlq")
    }

    /// The retry queue for `delay` (one of [`RETRY_DELAYS`]).
    pub fn retry_queue(&self, delay: Duration) -> String {
        let secs = delay.as_secs();
        let label = if secs >= 60 && secs.is_multiple_of(60) {
            format!("{}m", secs / 60)
        } else {
            format!("{secs}s")
        };
        self.name(&format!("idv.events.retry.{label}"))
    }

    /// Where the dispatcher publishes what happened to each person, for
    /// the platform (routing key: the outcome).
    pub fn outcomes_exchange(&self) -> String {
        self.name("idv.outcomes")
    }

    pub fn exchanges(&self) -> Vec<ExchangeSpec> {
        vec![
            ExchangeSpec {
                name: self.outcomes_exchange(),
                kind: ExchangeKind::Topic,
                alternate_exchange: None,
            },
            ExchangeSpec {
                name: self.unrouted_exchange(),
                kind: ExchangeKind::Fanout,
                alternate_exchange: None,
            },
            ExchangeSpec {
                name: self.events_exchange(),
                kind: ExchangeKind::Topic,
                alternate_exchange: Some(self.unrouted_exchange()),
            },
            ExchangeSpec {
                name: self.dead_letter_exchange(),
                kind: ExchangeKind::Fanout,
                alternate_exchange: None,
            },
        ]
    }

    pub fn queues(&self) -> Vec<QueueSpec> {
        let mut queues = vec![
            QueueSpec {
                name: self.unrouted_queue(),
                arguments: quorum(),
            },
            QueueSpec {
                name: self.events_queue(),
                arguments: [
                    quorum(),
                    at_least_once_dead_lettering(self.dead_letter_exchange(), None),
                    vec![("x-delivery-limit", ArgValue::Int(DELIVERY_LIMIT))],
                ]
                .concat(),
            },
            QueueSpec {
                name: self.dead_letter_queue(),
                arguments: quorum(),
            },
        ];
        queues.extend(RETRY_DELAYS.iter().map(|delay| {
            let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            QueueSpec {
                name: self.retry_queue(*delay),
                arguments: [
                    quorum(),
                    // Back to idv.events through the default exchange, so only
                    // our queue sees the retry, not every binding of the topic.
                    at_least_once_dead_lettering(String::new(), Some(self.events_queue())),
                    vec![("x-message-ttl", ArgValue::Int(ttl))],
                ]
                .concat(),
            }
        }));
        queues
    }

    pub fn bindings(&self) -> Vec<BindingSpec> {
        vec![
            BindingSpec {
                queue: self.events_queue(),
                exchange: self.events_exchange(),
                routing_key: SESSION_EVENTS_BINDING.to_owned(),
            },
            BindingSpec {
                queue: self.unrouted_queue(),
                exchange: self.unrouted_exchange(),
                routing_key: String::new(),
            },
            BindingSpec {
                queue: self.dead_letter_queue(),
                exchange: self.dead_letter_exchange(),
                routing_key: String::new(),
            },
        ]
    }
}

fn quorum() -> Vec<(&'static str, ArgValue)> {
    vec![("x-queue-type", ArgValue::Str("quorum".into()))]
}

/// Quorum-queue dead-lettering that keeps a message until the target queue
/// confirms it (the default, at-most-once, can drop it).
fn at_least_once_dead_lettering(
    exchange: String,
    routing_key: Option<String>,
) -> Vec<(&'static str, ArgValue)> {
    let mut arguments = vec![
        ("x-dead-letter-exchange", ArgValue::Str(exchange)),
        (
            "x-dead-letter-strategy",
            ArgValue::Str("at-least-once".into()),
        ),
        // Required by at-least-once dead-lettering.
        ("x-overflow", ArgValue::Str("reject-publish".into())),
    ];
    if let Some(key) = routing_key {
        arguments.push(("x-dead-letter-routing-key", ArgValue::Str(key)));
    }
    arguments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_take_the_prefix() {
        let topology = Topology::new("t1.").unwrap();
        assert_eq!(topology.events_exchange(), "t1.stripe.events");
        assert_eq!(topology.events_queue(), "t1.idv.events");
        assert_eq!(topology.dead_letter_queue(), "t1.idv.events.dlq");
        let retry: Vec<_> = RETRY_DELAYS
            .iter()
            .map(|d| topology.retry_queue(*d))
            .collect();
        assert_eq!(
            retry,
            [
                "t1.idv.events.retry.5s",
                "t1.idv.events.retry.30s",
                "t1.idv.events.retry.5m"
            ]
        );
        assert_eq!(Topology::default().events_queue(), "idv.events");
    }

    #[test]
    fn every_binding_names_declared_things() {
        let topology = Topology::new("p-").unwrap();
        let queues: Vec<_> = topology.queues().into_iter().map(|q| q.name).collect();
        let exchanges: Vec<_> = topology.exchanges().into_iter().map(|e| e.name).collect();
        for binding in topology.bindings() {
            assert!(queues.contains(&binding.queue));
            assert!(exchanges.contains(&binding.exchange));
        }
    }

    #[test]
    fn bad_prefixes_are_refused() {
        assert!(Topology::new("has space").is_err());
        assert!(Topology::new(&"x".repeat(101)).is_err());
        let env = Env::from_pairs([("AMQP_PREFIX", "a/b")]);
        assert_eq!(
            Topology::from_env(&env).unwrap_err().variable,
            "AMQP_PREFIX"
        );
    }
}
