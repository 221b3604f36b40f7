//! Compare a verified session's outputs with what the platform expected
//! (`expected_identity`, `IDV_EXPECTED_MATCHING=on`): `GET
//! /v1/identity/verification_sessions/{id}?expand[]=verified_outputs`
//! (and `verified_outputs.dob` when a date of birth is expected), names
//! compared without regard to case, accents or spacing.
//!
//! Only the result is kept (`verified_output_checks`: matched or not, and
//! the names of the fields that differed), never a verified value. A
//! mismatch puts the subject in manual review for good (`mismatch_session`,
//! which the worker's recount keeps) and writes its limit rows, in one
//! transaction: the platform and the person are told, and the subject's
//! sessions are canceled.

use deadpool_postgres::Pool;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio_postgres::IsolationLevel;
use unicode_normalization::UnicodeNormalization as _;
use unicode_normalization::char::is_combining_mark;

use super::{StripeClient, session_path};
use crate::dispatch::sink::{Job, Performed, Sink};
use crate::domain::outbox::{self, ActionKind, Sinks};

const EXPECTED: &str = "SELECT first_name, last_name, extract(year FROM dob)::int4, \
     extract(month FROM dob)::int4, extract(day FROM dob)::int4 \
     FROM expected_identity WHERE subject_key = $1";
/// Sessions before subjects, as the worker locks them: no deadlock.
const LOCK_SESSION: &str = "SELECT subject_key FROM sessions WHERE id = $1 FOR UPDATE";
const LOCK_SUBJECT: &str = "SELECT key FROM subjects WHERE key = $1 FOR UPDATE";
const SESSIONS_OF: &str = "SELECT id FROM sessions WHERE subject_key = $1 ORDER BY id";
/// The first mismatch stays the deciding one (the platform may have been
/// told of it already).
const MISMATCH: &str = "UPDATE subjects SET mismatch_session = COALESCE(mismatch_session, $2), \
     status = 'manual_review', decided_by_session = COALESCE(mismatch_session, $2), \
     updated_at = now() WHERE key = $1";
const RECORD_CHECK: &str = "INSERT INTO verified_output_checks \
     (session_id, subject_key, matched, differing) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (session_id) DO UPDATE SET subject_key = EXCLUDED.subject_key, \
     matched = EXCLUDED.matched, differing = EXCLUDED.differing, checked_at = now()";
/// Which of the subject's limit rows were already performed or superseded.
const DONE_ALREADY: &str = "SELECT idempotency_key FROM outbox \
     WHERE idempotency_key = ANY($1) AND status <> 'pending'";
/// As the worker writes them (`store::write`).
const INSERT_OUTBOX: &str = "INSERT INTO outbox \
     (kind, idempotency_key, subject_key, session_id, payload, from_limit) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::bool[]) \
     ON CONFLICT (idempotency_key) DO NOTHING";

#[derive(Debug)]
pub struct CompareVerifiedOutputs {
    client: StripeClient,
    pool: Pool,
    /// The actions configured: which limit rows a mismatch writes.
    sinks: Sinks,
}

/// A date of birth (Stripe's shape: any part may be missing). Personal
/// data: `Debug` shows none of it.
#[derive(Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct Dob {
    pub year: Option<i64>,
    pub month: Option<i64>,
    pub day: Option<i64>,
}

impl std::fmt::Debug for Dob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dob(..)")
    }
}

/// Names and a date of birth: what the platform expected, or what Stripe
/// verified. Personal data: `Debug` shows which fields are present only.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Identity {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub dob: Option<Dob>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("first_name", &self.first_name.as_ref().map(|_| ".."))
            .field("last_name", &self.last_name.as_ref().map(|_| ".."))
            .field("dob", &self.dob.as_ref().map(|_| ".."))
            .finish()
    }
}

/// The part of a VerificationSession the comparison reads.
#[derive(Deserialize)]
struct Session {
    verified_outputs: Option<Identity>,
    redaction: Option<serde_json::Value>,
}

/// A name as compared: compatibility-decomposed, accents dropped,
/// lowercased, spaces trimmed and collapsed.
pub fn fold(name: &str) -> String {
    let folded: String = name
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The fields `expected` names that `verified` lacks or has otherwise.
pub fn differing(expected: &Identity, verified: &Identity) -> Vec<&'static str> {
    let mut differing = Vec::new();
    let names = [
        ("first_name", &expected.first_name, &verified.first_name),
        ("last_name", &expected.last_name, &verified.last_name),
    ];
    for (field, want, got) in names {
        if let Some(want) = want.as_deref().map(fold).filter(|w| !w.is_empty())
            && got.as_deref().map(fold) != Some(want)
        {
            differing.push(field);
        }
    }
    if let Some(want) = expected.dob {
        let complete = |d: &Dob| d.year.is_some() && d.month.is_some() && d.day.is_some();
        if !verified
            .dob
            .is_some_and(|got| complete(&got) && got == want)
        {
            differing.push("dob");
        }
    }
    differing
}

