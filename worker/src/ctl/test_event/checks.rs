//! The flags of `send-test-event` and `scenario` turned into values the
//! event builder can trust, each refusal naming its flag (exit code 2).

use shared::SessionId;

use super::super::UsageError;
use super::super::text::one_line;

/// Longest subject key the worker stores (longer ones fall through to the
/// next key source, so the subject would not be the one asked for).
const MAX_SUBJECT_LEN: usize = 255;
/// Stripe's limit on `last_error.code`'s length.
const MAX_CODE_LEN: usize = 5000;
/// 9999-12-31T23:59:59Z: later `--created` values are typos.
const MAX_CREATED: i64 = 253_402_300_799;

/// `--session`: a `vs_…` id.
pub fn session(raw: &str) -> Result<String, UsageError> {
    SessionId::parse(raw)
        .map(|id| id.as_str().to_owned())
        .map_err(|error| {
            UsageError(format!(
                "--session must be a VerificationSession id such as vs_1Sk3Gh2eZvKYlo2CqR8tNw4P \
                 ({error}), found {:?}",
                one_line(Some(raw))
            ))
        })
}

/// `--subject`: the key the worker will file the person under, as given.
/// Surrounding spaces (the worker trims them, so the record would be under
/// another key), control characters and a placeholder such as
/// `[redacted]` (the worker takes it for nobody) are refused.
pub fn subject(raw: &str) -> Result<String, UsageError> {
    let placeholder = raw.len() >= 2 && raw.starts_with('[') && raw.ends_with(']');
    let fits = !raw.is_empty() && raw.len() <= MAX_SUBJECT_LEN && raw.trim() == raw;
    if !fits || placeholder || raw.chars().any(char::is_control) {
        return Err(UsageError(format!(
            "--subject must be 1 to {MAX_SUBJECT_LEN} bytes, without surrounding spaces or \
             control characters, and not a placeholder in square brackets; found {:?}",
            one_line(Some(raw))
        )));
    }
    Ok(raw.to_owned())
}

/// `--code`: any code (Stripe's list is open), but not nothing.
pub fn code(raw: &str) -> Result<String, UsageError> {
    if raw.trim().is_empty() || raw.len() > MAX_CODE_LEN {
        return Err(UsageError(format!(
            "--code must be a last_error.code such as selfie_face_mismatch (1 to {MAX_CODE_LEN} \
             bytes)"
        )));
    }
    Ok(raw.to_owned())
}

/// `--created`: Unix seconds.
pub fn created(raw: i64) -> Result<i64, UsageError> {
    if (1..=MAX_CREATED).contains(&raw) {
        Ok(raw)
    } else {
        Err(UsageError(format!(
            "--created must be Unix seconds from 1 to {MAX_CREATED}, found {raw}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_names_its_flag() {
        assert_eq!(session("vs_abc").unwrap(), "vs_abc");
        assert!(session("evt_abc").unwrap_err().0.contains("--session"));
        assert_eq!(subject("user_42").unwrap(), "user_42");
        for bad in ["", " user", "user ", "[redacted]", "a\nb", &"x".repeat(256)] {
            assert!(subject(bad).unwrap_err().0.contains("--subject"), "{bad:?}");
        }
        assert_eq!(code("brand_new_code").unwrap(), "brand_new_code");
        assert!(code(" ").unwrap_err().0.contains("--code"));
        assert_eq!(created(1_767_225_900).unwrap(), 1_767_225_900);
        assert!(created(0).unwrap_err().0.contains("--created"));
        assert!(created(-5).is_err());
    }
}
