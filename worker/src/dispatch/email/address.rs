//! Where to write to a person, in this order:
//!
//! 1. `subject_contacts.email` for the subject, which the platform fills;
//! 2. else the newest stored event of the row's session (for a
//!    subject-level row, of any session of the subject) whose
//!    `data.object.provided_details.email` or `data.object.metadata.email`
//!    is set, `provided_details` first.
//!
//! A redacted session's events are not read (their payloads are erased
//! anyway): only `subject_contacts` can name an address for it. The
//! address is never logged.

use deadpool_postgres::Client;
use lettre::Address;

const CONTACT: &str = "SELECT email FROM subject_contacts WHERE subject_key = $1";

/// The session's newest event that names an address.
const FROM_SESSION: &str = "SELECT COALESCE( \
       payload #>> '{data,object,provided_details,email}', \
       payload #>> '{data,object,metadata,email}') \
     FROM events \
     WHERE session_id = $1 AND payload IS NOT NULL \
       AND COALESCE(payload #>> '{data,object,provided_details,email}', \
                    payload #>> '{data,object,metadata,email}') IS NOT NULL \
     ORDER BY created DESC, id DESC LIMIT 1";

/// The newest event of any unredacted session of the subject that names
/// an address.
const FROM_SUBJECT: &str = "SELECT COALESCE( \
       e.payload #>> '{data,object,provided_details,email}', \
       e.payload #>> '{data,object,metadata,email}') \
     FROM sessions s JOIN events e ON e.session_id = s.id \
     WHERE s.subject_key = $1 AND s.redacted_at IS NULL AND e.payload IS NOT NULL \
       AND COALESCE(e.payload #>> '{data,object,provided_details,email}', \
                    e.payload #>> '{data,object,metadata,email}') IS NOT NULL \
     ORDER BY e.created DESC, e.id DESC LIMIT 1";

/// Whom a row is about, as the lookup needs it.
#[derive(Debug, Clone, Copy)]
pub struct Whom<'a> {
    /// The subject as it stands now.
    pub subject: Option<&'a str>,
    /// The row's session; `None` for a subject-level row.
    pub session: Option<&'a str>,
    pub session_redacted: bool,
}

/// What the lookup found.
#[derive(Clone, PartialEq, Eq)]
pub enum Found {
    Address(Address),
    /// Nowhere names one.
    None,
    /// The first place that names one holds something that is not an
    /// address.
    Invalid,
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Address(_) => "Address(..)",
            Self::None => "None",
            Self::Invalid => "Invalid",
        })
    }
}

/// The address to write to about `whom`.
pub async fn look_up(client: &Client, whom: Whom<'_>) -> Result<Found, tokio_postgres::Error> {
    if let Some(subject) = whom.subject {
        let statement = client.prepare_cached(CONTACT).await?;
        if let Some(row) = client.query_opt(&statement, &[&subject]).await? {
            return Ok(parse(row.try_get(0)?));
        }
    }
    let (sql, key) = match (whom.session, whom.subject) {
        (Some(_), _) if whom.session_redacted => return Ok(Found::None),
        (Some(session), _) => (FROM_SESSION, session),
        (None, Some(subject)) => (FROM_SUBJECT, subject),
        (None, None) => return Ok(Found::None),
    };
    let statement = client.prepare_cached(sql).await?;
    match client.query_opt(&statement, &[&key]).await? {
        Some(row) => Ok(parse(row.try_get(0)?)),
        None => Ok(Found::None),
    }
}

fn parse(raw: String) -> Found {
    match raw.trim().parse::<Address>() {
        Ok(address) => Found::Address(address),
        Err(_) => Found::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_parsed_and_never_printed() {
        let found = parse(" person@example.com ".to_owned());
        assert_eq!(found, Found::Address("person@example.com".parse().unwrap()));
        assert_eq!(format!("{found:?}"), "Address(..)");
        assert_eq!(parse("Jane Doe".to_owned()), Found::Invalid);
        assert_eq!(parse("a@b@c".to_owned()), Found::Invalid);
        assert_eq!(parse(String::new()), Found::Invalid);
    }
}
