//! Backups: storing (with dedupe, retention and idempotency in one statement), listing,
//! fetching and deleting. Every query is scoped to its user, so another user's backup is
//! simply not found.

use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// What is known of a backup besides its document.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BackupMeta {
    /// Its id.
    pub id: Uuid,
    /// When it was stored.
    pub created_at: OffsetDateTime,
    /// The document's length in bytes.
    pub size_bytes: i32,
    /// SHA-256 of the document.
    pub sha256: Vec<u8>,
}

/// The outcome of an upload.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Stored {
    /// The backup that holds the document.
    #[sqlx(flatten)]
    pub meta: BackupMeta,
    /// Whether the document equalled the latest backup, so nothing new was stored.
    pub deduplicated: bool,
}

/// An earlier upload made with the same idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EarlierUpload {
    /// SHA-256 of the earlier document.
    pub request_sha256: Vec<u8>,
    /// What it was answered.
    #[sqlx(flatten)]
    pub stored: Stored,
}

/// A document to store.
#[derive(Debug, Clone, Copy)]
pub struct NewBackup<'a> {
    /// Id for the new backup.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// The document, as uploaded (decoded).
    pub document: &'a str,
    /// Its SHA-256.
    pub sha256: &'a [u8; 32],
    /// Backups to keep for the user, this one included.
    pub keep: u32,
    /// The request's `Idempotency-Key`, remembered with the outcome.
    pub idempotency_key: Option<&'a str>,
}

/// The earlier upload under `key`, if any. Call with the user locked (see
/// [`crate::db::users::lock`]), so no concurrent upload can be adding it.
pub async fn earlier_upload(
    conn: &mut PgConnection,
    user_id: Uuid,
    key: &str,
) -> Result<Option<EarlierUpload>, sqlx::Error> {
    sqlx::query_as(
        "SELECT request_sha256, backup_id AS id, backup_created_at AS created_at, size_bytes, sha256, deduplicated \
         FROM idempotency_keys WHERE user_id = $1 AND key = $2",
    )
    .bind(user_id)
    .bind(key)
    .fetch_optional(conn)
    .await
}

/// Stores a document unless it equals the user's latest backup; then deletes the user's
/// backups beyond the newest `keep` and remembers the idempotency key, all in one statement.
/// Call with the user locked, inside a transaction.
pub async fn store(conn: &mut PgConnection, new: NewBackup<'_>) -> Result<Stored, sqlx::Error> {
    let size = i32::try_from(new.document.len()).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    // Data-modifying CTEs all see the table as it was before the statement, so `pruned`
    // keeps keep - 1 of the existing backups: the new one is the keep-th.
    sqlx::query_as(
        "WITH latest AS ( \
             SELECT id, created_at, size_bytes, sha256 FROM backups \
             WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1 \
         ), inserted AS ( \
             INSERT INTO backups (id, user_id, size_bytes, sha256, document) \
             SELECT $2, $1, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM latest WHERE sha256 = $4) \
             RETURNING id, created_at, size_bytes, sha256 \
         ), pruned AS ( \
             DELETE FROM backups WHERE EXISTS (SELECT 1 FROM inserted) AND id IN ( \
                 SELECT id FROM backups WHERE user_id = $1 \
                 ORDER BY created_at DESC, id DESC OFFSET $6 - 1) \
         ), outcome AS ( \
             SELECT id, created_at, size_bytes, sha256, false AS deduplicated FROM inserted \
             UNION ALL \
             SELECT id, created_at, size_bytes, sha256, true FROM latest WHERE sha256 = $4 \
         ), remembered AS ( \
             INSERT INTO idempotency_keys \
                 (user_id, key, request_sha256, backup_id, backup_created_at, size_bytes, sha256, deduplicated) \
             SELECT $1, $7, $4, id, created_at, size_bytes, sha256, deduplicated \
             FROM outcome WHERE $7::text IS NOT NULL \
         ), expired AS ( \
             DELETE FROM idempotency_keys \
             WHERE user_id = $1 AND created_at < now() - interval '24 hours' AND key IS DISTINCT FROM $7 \
         ) \
         SELECT id, created_at, size_bytes, sha256, deduplicated FROM outcome",
    )
    .bind(new.user_id)
    .bind(new.id)
    .bind(size)
    .bind(new.sha256.as_slice())
    .bind(new.document)
    .bind(i64::from(new.keep))
    .bind(new.idempotency_key)
    .fetch_one(conn)
    .await
}

/// A position in a user's list: the last backup of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct After {
    /// Its time.
    pub created_at: OffsetDateTime,
    /// Its id (breaks ties).
    pub id: Uuid,
}

/// Up to `limit` of the user's backups, newest first, after `after`.
pub async fn list(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    after: Option<After>,
    limit: i64,
) -> Result<Vec<BackupMeta>, sqlx::Error> {
    // With no cursor, start past the newest possible key; one query shape keeps the index scan.
    let after = after
        .unwrap_or(After { created_at: OffsetDateTime::now_utc() + time::Duration::days(365_000), id: Uuid::max() });
    sqlx::query_as(
        "SELECT id, created_at, size_bytes, sha256 FROM backups \
         WHERE user_id = $1 AND (created_at, id) < ($2, $3) \
         ORDER BY created_at DESC, id DESC LIMIT $4",
    )
    .bind(user_id)
    .bind(after.created_at)
    .bind(after.id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Which backup to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The newest.
    Latest,
    /// This one.
    Id(Uuid),
}

/// A backup with its document.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Backup {
    /// Its metadata.
    #[sqlx(flatten)]
    pub meta: BackupMeta,
    /// The document, byte for byte as uploaded.
    pub document: String,
}

/// Fetches one of the user's backups with its document.
pub async fn fetch(db: impl PgExecutor<'_>, user_id: Uuid, which: Which) -> Result<Option<Backup>, sqlx::Error> {
    match which {
        Which::Latest => sqlx::query_as(
            "SELECT id, created_at, size_bytes, sha256, document FROM backups \
             WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(user_id),
        Which::Id(id) => sqlx::query_as(
            "SELECT id, created_at, size_bytes, sha256, document FROM backups WHERE user_id = $1 AND id = $2",
        )
        .bind(user_id)
        .bind(id),
    }
    .fetch_optional(db)
    .await
}

/// Deletes one of the user's backups. Returns whether it existed.
pub async fn delete(db: impl PgExecutor<'_>, user_id: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let result =
        sqlx::query("DELETE FROM backups WHERE user_id = $1 AND id = $2").bind(user_id).bind(id).execute(db).await?;
    Ok(result.rows_affected() > 0)
}
