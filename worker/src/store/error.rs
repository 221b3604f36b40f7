//! What a database error means, decided in one place: either the database
//! is unavailable (retry the whole batch later, never spend the message's
//! attempts) or it refused this data (a message failure).

/// An error from applying a batch.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Unreachable, restarting, out of resources, a lock or serialisation
    /// conflict, or a schema problem an operator must fix: retry later.
    #[error("database unavailable")]
    Unavailable(#[source] Unavailable),
    /// The data violates a constraint: retrying the same message cannot help.
    /// The text is ours (the SQLSTATE, never the server's message, which
    /// can quote the refused value): it becomes a dead letter's reason.
    #[error("database refused the data: {0}")]
    Refused(String),
}

/// Why the database could not be used, with the driver's error as its
/// source (log it with [`error_chain`] to see the whole cause).
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The server or the connection failed a statement.
    #[error("the database failed a statement")]
    Database(#[source] tokio_postgres::Error),
    /// No connection could be had (timeout, connect failure, pool closed).
    #[error("no database connection")]
    Pool(#[source] deadpool_postgres::PoolError),
    /// The batch started again a few times in a row because rows it read
    /// changed before it could lock them (a subject deleted by the
    /// transaction it waited for, an event inserted concurrently): nothing
    /// is wrong with the events, so they are retried with backoff, never
    /// failed.
    #[error("the rows of the batch kept changing under it; retrying later")]
    KeptChanging,
}

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
            _ => Self::Unavailable(Unavailable::Database(error)),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(error) => error.into(),
            other => Self::Unavailable(Unavailable::Pool(other)),
        }
    }
}

/// The error and its sources on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
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
