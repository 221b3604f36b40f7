//! `last_error.reason` as Stripe writes it for each documented code, so a
//! test `requires_input` event carries the text a real one would. The two
//! codes of the fixtures use the fixtures' exact text; the others follow
//! Stripe's verification-checks pages. Nothing decides on these texts (the
//! worker stores the reason and never shows it), so a wording Stripe
//! changes later only makes a test event a little less lifelike.

/// Stripe's reason text for `code`, or `None` for a code Stripe does not
/// document (its `reason` is nullable; an unknown code gets none).
pub fn stripe_reason(code: &str) -> Option<&'static str> {
    Some(match code {
        // Session-level: the person or the session, not a document.
        "abandoned" => "The user abandoned the verification flow before submitting.",
        "consent_declined" => "The user declined to be verified by Stripe.",
        "country_not_supported" => "Stripe doesn't verify users in the provided country.",
        "device_not_supported" => {
            "The user's device can't complete the verification (it has no usable camera)."
        }
        "under_supported_age" => "Stripe doesn't verify users under the age of majority.",
        // Document checks.
        "document_expired" => "The provided identity document has expired.",
        "document_type_not_supported" => {
            "The provided identity document isn't one of the session's allowed document types."
        }
        "document_unverified_other" => "Stripe couldn't verify the provided identity document.",
        // Selfie checks.
        "selfie_document_missing_photo" => {
            "The provided identity document didn't contain a picture of a face."
        }
        "selfie_face_mismatch" => "The captured face image didn’t match with the document's face.",
        "selfie_manipulated" => "The captured face image was manipulated.",
        "selfie_unverified_other" => "Stripe couldn't verify the provided selfie.",
        // ID number checks.
        "id_number_insufficient_document_data" => {
            "The provided document didn't contain enough data to match against the ID number."
        }
        "id_number_mismatch" => {
            "The information provided couldn't be matched against global databases."
        }
        "id_number_unverified_other" => "Stripe couldn't verify the provided ID number.",
        // Invite-only checks: address, e-mail, phone.
        "address_mismatch" => {
            "The provided address couldn't be matched against the user's records."
        }
        "email_unverified_other" => "Stripe couldn't verify the provided email address.",
        "email_verification_declined" => "The user declined to verify their email address.",
        "phone_unverified_other" => "Stripe couldn't verify the provided phone number.",
        "phone_verification_declined" => "The user declined to verify their phone number.",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::LastErrorCode;

    #[test]
    fn every_documented_code_has_a_reason_and_unknown_ones_none() {
        for code in LastErrorCode::KNOWN {
            assert!(stripe_reason(code.as_str()).is_some(), "{code}");
        }
        assert_eq!(stripe_reason("brand_new_code"), None);
    }

    #[test]
    fn the_fixtures_codes_have_the_fixtures_text() {
        for (fixture, code) in [
            (
                include_str!(
                    "../../../../shared/fixtures/evt_requires_input_document_expired.json"
                ),
                "document_expired",
            ),
            (
                include_str!(
                    "../../../../shared/fixtures/evt_requires_input_selfie_face_mismatch.json"
                ),
                "selfie_face_mismatch",
            ),
        ] {
            let event: serde_json::Value = serde_json::from_str(fixture).unwrap();
            let error = &event["data"]["object"]["last_error"];
            assert_eq!(error["code"], code);
            assert_eq!(error["reason"].as_str(), stripe_reason(code));
        }
    }
}
