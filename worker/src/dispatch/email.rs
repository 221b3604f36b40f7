//! Tell the person by e-mail. (A stub, being written: issue 8.)

use deadpool_postgres::Pool;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

use super::settings::EmailSettings;
use super::sink::{Job, Performed, Sink};
use crate::domain::outbox::ActionKind;

#[derive(Debug)]
pub struct EmailSink {
    _settings: EmailSettings,
    _pool: Pool,
    _max_failed_attempts: i32,
}

impl EmailSink {
    pub fn new(
        settings: EmailSettings,
        pool: Pool,
        max_failed_attempts: i32,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            _settings: settings,
            _pool: pool,
            _max_failed_attempts: max_failed_attempts,
        })
    }
}

impl Sink for EmailSink {
    fn kinds(&self) -> &'static [ActionKind] {
        &[
            ActionKind::NotifyUserVerified,
            ActionKind::NotifyUserRetry,
            ActionKind::NotifyUserAlternative,
        ]
    }

    fn perform<'a>(&'a self, _job: &'a Job) -> BoxFuture<'a, Performed> {
        async move {
            Performed::Retry {
                error: "e-mail is not implemented yet".to_owned(),
                after: None,
            }
        }
        .boxed()
    }
}
