//! Why a body is not an event, in words that never quote it. serde_json's
//! messages quote the input (`invalid type: string "…", expected …`,
//! `unknown variant `…``, `unknown field `…``), and the reason travels in
//! the `x-idv-failure-reason` header of a dead letter, which operators read
//! and copy around. So the reason keeps only what comes from our code: the
//! error's class, a field name of our own schema, and the line and column.

use std::fmt;

/// Field names of the event schema ([`shared::StripeEvent`] and what it
/// holds): a `missing field` or `duplicate field` error names one of them,
/// which is our text, not the body's. Any other name is left out.
pub(super) const SCHEMA_FIELDS: [&str; 15] = [
    "id",
    "object",
    "type",
    "created",
    "livemode",
    "data",
    "status",
    "last_error",
    "code",
    "reason",
    "client_reference_id",
    "metadata",
    "last_verification_report",
    "redaction",
    "verification_type",
];

/// A parse failure described by class, field and position only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseReason {
    class: &'static str,
    field: Option<&'static str>,
    /// 1-based line and column in the body; `None` when the error did not
    /// come from reading the body's bytes.
    position: Option<(usize, usize)>,
}

impl ParseReason {
    /// Classifies `error`; `with_position` when it came from reading the
    /// body itself (line 0 means it did not).
    pub fn of(error: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let message = error.to_string();
        let (class, field) = match error.classify() {
            Category::Io => ("unreadable body", None),
            Category::Eof => ("truncated JSON", None),
            Category::Syntax => ("invalid JSON", None),
            Category::Data => data_class(&message),
        };
        let position = (error.line() > 0).then(|| (error.line(), error.column()));
        Self {
            class,
            field,
            position,
        }
    }
}

/// The class of a data error from the start of serde's message, and the
/// field when it names one of [`SCHEMA_FIELDS`]. Anything unrecognised
/// (a custom message of some type's `Deserialize`) is "an invalid value".
fn data_class(message: &str) -> (&'static str, Option<&'static str>) {
    let named = |rest: &str| {
        let name = rest.strip_prefix('`')?.split('`').next()?;
        SCHEMA_FIELDS.iter().copied().find(|field| *field == name)
    };
    if let Some(rest) = message.strip_prefix("missing field ") {
        ("missing field", named(rest))
    } else if let Some(rest) = message.strip_prefix("duplicate field ") {
        ("duplicate field", named(rest))
    } else if message.starts_with("unknown field ") {
        ("unknown field", None)
    } else if message.starts_with("invalid type") {
        ("a value of the wrong type", None)
    } else if message.starts_with("unknown variant") {
        ("an unknown variant", None)
    } else if message.starts_with("invalid length") {
        ("a sequence or map of the wrong length", None)
    } else {
        ("an invalid value", None)
    }
}

impl fmt::Display for ParseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.class)?;
        if let Some(field) = self.field {
            write!(f, " `{field}`")?;
        }
        if let Some((line, column)) = self.position {
            write!(f, " at line {line} column {column}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(body: &str) -> String {
        let error = serde_json::from_str::<shared::StripeEvent>(body).unwrap_err();
        ParseReason::of(&error).to_string()
    }

    #[test]
    fn each_kind_is_a_class_and_a_position() {
        assert_eq!(reason("{not json"), "invalid JSON at line 1 column 2");
        assert_eq!(reason("{\"id\":"), "truncated JSON at line 1 column 6");
        assert_eq!(
            reason(r#"{"id":"evt_1","type":"t","created":1}"#),
            "missing field `data` at line 1 column 37"
        );
        assert_eq!(
            reason(r#"{"id":"evt_1","type":"t","created":"4111111111111111"}"#),
            "a value of the wrong type at line 1 column 53"
        );
        assert_eq!(
            reason(r#"{"id":"SSN-123-45-6789"}"#),
            "an invalid value at line 1 column 24"
        );
        let status = r#"{"id":"evt_1","type":"t","created":1,
            "data":{"object":{"id":"vs_1","status":"SSN-123-45-6789"}}}"#;
        assert_eq!(reason(status), "an unknown variant at line 2 column 68");
    }
}
