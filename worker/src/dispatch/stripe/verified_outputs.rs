//! Compare verified outputs. (A stub, being written: issue 8.)

use deadpool_postgres::Pool;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

use super::StripeClient;
use crate::dispatch::sink::{Job, Performed, Sink};
use crate::domain::outbox::{ActionKind, Sinks};

#[derive(Debug)]
pub struct CompareVerifiedOutputs {
    _client: StripeClient,
    _pool: Pool,
    _sinks: Sinks,
}

impl CompareVerifiedOutputs {
    pub fn new(client: StripeClient, pool: Pool, sinks: Sinks) -> Self {
        Self {
            _client: client,
            _pool: pool,
            _sinks: sinks,
        }
    }
}

impl Sink for CompareVerifiedOutputs {
    fn kinds(&self) -> &'static [ActionKind] {
        &[ActionKind::CompareVerifiedOutputs]
    }

    fn perform<'a>(&'a self, _job: &'a Job) -> BoxFuture<'a, Performed> {
        async move {
            Performed::Retry {
                error: "the comparison is not implemented yet".to_owned(),
                after: None,
            }
        }
        .boxed()
    }
}
