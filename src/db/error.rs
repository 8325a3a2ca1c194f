//! The database layer's one error: PostgreSQL's answer (or the network's) classified once, so
//! the HTTP layer and the commands map classes, never SQLSTATE codes.

/// What went wrong with a database call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection to be had, or PostgreSQL going away or short of resources (SQLSTATE
    /// classes 08 and 53, 57P01-57P03): try again later.
    #[error("the database is unavailable: {}", describe(.0))]
    Unavailable(sqlx::Error),
    /// PostgreSQL's volume is full (SQLSTATE 53100): it answers, but writes fail until an
    /// operator makes room.
    #[error("the database's volume is full: {}", describe(.0))]
    StorageFull(sqlx::Error),
    /// A table or function this binary uses does not exist (SQLSTATE 42P01, 42883): the
    /// database lacks this version's migrations.
    #[error("{}: this database lacks this version's tables or functions; run `migrate` first", describe(.0))]
    SchemaMissing(sqlx::Error),
    /// A statement that must find a row found none.
    #[error("no such row")]
    NotFound,
    /// A unique or exclusion constraint refused the write (SQLSTATE 23505, 23P01).
    #[error("{}", describe(.0))]
    Conflict(sqlx::Error),
    /// Anything else: a bug, a damaged row, a protocol error.
    #[error("{}", describe(.0))]
    Other(sqlx::Error),
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        let code = error.as_database_error().and_then(|db| db.code()).map(|code| code.into_owned());
        match (&error, code.as_deref()) {
            (sqlx::Error::RowNotFound, _) => Self::NotFound,
            (_, Some("53100")) => Self::StorageFull(error),
            (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_), _) => {
                Self::Unavailable(error)
            }
            (_, Some(code))
                if code.starts_with("08") || code.starts_with("53") || matches!(code, "57P01" | "57P02" | "57P03") =>
            {
                Self::Unavailable(error)
            }
            (_, Some("42P01" | "42883")) => Self::SchemaMissing(error),
            (_, Some("23505" | "23P01")) => Self::Conflict(error),
            _ => Self::Other(error),
        }
    }
}

impl Error {
    /// Whether the database could not be reached or is going away.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// PostgreSQL's own message when it answered (sqlx's adds a line of PostgreSQL's source), else
/// what failed on the way.
pub(super) fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::PoolTimedOut => "no answer in time".into(),
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Tls(tls) => format!("TLS failed: {tls}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_without_sqlstate_are_classified_by_what_failed() {
        assert!(matches!(Error::from(sqlx::Error::RowNotFound), Error::NotFound));
        assert!(Error::from(sqlx::Error::PoolTimedOut).is_unavailable());
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let error = Error::from(sqlx::Error::Io(refused));
        assert!(error.is_unavailable());
        assert_eq!(error.to_string(), "the database is unavailable: connection refused");
        assert!(matches!(Error::from(sqlx::Error::Protocol("odd".into())), Error::Other(_)));
    }
}
