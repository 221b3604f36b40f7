//! What went wrong, in plain words, for each `last_error.code` Stripe
//! sends (`{{what_went_wrong}}`): a fixed table, never Stripe's `reason`
//! text, which may quote the person's own data. A code this table does not
//! know gets its family's words (`document_…`, `selfie_…`, `id_number_…`,
//! `email_…`, `phone_…`), else words that fit any failure.

/// Plain words for a failed submission with `code`: what went wrong and
/// what to do about it.
pub fn what_went_wrong(code: &str) -> &'static str {
    match code {
        "abandoned" => {
            "The verification was not finished. You can start again whenever you are ready."
        }
        "consent_declined" => "The verification needs your consent to check your photos.",
        "under_supported_age" | "country_not_supported" => {
            "We are not able to verify your identity online this way."
        }
        "device_not_supported" => {
            "The device you used cannot take the photos we need. Please try again on \
             another device, such as a recent phone with a camera."
        }
        "document_expired" => {
            "The identity document you used has expired. Please try again with a \
             document that is still valid."
        }
        "document_type_not_supported" => {
            "We cannot accept that type of document. Please try again with another \
             kind of identity document, such as a passport or an ID card."
        }
        "selfie_document_missing_photo" => {
            "The document you used has no photo of your face to compare with your \
             selfie. Please try again with a document that shows your photo."
        }
        "selfie_face_mismatch" => {
            "Your selfie did not clearly match the photo on your document. Please take \
             a new selfie in good light, facing the camera."
        }
        "selfie_manipulated" => {
            "We could not accept your selfie. Please take a new selfie with your camera, \
             without filters or edits."
        }
        "id_number_insufficient_document_data" => {
            "We could not confirm your ID number from the records available. Please \
             check the number and try again, or use an identity document instead."
        }
        "address_mismatch" => {
            "The address you entered could not be confirmed. Please check it and try again."
        }
        "email_verification_declined" => {
            "The e-mail check was not completed. Please try again and follow the link \
             or code we send you."
        }
        "phone_verification_declined" => {
            "The phone check was not completed. Please try again and enter the code we \
             send you."
        }
        _ => by_family(code),
    }
}

/// The words for a code of a family the table has no entry for.
fn by_family(code: &str) -> &'static str {
    if code.starts_with("document_") {
        "We could not check your identity document. Please try again with the whole \
         document in the photo, in good light and without glare."
    } else if code.starts_with("selfie_") {
        "We could not check your selfie. Please take it again in good light, facing \
         the camera."
    } else if code.starts_with("id_number_") {
        "We could not verify the ID number you entered. Please check it and try again."
    } else if code.starts_with("email_") {
        "We could not verify your e-mail address. Please check it and try again."
    } else if code.starts_with("phone_") {
        "We could not verify your phone number. Please check it and try again."
    } else {
        "We could not complete the check. Please try again."
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::LastErrorCode;

    #[test]
    fn every_code_stripe_documents_has_words_of_its_family() {
        for code in LastErrorCode::KNOWN {
            let words = what_went_wrong(code.as_str());
            assert!(words.ends_with('.'), "{code:?}: {words}");
            assert!(!words.contains("  "), "{code:?}: {words}");
        }
        assert!(what_went_wrong("document_unverified_other").contains("document"));
        assert!(what_went_wrong("selfie_unverified_other").contains("selfie"));
        assert!(what_went_wrong("id_number_mismatch").contains("ID number"));
        assert!(what_went_wrong("phone_unverified_other").contains("phone"));
        assert!(what_went_wrong("email_unverified_other").contains("e-mail"));
        assert!(what_went_wrong("document_expired").contains("expired"));
    }

    #[test]
    fn a_new_code_gets_its_familys_words_or_general_ones() {
        assert_eq!(
            what_went_wrong("document_too_blurry"),
            what_went_wrong("document_unverified_other")
        );
        assert_eq!(
            what_went_wrong("brand_new_code"),
            "We could not complete the check. Please try again."
        );
    }
}
