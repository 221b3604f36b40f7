//! The policy table: what a `last_error.code` means for the person's next
//! step. Documented in the README and overridable with `IDV_CODE_POLICY`
//! (`code=class,code=class`), so a platform can reclassify a code without a
//! release.

use std::collections::BTreeMap;
use std::fmt;

use shared::LastErrorCode;
use shared::config::{ConfigError, invalid};

/// What a failed submission's code allows next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CodeClass {
    /// The person can fix it and submit again (document, selfie, ID number…).
    Retryable,
    /// Retrying cannot help (`under_supported_age`, `country_not_supported`).
    NotRetryable,
    /// The person refused biometrics: offer another way (`consent_declined`).
    NonBiometricPath,
    /// Not a real attempt (`abandoned`): recorded, never counted.
    NotAnAttempt,
}

impl CodeClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::NotRetryable => "not_retryable",
            Self::NonBiometricPath => "non_biometric_path",
            Self::NotAnAttempt => "not_an_attempt",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [
            Self::Retryable,
            Self::NotRetryable,
            Self::NonBiometricPath,
            Self::NotAnAttempt,
        ]
        .into_iter()
        .find(|class| class.as_str() == raw)
    }

    /// Whether a failure of this class counts toward the attempt limit.
    pub fn counts(self) -> bool {
        self != Self::NotAnAttempt
    }

    /// Whether a failure of this class sends the subject to manual review at once.
    pub fn blocks(self) -> bool {
        matches!(self, Self::NotRetryable | Self::NonBiometricPath)
    }
}

impl fmt::Display for CodeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The classification of every code; unknown codes are retryable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Codes whose class is not [`CodeClass::Retryable`].
    table: BTreeMap<String, CodeClass>,
}

impl Default for Policy {
    fn default() -> Self {
        let table = [
            ("abandoned", CodeClass::NotAnAttempt),
            ("consent_declined", CodeClass::NonBiometricPath),
            ("under_supported_age", CodeClass::NotRetryable),
            ("country_not_supported", CodeClass::NotRetryable),
        ]
        .into_iter()
        .map(|(code, class)| (code.to_owned(), class))
        .collect();
        Self { table }
    }
}

/// A classified code: its class, and whether the code is one Stripe documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    pub class: CodeClass,
    pub known: bool,
}

impl Policy {
    /// The default table with `overrides` (`code=class,…`) applied.
    pub fn with_overrides(variable: &str, overrides: Option<&str>) -> Result<Self, ConfigError> {
        let mut policy = Self::default();
        let expected = "comma-separated code=class pairs, class one of retryable, \
                        not_retryable, non_biometric_path, not_an_attempt";
        for pair in overrides.unwrap_or("").split(',').map(str::trim) {
            if pair.is_empty() {
                continue;
            }
            let parsed = pair.split_once('=').and_then(|(code, class)| {
                let code = code.trim();
                let valid_code =
                    !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
                valid_code.then_some((code, CodeClass::parse(class.trim())?))
            });
            let Some((code, class)) = parsed else {
                return Err(invalid(variable, expected, Some(pair)));
            };
            policy.table.insert(code.to_owned(), class);
        }
        Ok(policy)
    }

    pub fn classify(&self, code: &LastErrorCode) -> Classified {
        let class = self
            .table
            .get(code.as_str())
            .copied()
            .unwrap_or(CodeClass::Retryable);
        let known =
            !matches!(code, LastErrorCode::Unknown(_)) || self.table.contains_key(code.as_str());
        Classified { class, known }
    }
}

/// A `last_error.code` as a metric label or a log field: the code itself
/// when it looks like one (`[a-z0-9_]{1,64}`), else `invalid`. The code is
/// whatever the payload says; unbounded, an unknown one could flood the
/// metrics with series or put arbitrary text (personal data included) in
/// the logs.
pub fn code_label(code: &str) -> &str {
    let looks_like_a_code = (1..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if looks_like_a_code { code } else { "invalid" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_code_like_values_are_labels() {
        assert_eq!(code_label("document_expired"), "document_expired");
        assert_eq!(code_label("brand_new_code_2"), "brand_new_code_2");
        assert_eq!(code_label(&"a".repeat(64)), "a".repeat(64));
        assert_eq!(code_label(&"a".repeat(65)), "invalid");
        assert_eq!(code_label(""), "invalid");
        assert_eq!(code_label("Jane Doe 1980-01-01"), "invalid");
        assert_eq!(code_label("code\n{x=\"1\"}"), "invalid");
    }

    #[test]
    fn the_default_table_follows_stripe_guidance() {
        let policy = Policy::default();
        let class = |raw: &str| policy.classify(&LastErrorCode::parse(raw)).class;
        assert_eq!(class("document_expired"), CodeClass::Retryable);
        assert_eq!(class("selfie_face_mismatch"), CodeClass::Retryable);
        assert_eq!(class("id_number_mismatch"), CodeClass::Retryable);
        assert_eq!(class("device_not_supported"), CodeClass::Retryable);
        assert_eq!(class("under_supported_age"), CodeClass::NotRetryable);
        assert_eq!(class("country_not_supported"), CodeClass::NotRetryable);
        assert_eq!(class("consent_declined"), CodeClass::NonBiometricPath);
        assert_eq!(class("abandoned"), CodeClass::NotAnAttempt);
        let unknown = policy.classify(&LastErrorCode::parse("brand_new_code"));
        assert_eq!(unknown.class, CodeClass::Retryable);
        assert!(!unknown.known);
    }

    #[test]
    fn overrides_replace_entries_and_bad_ones_name_the_variable() {
        let policy = Policy::with_overrides(
            "P",
            Some("document_expired=not_retryable, abandoned=retryable"),
        )
        .unwrap();
        let class = |raw: &str| policy.classify(&LastErrorCode::parse(raw)).class;
        assert_eq!(class("document_expired"), CodeClass::NotRetryable);
        assert_eq!(class("abandoned"), CodeClass::Retryable);
        let error = Policy::with_overrides("P", Some("document_expired=maybe")).unwrap_err();
        assert_eq!(error.variable, "P");
        assert!(Policy::with_overrides("P", Some("nocls")).is_err());
    }
}
