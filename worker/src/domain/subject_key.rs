//! Which person a session belongs to: the subject key is the first of the
//! configured sources the session carries (`IDV_SUBJECT_KEY`, default
//! `client_reference_id,metadata.user_id`), else the session id.
//!
//! Redaction reaches a session's events too: Stripe replaces
//! `client_reference_id` with `"[redacted]"`, erases the metadata and sets
//! `redaction`. A placeholder is nobody's key: an event with `redaction`
//! set names no subject; a placeholder-looking value (`[…]`) of any source
//! is skipped like a missing one; and an event that carried a placeholder
//! but no real value names no subject either (not its session id: the
//! session belongs to someone, we just cannot read who from this copy).

use shared::VerificationSession;
use shared::config::{ConfigError, invalid};

/// Where a subject key may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `client_reference_id`, set by the platform when it created the session.
    ClientReferenceId,
    /// `metadata.<name>`.
    Metadata(String),
}

/// Sources in order of precedence; the session id is the implicit last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectKeyPrecedence(Vec<KeySource>);

impl Default for SubjectKeyPrecedence {
    fn default() -> Self {
        Self(vec![
            KeySource::ClientReferenceId,
            KeySource::Metadata("user_id".to_owned()),
        ])
    }
}

/// Longest subject key we store; longer values fall through to the next source.
const MAX_KEY_LEN: usize = 255;

impl SubjectKeyPrecedence {
    pub fn parse(variable: &str, raw: Option<&str>) -> Result<Self, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Self::default());
        };
        let expected = "comma-separated sources: client_reference_id or metadata.<key>";
        raw.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| match part {
                "client_reference_id" => Ok(KeySource::ClientReferenceId),
                _ => match part.strip_prefix("metadata.") {
                    Some(name) if !name.is_empty() => Ok(KeySource::Metadata(name.to_owned())),
                    _ => Err(invalid(variable, expected, Some(part))),
                },
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// The subject key `session` names and its source's rank (its place in
    /// the precedence; the session id ranks last), or `None` when the
    /// event is a redacted copy that names nobody.
    pub fn resolve(&self, session: &VerificationSession) -> Option<SubjectKey> {
        if session.redaction.is_some() {
            return None;
        }
        let mut placeholder = false;
        for (rank, source) in self.0.iter().enumerate() {
            let value = match source {
                KeySource::ClientReferenceId => session.client_reference_id.as_deref(),
                KeySource::Metadata(name) => session.metadata.get(name).map(String::as_str),
            };
            let Some(value) = value
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.len() <= MAX_KEY_LEN)
            else {
                continue;
            };
            if is_placeholder(value) {
                placeholder = true;
                continue;
            }
            return Some(SubjectKey {
                key: value.to_owned(),
                rank: rank_of(rank),
            });
        }
        (!placeholder).then(|| SubjectKey {
            key: session.id.as_str().to_owned(),
            rank: rank_of(self.0.len()),
        })
    }
}

/// A subject key and the rank of the source it came from: a session
/// whose events name different keys belongs to the one of lowest
/// (rank, key), whatever order they arrive in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SubjectKey {
    pub rank: i16,
    pub key: String,
}

fn rank_of(index: usize) -> i16 {
    i16::try_from(index).unwrap_or(i16::MAX)
}

/// Stripe's redaction placeholders look like `[redacted]`: a whole value in
/// square brackets is never taken for a person's key.
pub fn is_placeholder(value: &str) -> bool {
    let value = value.trim();
    value.len() >= 2 && value.starts_with('[') && value.ends_with(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(json: serde_json::Value) -> VerificationSession {
        // Ids borrow from the input, so deserialize from a reference.
        serde::Deserialize::deserialize(&json).unwrap()
    }

    fn key(precedence: &SubjectKeyPrecedence, json: serde_json::Value) -> Option<(i16, String)> {
        precedence.resolve(&session(json)).map(|k| (k.rank, k.key))
    }

    #[test]
    fn precedence_falls_back_to_the_session_id() {
        let precedence = SubjectKeyPrecedence::default();
        let both = serde_json::json!({"id": "vs_1", "status": "processing",
            "client_reference_id": "user_a", "metadata": {"user_id": "u_b"}});
        assert_eq!(key(&precedence, both), Some((0, "user_a".into())));
        let metadata_only = serde_json::json!({"id": "vs_1", "status": "processing",
            "metadata": {"user_id": "u_b"}});
        assert_eq!(key(&precedence, metadata_only), Some((1, "u_b".into())));
        let neither = serde_json::json!({"id": "vs_1", "status": "processing"});
        assert_eq!(key(&precedence, neither), Some((2, "vs_1".into())));
    }

    #[test]
    fn a_placeholder_is_never_a_key() {
        let precedence = SubjectKeyPrecedence::default();
        // The redacted copy of an event, as Stripe sends it.
        let redacted = serde_json::json!({"id": "vs_1", "status": "requires_input",
            "client_reference_id": "[redacted]", "metadata": {},
            "redaction": {"status": "redacted"}});
        assert_eq!(key(&precedence, redacted), None);
        // `redaction` set: nobody, even with values left in place.
        let flagged = serde_json::json!({"id": "vs_1", "status": "processing",
            "client_reference_id": "user_a", "redaction": {"status": "processing"}});
        assert_eq!(key(&precedence, flagged), None);
        // A placeholder falls through to the next source…
        let partly = serde_json::json!({"id": "vs_1", "status": "processing",
            "client_reference_id": "[redacted]", "metadata": {"user_id": "u_b"}});
        assert_eq!(key(&precedence, partly), Some((1, "u_b".into())));
        // …and with no real value left, to nobody (not the session id).
        for placeholder in ["[redacted]", " [REDACTED] ", "[]", "[erased by stripe]"] {
            let only = serde_json::json!({"id": "vs_1", "status": "processing",
                "metadata": {"user_id": placeholder}});
            assert_eq!(key(&precedence, only), None, "{placeholder}");
        }
        assert!(!is_placeholder("user_[1]") && !is_placeholder("[") && !is_placeholder("x]"));
    }

    #[test]
    fn precedence_is_configurable() {
        let precedence =
            SubjectKeyPrecedence::parse("K", Some("metadata.internal_user_id")).unwrap();
        let s = session(serde_json::json!({"id": "vs_1", "status": "processing",
            "client_reference_id": "user_a", "metadata": {"internal_user_id": "i_9"}}));
        assert_eq!(
            precedence.resolve(&s).map(|k| k.key).as_deref(),
            Some("i_9")
        );
        assert_eq!(
            SubjectKeyPrecedence::parse("K", Some("email"))
                .unwrap_err()
                .variable,
            "K"
        );
    }
}
