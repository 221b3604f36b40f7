//! Tell the person by e-mail (`SMTP_URL`): "you are verified" (a
//! `notify_user_verified` row), what went wrong and how many attempts are
//! left (`notify_user_retry`), or "we will offer you another way"
//! (`notify_user_alternative`).
//!
//! The address comes from the platform's `subject_contacts`, else the
//! session's own events ([`address`]); with none, the row is `skipped`,
//! not failed. The e-mail is rendered from templates ([`templates`]) whose
//! variables hold counts, the outcome, the failure's code and fixed words
//! ([`words`]): never Stripe's `reason` text nor anything else of the
//! person's identity.
//!
//! Each e-mail carries the row's idempotency key (`X-Idempotency-Key`) and
//! a `Message-ID` derived from it ([`message_id`]), so a copy sent again
//! after a crash between sending and marking is recognisable. The address,
//! the body and `SMTP_URL` (which may hold a password) are never logged.

pub mod address;
pub mod templates;
pub mod words;

use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use secrecy::ExposeSecret as _;

use self::address::{Found, Whom};
use self::templates::{Templates, Values, Which};
use super::settings::EmailSettings;
use super::sink::{Job, Performed, Sink};
use crate::domain::outbox::ActionKind;
use crate::domain::policy::code_label;

/// How long one SMTP conversation may take (connect, each command).
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The header that carries the row's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "X-Idempotency-Key";

/// The e-mail sink: an SMTP transport built once, the sender, the
/// templates, and the database for addresses.
pub struct EmailSink {
    /// Opens a connection per e-mail (no pool: a dispatcher sends few).
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// `EMAIL_FROM`.
    from: Mailbox,
    templates: Templates,
    /// Where the addresses are looked up.
    pool: Pool,
    /// `IDV_MAX_FAILED_ATTEMPTS`, for `{{max_attempts}}`.
    max_failed_attempts: i32,
}

impl std::fmt::Debug for EmailSink {
    /// Never the transport: it holds `SMTP_URL`'s credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSink")
            .field("from", &self.from.email.domain())
            .field("max_failed_attempts", &self.max_failed_attempts)
            .finish_non_exhaustive()
    }
}

impl EmailSink {
    /// The sink for `settings`: its transport (not yet connected), sender
    /// and templates (`EMAIL_TEMPLATES_DIR` read and checked now).
    pub fn new(
        settings: EmailSettings,
        pool: Pool,
        max_failed_attempts: i32,
    ) -> anyhow::Result<Self> {
        // lettre's error could quote the URL, password included.
        let transport =
            AsyncSmtpTransport::<Tokio1Executor>::from_url(settings.smtp_url.expose_secret())
                .map_err(|_| {
                    anyhow::anyhow!(
                        "SMTP_URL: not a URL lettre can use (smtp://host:port, \
                         smtp://host:port?tls=required or smtps://host:port)"
                    )
                })?
                .timeout(Some(SMTP_TIMEOUT))
                .build();
        let from = settings.from.parse::<Mailbox>().map_err(|_| {
            anyhow::anyhow!(
                "EMAIL_FROM: expected an address such as identity@example.com or \
                 Identity <identity@example.com>"
            )
        })?;
        let templates = Templates::load(settings.templates_dir.as_deref())?;
        Ok(Self {
            transport,
            from,
            templates,
            pool,
            max_failed_attempts,
        })
    }

