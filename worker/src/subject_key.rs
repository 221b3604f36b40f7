//! Which person a session belongs to: the subject key is the first of the
//! configured sources the session carries (`IDV_SUBJECT_KEY`, default
//! `client_reference_id,metadata.user_id`), else the session id.

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

    /// The subject key of `session`.
    pub fn resolve(&self, session: &VerificationSession) -> String {
        self.0
            .iter()
            .find_map(|source| {
                let value = match source {
                    KeySource::ClientReferenceId => session.client_reference_id.as_deref(),
                    KeySource::Metadata(name) => session.metadata.get(name).map(String::as_str),
                };
                value
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.len() <= MAX_KEY_LEN)
            })
            .unwrap_or(session.id.as_str())
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(json: serde_json::Value) -> VerificationSession {
        // Ids borrow from the input, so deserialize from a reference.
        serde::Deserialize::deserialize(&json).unwrap()
    }

    #[test]
    fn precedence_falls_back_to_the_session_id() {
        let precedence = SubjectKeyPrecedence::default();
        let both = session(serde_json::json!({"id": "vs_1", "status": "processing",
            "client_reference_id": "user_a", "metadata": {"user_id": "u_b"}}));
        assert_eq!(precedence.resolve(&both), "user_a");
        let metadata_only = session(serde_json::json!({"id": "vs_1", "status": "processing",
            "metadata": {"user_id": "u_b"}}));
        assert_eq!(precedence.resolve(&metadata_only), "u_b");
        let neither = session(serde_json::json!({"id": "vs_1", "status": "processing"}));
        assert_eq!(precedence.resolve(&neither), "vs_1");
    }

    #[test]
    fn precedence_is_configurable() {
        let precedence =
            SubjectKeyPrecedence::parse("K", Some("metadata.internal_user_id")).unwrap();
        let s = session(serde_json::json!({"id": "vs_1", "status": "processing",
            "client_reference_id": "user_a", "metadata": {"internal_user_id": "i_9"}}));
        assert_eq!(precedence.resolve(&s), "i_9");
        assert_eq!(
            SubjectKeyPrecedence::parse("K", Some("email"))
                .unwrap_err()
                .variable,
            "K"
        );
    }
}
