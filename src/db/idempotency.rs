//! Idempotency keys' SQL: the sweep of expired ones. (Replay and conflict are answered inside
//! `store_backup_v4`, under the user's lock; the lifetime is set in src/backups/idempotency.rs.)

use std::time::Duration;

use super::Error;
use sqlx::PgExecutor;

/// Deletes up to `batch` keys remembered longer than `lifetime`, oldest first, through the
/// `created_at` index; returns how many went. Keys of users who never upload again go too.
pub async fn delete_expired(db: impl PgExecutor<'_>, lifetime: Duration, batch: i64) -> Result<u64, Error> {
    let seconds = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
    let deleted = sqlx::query(
        "DELETE FROM idempotency_keys WHERE (user_id, key) IN ( \
             SELECT user_id, key FROM idempotency_keys \
             WHERE created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2)",
    )
    .bind(seconds as f64)
    .bind(batch)
    .execute(db)
    .await?;
    Ok(deleted.rows_affected())
}
