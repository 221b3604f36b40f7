//! The Identity `VerificationSession` as it appears inside webhook events.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::event::{IdError, parse_prefixed_id};

/// A VerificationSession id (`vs_…`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        parse_prefixed_id(raw, "vs_").map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Cow::<'de, str>::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// `status` of a VerificationSession, as Stripe reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    RequiresInput,
    Processing,
    Verified,
    Canceled,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequiresInput => "requires_input",
            Self::Processing => "processing",
            Self::Verified => "verified",
            Self::Canceled => "canceled",
        }
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `last_error.code`: an open enum. Unknown values are kept as data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LastErrorCode {
    Abandoned,
    AddressMismatch,
    ConsentDeclined,
    CountryNotSupported,
    DeviceNotSupported,
    DocumentExpired,
    DocumentTypeNotSupported,
    DocumentUnverifiedOther,
    EmailUnverifiedOther,
    EmailVerificationDeclined,
    IdNumberInsufficientDocumentData,
    IdNumberMismatch,
    IdNumberUnverifiedOther,
    PhoneUnverifiedOther,
    PhoneVerificationDeclined,
    SelfieDocumentMissingPhoto,
    SelfieFaceMismatch,
    SelfieManipulated,
    SelfieUnverifiedOther,
    UnderSupportedAge,
    /// A code this version does not know yet.
    Unknown(String),
}

impl LastErrorCode {
    /// Every code Stripe documents, for tables and tests.
    pub const KNOWN: [LastErrorCode; 20] = [
        Self::Abandoned,
        Self::AddressMismatch,
        Self::ConsentDeclined,
        Self::CountryNotSupported,
        Self::DeviceNotSupported,
        Self::DocumentExpired,
        Self::DocumentTypeNotSupported,
        Self::DocumentUnverifiedOther,
        Self::EmailUnverifiedOther,
        Self::EmailVerificationDeclined,
        Self::IdNumberInsufficientDocumentData,
        Self::IdNumberMismatch,
        Self::IdNumberUnverifiedOther,
        Self::PhoneUnverifiedOther,
        Self::PhoneVerificationDeclined,
        Self::SelfieDocumentMissingPhoto,
        Self::SelfieFaceMismatch,
        Self::SelfieManipulated,
        Self::SelfieUnverifiedOther,
        Self::UnderSupportedAge,
    ];

    pub fn parse(raw: &str) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|code| code.as_str() == raw)
            .unwrap_or_else(|| Self::Unknown(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Abandoned => "abandoned",
            Self::AddressMismatch => "address_mismatch",
            Self::ConsentDeclined => "consent_declined",
            Self::CountryNotSupported => "country_not_supported",
            Self::DeviceNotSupported => "device_not_supported",
            Self::DocumentExpired => "document_expired",
            Self::DocumentTypeNotSupported => "document_type_not_supported",
            Self::DocumentUnverifiedOther => "document_unverified_other",
            Self::EmailUnverifiedOther => "email_unverified_other",
            Self::EmailVerificationDeclined => "email_verification_declined",
            Self::IdNumberInsufficientDocumentData => "id_number_insufficient_document_data",
            Self::IdNumberMismatch => "id_number_mismatch",
            Self::IdNumberUnverifiedOther => "id_number_unverified_other",
            Self::PhoneUnverifiedOther => "phone_unverified_other",
            Self::PhoneVerificationDeclined => "phone_verification_declined",
            Self::SelfieDocumentMissingPhoto => "selfie_document_missing_photo",
            Self::SelfieFaceMismatch => "selfie_face_mismatch",
            Self::SelfieManipulated => "selfie_manipulated",
            Self::SelfieUnverifiedOther => "selfie_unverified_other",
            Self::UnderSupportedAge => "under_supported_age",
            Self::Unknown(raw) => raw,
        }
    }
}

impl fmt::Display for LastErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LastErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::parse(&raw))
    }
}

/// `last_error` of a session: why its last submission failed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct LastError {
    pub code: LastErrorCode,
    /// Human-readable; may name the person's document, so never logged.
    pub reason: Option<String>,
}

/// The fields of a VerificationSession the pipeline uses; the rest of the
/// payload is kept raw in the inbox.
#[derive(Clone, Deserialize)]
pub struct VerificationSession {
    pub id: SessionId,
    pub status: SessionStatus,
    /// `document`, `id_number`, `verification_flow`…; open-ended.
    #[serde(rename = "type", default)]
    pub verification_type: Option<String>,
    #[serde(default)]
    pub last_error: Option<LastError>,
    /// Set by the platform when it created the session: usually its user id.
    #[serde(default)]
    pub client_reference_id: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub last_verification_report: Option<String>,
    /// Present once the session was redacted (`{"status": "processing" | "redacted"}`).
    #[serde(default)]
    pub redaction: Option<serde_json::Value>,
}

// Debug output may reach a log line: personal fields are left out.
impl fmt::Debug for LastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LastError")
            .field("code", &self.code)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for VerificationSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationSession")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("last_error", &self.last_error)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_round_trip_and_unknown_is_data() {
        for code in LastErrorCode::KNOWN {
            assert_eq!(LastErrorCode::parse(code.as_str()), code);
        }
        assert_eq!(
            LastErrorCode::parse("brand_new_code"),
            LastErrorCode::Unknown("brand_new_code".into())
        );
    }

    #[test]
    fn session_ids_need_their_prefix() {
        assert!(SessionId::parse("vs_1Sk3Gh2eZvKYlo2CqR8tNw4P").is_ok());
        assert!(SessionId::parse("evt_1").is_err());
        assert!(SessionId::parse("vs_").is_err());
        assert!(SessionId::parse("vs_a b").is_err());
    }

    #[test]
    fn debug_output_leaves_personal_data_out() {
        let body = include_bytes!("../fixtures/evt_requires_input_document_expired.json");
        let event = crate::StripeEvent::parse(body).unwrap();
        let printed = format!("{event:?}");
        assert!(printed.contains("DocumentExpired"));
        for personal in ["user_8f14e45fceea", "has expired", "onboarding"] {
            assert!(!printed.contains(personal), "{personal} in {printed}");
        }
    }

    #[test]
    fn last_error_of_a_fixture() {
        let body = include_bytes!("../fixtures/evt_requires_input_selfie_face_mismatch.json");
        let event = crate::StripeEvent::parse(body).unwrap();
        let session = event.session();
        assert_eq!(session.status, SessionStatus::RequiresInput);
        let error = session.last_error.as_ref().unwrap();
        assert_eq!(error.code, LastErrorCode::SelfieFaceMismatch);
    }
}
