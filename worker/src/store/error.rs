//! What a database error means, decided in one place: either the database
//! is unavailable (retry the whole batch later, never spend the message's
//! attempts) or it refused this data (a message failure).

use std::fmt;

/// An error from applying a batch.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Unreachable, restarting, out of resources, a lock or serialisation
    /// conflict, or a schema problem an operator must fix: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(Unavailable),
    /// The data violates a constraint: retrying the same message cannot help.
    /// The text is ours (the SQLSTATE, never the server's message, which
    /// can quote the refused value): it becomes a dead letter's reason.
    #[error("database refused the data: {0}")]
    Refused(String),
}

/// Why the database could not be used; carries the driver's error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// SQLSTATE classes caused by the data itself: data exceptions (22) and
/// integrity constraint violations (23). Everything else (connection,
/// resources, conflicts, undefined tables…) is the infrastructure's fault.
fn refused_by_data(code: &str) -> bool {
    code.starts_with("22") || code.starts_with("23")
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        match error.as_db_error() {
            Some(db) if refused_by_data(db.code().code()) => {
                Self::Refused(format!("SQLSTATE {}", db.code().code()))
            }
            _ => Self::Unavailable(Unavailable(error_chain(&error))),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(error) => error.into(),
            other => Self::Unavailable(Unavailable(error_chain(&other))),
        }
    }
}

/// The error and its sources on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_data_errors_are_refusals() {
        assert!(refused_by_data("23505"));
        assert!(refused_by_data("22001"));
        assert!(!refused_by_data("40P01"));
        assert!(!refused_by_data("08006"));
        assert!(!refused_by_data("42P01"));
        assert!(!refused_by_data("57P01"));
    }
}