impl Identity {
    fn is_empty(&self) -> bool {
        self.first_name
            .as_deref()
            .is_none_or(|n| fold(n).is_empty())
            && self.last_name.as_deref().is_none_or(|n| fold(n).is_empty())
            && self.dob.is_none()
    }
}

/// A database error, as a retry naming its SQLSTATE only (the server's
/// message may quote a value).
fn database(error: &tokio_postgres::Error) -> Performed {
    let error = match error.code() {
        Some(code) => format!("PostgreSQL: SQLSTATE {}", code.code()),
        None => "PostgreSQL unavailable".to_owned(),
    };
    Performed::Retry { error, after: None }
}

impl CompareVerifiedOutputs {
    pub fn new(client: StripeClient, pool: Pool, sinks: Sinks) -> Self {
        Self {
            client,
            pool,
            sinks,
        }
    }

    async fn expected(&self, subject: &str) -> Result<Option<Identity>, Performed> {
        let client = self.pool.get().await.map_err(|_| Performed::Retry {
            error: "no PostgreSQL connection".to_owned(),
            after: None,
        })?;
        let row = client
            .query_opt(EXPECTED, &[&subject])
            .await
            .map_err(|e| database(&e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let get = |i: usize| row.try_get::<_, Option<i32>>(i).map(|v| v.map(i64::from));
        let identity = (|| {
            let (year, month, day) = (get(2)?, get(3)?, get(4)?);
            Ok::<_, tokio_postgres::Error>(Identity {
                first_name: row.try_get(0)?,
                last_name: row.try_get(1)?,
                dob: year.map(|_| Dob { year, month, day }),
            })
        })()
        .map_err(|e| database(&e))?;
        Ok(Some(identity).filter(|i| !i.is_empty()))
    }

    async fn compare(&self, job: &Job) -> Result<Performed, Performed> {
        let path = session_path(job.row.session_id.as_deref())?;
        let session_id = job.row.session_id.as_deref().unwrap_or_default();
        let Some(subject) = job.facts.subject.as_deref() else {
            return Ok(Performed::Skipped(
                "the session belongs to no subject".to_owned(),
            ));
        };
        if job.facts.session_redacted {
            return Ok(Performed::Skipped("the session is redacted".to_owned()));
        }
        let Some(expected) = self.expected(subject).await? else {
            return Ok(Performed::Skipped(
                "nothing expected to compare with".to_owned(),
            ));
        };
        let mut query = vec![("expand[]", "verified_outputs")];
        if expected.dob.is_some() {
            query.push(("expand[]", "verified_outputs.dob"));
        }
        let answer = self.client.get(&path, &query).await?;
        if !answer.is_success() {
            return Ok(answer.performed("Stripe's session lookup"));
        }
        let session: Session = answer.json()?;
        if session.redaction.is_some_and(|r| !r.is_null()) {
            return Ok(Performed::Skipped(
                "the session is redacted at Stripe".to_owned(),
            ));
        }
        let verified = session.verified_outputs.unwrap_or_default();
        let differing = differing(&expected, &verified);
        self.record(session_id, subject, &differing).await
    }

    /// Records the check and, on a mismatch, puts the subject in manual
    /// review with its limit rows: one transaction.
    async fn record(
        &self,
        session_id: &str,
        subject: &str,
        differing: &[&str],
    ) -> Result<Performed, Performed> {
        let mut client = self.pool.get().await.map_err(|_| Performed::Retry {
            error: "no PostgreSQL connection".to_owned(),
            after: None,
        })?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(|e| database(&e))?;
        let db = |e: tokio_postgres::Error| database(&e);
        let owner: Option<String> = match tx.query_opt(LOCK_SESSION, &[&session_id]).await {
            Ok(Some(row)) => row.try_get(0).map_err(db)?,
            Ok(None) => None,
            Err(e) => return Err(db(e)),
        };
        if owner.as_deref() != Some(subject) {
            return Err(Performed::Retry {
                error: "the session's subject changed while it was compared".to_owned(),
                after: None,
            });
        }
        let locked = tx.query_opt(LOCK_SUBJECT, &[&subject]).await.map_err(db)?;
        if locked.is_none() {
            return Err(Performed::Retry {
                error: "the session's subject is gone".to_owned(),
                after: None,
            });
        }
        let matched = differing.is_empty();
        tx.execute(RECORD_CHECK, &[&session_id, &subject, &matched, &differing])
            .await
            .map_err(db)?;
        if !matched {
            tx.execute(MISMATCH, &[&subject, &session_id])
                .await
                .map_err(db)?;
            let sessions: Vec<String> = tx
                .query(SESSIONS_OF, &[&subject])
                .await
                .map_err(db)?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(db)?;
            let sessions: Vec<&str> = sessions.iter().map(String::as_str).collect();
            let mut rows = outbox::limit_rows(self.sinks, subject, &sessions);
            // The subject was told of a manual review already (or that was
            // superseded: it verified since). The mismatch is news: told
            // again, under keys of its own, which the worker's
            // reconciliation leaves alone (not limit rows).
            let keys: Vec<&str> = rows.iter().map(|r| r.idempotency_key.as_str()).collect();
            let done: Vec<String> = tx
                .query(DONE_ALREADY, &[&keys])
                .await
                .map_err(db)?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(db)?;
            for row in &mut rows {
                if row.session_id.is_none() && done.contains(&row.idempotency_key) {
                    row.idempotency_key = format!("{subject}:mismatch:{session_id}:{}", row.kind);
                    row.from_limit = false;
                }
            }
            let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
            let keys: Vec<&str> = rows.iter().map(|r| r.idempotency_key.as_str()).collect();
            let subjects: Vec<Option<&str>> =
                rows.iter().map(|r| r.subject_key.as_deref()).collect();
            let session_ids: Vec<Option<&str>> =
                rows.iter().map(|r| r.session_id.as_deref()).collect();
            let payloads: Vec<&serde_json::Value> = rows.iter().map(|r| &r.payload).collect();
            let from_limit: Vec<bool> = rows.iter().map(|r| r.from_limit).collect();
            tx.execute(
                INSERT_OUTBOX,
                &[
                    &kinds,
                    &keys,
                    &subjects,
                    &session_ids,
                    &payloads,
                    &from_limit,
                ],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(Performed::Done)
    }
}

impl Sink for CompareVerifiedOutputs {
    fn kinds(&self) -> &'static [ActionKind] {
        &[ActionKind::CompareVerifiedOutputs]
    }

    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed> {
        async move {
            match self.compare(job).await {
                Ok(performed) | Err(performed) => performed,
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(first: &str, last: &str, dob: Option<(i64, i64, i64)>) -> Identity {
        Identity {
            first_name: Some(first.to_owned()),
            last_name: Some(last.to_owned()),
            dob: dob.map(|(y, m, d)| Dob {
                year: Some(y),
                month: Some(m),
                day: Some(d),
            }),
        }
    }

    #[test]
    fn names_match_whatever_their_case_accents_and_spacing() {
        assert_eq!(fold("  José   María "), "jose maria");
        assert_eq!(fold("ÅSA"), "asa");
        assert_eq!(fold("Ｊｅｎｎｙ"), "jenny"); // full-width letters
        let expected = person("José María", "Müller", Some((1990, 12, 1)));
        let verified = person("JOSE  maria", "muller ", Some((1990, 12, 1)));
        assert!(differing(&expected, &verified).is_empty());
    }

    #[test]
    fn a_different_or_missing_field_differs() {
        let expected = person("Jenny", "Rosen", Some((1990, 12, 1)));
        let other_dob = person("Jenny", "Rosen", Some((1990, 12, 2)));
        assert_eq!(differing(&expected, &other_dob), ["dob"]);
        let nothing = Identity::default();
        assert_eq!(
            differing(&expected, &nothing),
            ["first_name", "last_name", "dob"]
        );
        let partial_dob = Identity {
            dob: Some(Dob {
                year: Some(1990),
                month: None,
                day: None,
            }),
            ..person("Jenny", "Rosen", None)
        };
        assert_eq!(differing(&expected, &partial_dob), ["dob"]);
        assert_eq!(
            differing(&expected, &person("Jenny", "Rose", Some((1990, 12, 1)))),
            ["last_name"]
        );
    }

    #[test]
    fn only_what_is_expected_is_compared() {
        let expected = Identity {
            last_name: Some("Rosen".to_owned()),
            ..Identity::default()
        };
        assert!(differing(&expected, &person("Anyone", "ROSEN", None)).is_empty());
        assert!(Identity::default().is_empty());
        assert!(!expected.is_empty());
    }

    #[test]
    fn debug_shows_no_personal_data() {
        let shown = format!("{:?}", person("Jenny", "Rosen", Some((1990, 12, 1))));
        assert!(
            !shown.contains("Jenny") && !shown.contains("1990"),
            "{shown}"
        );
    }
}
