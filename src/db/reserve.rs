//! The space kept in reserve (`storage_reserve`, migrations/*_storage_reserve.sql): filler rows
//! whose TRUNCATE gives room back on a volume too full for anything else.

use super::Error;
use sqlx::PgExecutor;

/// Bytes the reserve holds (0 before the migration that makes it).
pub async fn size(db: impl PgExecutor<'_>) -> Result<i64, Error> {
    sqlx::query_scalar("SELECT coalesce(pg_relation_size(to_regclass('storage_reserve')), 0)::bigint")
        .fetch_one(db)
        .await
        .map_err(Error::from)
}

/// Filler rows per 8 KiB page (88-byte rows with their line pointers).
const ROWS_PER_PAGE: i64 = 89;

/// Adds about `bytes` to the reserve (whole pages), in one statement.
pub async fn add(db: impl PgExecutor<'_>, bytes: i64) -> Result<(), Error> {
    let rows = (bytes + 8191) / 8192 * ROWS_PER_PAGE;
    sqlx::query("INSERT INTO storage_reserve SELECT g, g, g, g, g, g, g, g FROM generate_series(1, $1::bigint) g")
        .bind(rows)
        .execute(db)
        .await
        .map(drop)
        .map_err(Error::from)
}

/// Empties the reserve, giving its whole file back to the volume.
pub async fn release(db: impl PgExecutor<'_>) -> Result<(), Error> {
    sqlx::query("TRUNCATE storage_reserve").execute(db).await.map(drop).map_err(Error::from)
}