    async fn send(&self, job: &Job, which: Which) -> Performed {
        let whom = Whom {
            subject: job.facts.subject.as_deref(),
            session: job.row.session_id.as_deref(),
            session_redacted: job.facts.session_redacted,
        };
        let found = match self.pool.get().await {
            Ok(client) => address::look_up(&client, whom).await,
            Err(_) => {
                return Performed::Retry {
                    error: "cannot look up the e-mail address: no database connection".to_owned(),
                    after: None,
                };
            }
        };
        let to = match found {
            Ok(Found::Address(address)) => address,
            Ok(Found::None) => return Performed::Skipped("no e-mail address".to_owned()),
            Ok(Found::Invalid) => return Performed::Skipped("invalid e-mail address".to_owned()),
            Err(_) => {
                return Performed::Retry {
                    error: "cannot look up the e-mail address: the query failed".to_owned(),
                    after: None,
                };
            }
        };
        let rendered = self.templates.get(which).render(&self.values(job, which));
        let message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(rendered.subject)
            .message_id(Some(message_id(&job.row.idempotency_key)))
            .header(IdempotencyKey(job.row.idempotency_key.clone()))
            .date_now()
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ));
        let message = match message {
            Ok(message) => message,
            Err(_) => return Performed::Failed("the e-mail cannot be built".to_owned()),
        };
        match self.transport.send(message).await {
            Ok(_) => Performed::Done,
            Err(error) => smtp_error(&error),
        }
    }

    /// The variables' values: counts, the outcome, and for a failure its
    /// code (only when it looks like one) and fixed words for it.
    fn values(&self, job: &Job, which: Which) -> Values {
        let code = match which {
            Which::RequiresInput => job
                .message
                .last_error_code
                .as_deref()
                .map_or("unknown", code_label),
            Which::Verified | Which::ManualReview => "",
        };
        Values {
            outcome: which.stem().to_owned(),
            failed_attempts: job.message.failed_attempts,
            attempts_left: job.message.attempts_left,
            max_attempts: self.max_failed_attempts,
            code: code.to_owned(),
            what_went_wrong: if code.is_empty() {
                String::new()
            } else {
                words::what_went_wrong(code).to_owned()
            },
        }
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

    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed> {
        async move {
            let which = match job.kind {
                ActionKind::NotifyUserVerified => Which::Verified,
                ActionKind::NotifyUserRetry => Which::RequiresInput,
                ActionKind::NotifyUserAlternative => Which::ManualReview,
                other => return Performed::Failed(format!("{other} is not an e-mail")),
            };
            self.send(job, which).await
        }
        .boxed()
    }
}

/// The `Message-ID` of the e-mail for the row with idempotency `key`: the
/// same for every copy, and naming nothing: `<h@idv-pipeline>`, where `h`
/// is the hex SHA-256 of the key.
pub fn message_id(key: &str) -> String {
    use sha2::Digest as _;
    format!(
        "<{}@idv-pipeline>",
        hex::encode(sha2::Sha256::digest(key.as_bytes()))
    )
}

/// An SMTP failure as the dispatcher reads it: a permanent refusal (5xx)
/// fails the row; anything else (4xx, no connection, a timeout, TLS) is
/// tried again. Only the reply code is kept: the server's text may quote
/// the address.
fn smtp_error(error: &lettre::transport::smtp::Error) -> Performed {
    let code = error.status().map(|code| code.to_string());
    if error.is_permanent() {
        return Performed::Failed(format!(
            "the SMTP server refused the e-mail: {}",
            code.unwrap_or_default()
        ));
    }
    let cause = if error.is_transient() {
        format!(
            "the SMTP server deferred the e-mail: {}",
            code.unwrap_or_default()
        )
    } else if error.is_timeout() {
        "the SMTP server timed out".to_owned()
    } else if error.is_tls() {
        "TLS with the SMTP server failed".to_owned()
    } else {
        "could not talk to the SMTP server".to_owned()
    };
    Performed::Retry {
        error: cause,
        after: None,
    }
}

/// `X-Idempotency-Key`: the row's key, the same on every copy.
#[derive(Debug, Clone)]
struct IdempotencyKey(String);

impl Header for IdempotencyKey {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str(IDEMPOTENCY_HEADER)
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_id_is_stable_per_key_and_names_nothing() {
        let id = message_id("user_42:manual_review:notify_user_alternative");
        assert_eq!(
            id,
            message_id("user_42:manual_review:notify_user_alternative")
        );
        assert_ne!(
            id,
            message_id("user_43:manual_review:notify_user_alternative")
        );
        assert!(!id.contains("user_42"), "{id}");
        let digest = id
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix("@idv-pipeline>"))
            .unwrap_or_default();
        assert_eq!(digest.len(), 64, "{id}");
        assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
}
