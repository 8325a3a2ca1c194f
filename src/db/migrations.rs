//! The embedded migrations: applying them, and what a database has applied.

use serde::Serialize;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

/// Every migration in `migrations/`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// The newest schema version this binary knows.
pub fn latest_known_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// A migration the database has applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// Version number (the file name's prefix).
    pub version: i64,
    /// What it does.
    pub description: String,
    /// When it was applied.
    #[serde(with = "time::serde::rfc3339")]
    pub applied_at: OffsetDateTime,
}

/// A migration this binary has that the database lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pending {
    /// Version number.
    pub version: i64,
    /// What it does.
    pub description: String,
}

/// Applied and pending migrations of one database (as `migrate status --json` prints it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Applied, oldest first; may include versions newer than this binary's.
    pub applied: Vec<Applied>,
    /// Known to this binary but not applied, oldest first.
    pub pending: Vec<Pending>,
}

/// Applies pending migrations. Takes PostgreSQL's advisory lock, so concurrent runs apply
/// each migration once; a schema newer than this binary's is left as it is.
pub async fn apply(pool: &PgPool) -> Result<(), MigrateError> {
    let mut migrator = sqlx::migrate!();
    // A newer schema comes from a deploy in progress; the old binary must not fail on it.
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// What the database has applied and what this binary would still apply.
pub async fn status(conn: &mut PgConnection) -> Result<Status, sqlx::Error> {
    let rows: Vec<(i64, String, OffsetDateTime)> = match sqlx::query_as(
        "SELECT version, description, installed_on FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(conn)
    .await
    {
        Err(error) if is_undefined_table(&error) => Vec::new(),
        other => other?,
    };
    let applied: Vec<Applied> = rows
        .into_iter()
        .map(|(version, description, applied_at)| Applied { version, description, applied_at })
        .collect();
    let pending = MIGRATOR
        .iter()
        .filter(|known| !applied.iter().any(|done| done.version == known.version))
        .map(|known| Pending { version: known.version, description: known.description.to_string() })
        .collect();
    Ok(Status { applied, pending })
}

/// The oldest schema a binary may know and serve on all of these (newer) migrations, from
/// `schema_compatibility`; `None` when one of them has no row there (so none is known to be
/// safe).
pub async fn oldest_compatible(conn: &mut PgConnection, versions: &[i64]) -> Result<Option<i64>, sqlx::Error> {
    let (listed, oldest): (i64, Option<i64>) = match sqlx::query_as(
        "SELECT count(*), max(oldest_compatible) FROM schema_compatibility WHERE version = ANY($1)",
    )
    .bind(versions)
    .fetch_one(conn)
    .await
    {
        Err(error) if is_undefined_table(&error) => (0, None),
        other => other?,
    };
    Ok(oldest.filter(|_| usize::try_from(listed).is_ok_and(|listed| listed == versions.len())))
}

/// Whether a query failed on a table the schema does not have (yet).
pub(crate) fn is_undefined_table(error: &sqlx::Error) -> bool {
    error.as_database_error().and_then(|db| db.code()).is_some_and(|code| code == "42P01")
}
