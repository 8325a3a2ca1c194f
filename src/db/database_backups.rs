//! The record of completed database backups (`backup-db`), and the newest of them.

use sqlx::PgExecutor;
use time::OffsetDateTime;

/// Records a completed backup at `location` (a path or an s3:// URL).
pub async fn record(db: impl PgExecutor<'_>, location: &str, bytes: u64, seconds: f64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO database_backups (location, bytes, seconds) VALUES ($1, $2, $3)")
        .bind(location)
        .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
        .bind(seconds)
        .execute(db)
        .await
        .map(drop)
}

/// When the newest recorded backup finished; `None` when there is none (or, on a schema from
/// before the record existed, no table for it).
pub async fn last_success(db: impl PgExecutor<'_>) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    match sqlx::query_scalar("SELECT max(finished_at) FROM database_backups").fetch_one(db).await {
        Err(error) if super::migrations::is_undefined_table(&error) => Ok(None),
        other => other,
    }
}
