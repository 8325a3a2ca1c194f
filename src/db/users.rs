//! Accounts: created with a token hash, found by it, summarised, deleted.

use super::Error;
use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

/// An account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    /// The account id, as the API returns it (`user_id`).
    pub id: Uuid,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// A user's backups, in aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct BackupTotals {
    /// How many backups.
    pub backup_count: i64,
    /// Their documents' bytes together.
    pub total_bytes: i64,
    /// The newest backup's time.
    pub latest_backup_at: Option<OffsetDateTime>,
}

/// Creates an account whose token hashes to `token_hash`.
pub async fn create(db: impl PgExecutor<'_>, id: Uuid, token_hash: &[u8; 32]) -> Result<User, Error> {
    sqlx::query_as("INSERT INTO users (id, token_hash) VALUES ($1, $2) RETURNING id, created_at")
        .bind(id)
        .bind(token_hash.as_slice())
        .fetch_one(db)
        .await
        .map_err(Error::from)
}

/// The account a token belongs to.
pub async fn find_by_token_hash(db: impl PgExecutor<'_>, token_hash: &[u8; 32]) -> Result<Option<User>, Error> {
    sqlx::query_as("SELECT id, created_at FROM users WHERE token_hash = $1")
        .bind(token_hash.as_slice())
        .fetch_optional(db)
        .await
        .map_err(Error::from)
}

/// Counts and sizes of a user's backups.
pub async fn summary(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<BackupTotals, Error> {
    sqlx::query_as(
        "SELECT count(*) AS backup_count, coalesce(sum(size_bytes), 0)::bigint AS total_bytes, \
                max(created_at) AS latest_backup_at \
         FROM backups WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_one(db)
    .await
    .map_err(Error::from)
}

/// Deletes an account with everything of it: backups and idempotency keys go with it through
/// `ON DELETE CASCADE`, in this one statement. Returns whether it existed.
pub async fn delete(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<bool, Error> {
    let result = sqlx::query("DELETE FROM users WHERE id = $1").bind(user_id).execute(db).await?;
    Ok(result.rows_affected() > 0)
}
