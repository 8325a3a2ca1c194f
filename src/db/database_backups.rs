//! The record of completed database backups (`backup-db`), and the newest of them.

use super::Error;
use sqlx::PgExecutor;
use time::OffsetDateTime;

/// Records a completed backup at `location` (a path or an s3:// URL).
pub async fn record(db: impl PgExecutor<'_>, location: &str, bytes: u64, seconds: f64) -> Result<(), Error> {
    sqlx::query("INSERT INTO database_backups (location, bytes, seconds) VALUES ($1, $2, $3)")
        .bind(location)
        .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
        .bind(seconds)
        .execute(db)
        .await
        .map(drop)
        .map_err(Error::from)
}

/// When the newest recorded backup finished; `None` when there is none (or, on a schema from
/// before the record existed, no table for it).
pub async fn last_success(db: impl PgExecutor<'_>) -> Result<Option<OffsetDateTime>, Error> {
    match sqlx::query_scalar("SELECT max(finished_at) FROM database_backups").fetch_one(db).await.map_err(Error::from) {
        Err(Error::SchemaMissing(_)) => Ok(None),
        other => other,
    }
}
