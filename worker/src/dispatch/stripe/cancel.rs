//! Stop further submissions at the limit. (A stub, being written: issue 8.)

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

use super::StripeClient;
use crate::dispatch::sink::{Job, Performed, Sink};
use crate::domain::outbox::ActionKind;

#[derive(Debug)]
pub struct CancelSession {
    _client: StripeClient,
}

impl CancelSession {
    pub fn new(client: StripeClient) -> Self {
        Self { _client: client }
    }
}

impl Sink for CancelSession {
    fn kinds(&self) -> &'static [ActionKind] {
        &[ActionKind::CancelStripeSession]
    }

    fn perform<'a>(&'a self, _job: &'a Job) -> BoxFuture<'a, Performed> {
        async move {
            Performed::Retry {
                error: "cancel is not implemented yet".to_owned(),
                after: None,
            }
        }
        .boxed()
    }
}
