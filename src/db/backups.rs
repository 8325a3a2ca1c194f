//! Backups: storing (with dedupe, retention and idempotency in one call), listing,
//! fetching and deleting. Every query is scoped to its user, so another user's backup is
//! simply not found.

use sqlx::{PgExecutor, PgPool};
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

/// What an upload came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    /// Stored now, or equal to the latest backup (see [`Stored::deduplicated`]).
    Stored(Stored),
    /// The idempotency key was used before with the same document: its first answer.
    Replayed(Stored),
    /// The idempotency key was used before with another document.
    KeyConflict,
    /// The user no longer exists (deleted while the upload was on its way).
    NoUser,
}

#[derive(sqlx::FromRow)]
struct Outcome {
    outcome: String,
    #[sqlx(flatten)]
    stored: Stored,
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

/// Stores a document unless it equals the user's latest backup, deletes the user's backups
/// beyond the newest `keep`, and remembers the idempotency key; or answers a repeated key.
/// One call of the `store_backup` function (migrations/*_store_backup_function.sql): one
/// round trip, its own transaction, serialised per user by a lock on the user's row.
pub async fn store(pool: &PgPool, new: NewBackup<'_>) -> Result<Upload, sqlx::Error> {
    let size = i32::try_from(new.document.len()).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let keep = i32::try_from(new.keep).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let mut conn = pool.acquire().await?;
    let row: Option<Outcome> = sqlx::query_as(
        "SELECT outcome, id, created_at, size_bytes, sha256, deduplicated \
         FROM store_backup($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new.user_id)
    .bind(new.id)
    .bind(size)
    .bind(new.sha256.as_slice())
    .bind(new.document)
    .bind(keep)
    .bind(new.idempotency_key)
    .fetch_optional(&mut *conn)
    .await?;
    super::release_large_buffers(&mut conn, new.document.len());
    Ok(match row {
        None => Upload::NoUser,
        Some(Outcome { outcome, stored }) => match outcome.as_str() {
            "stored" => Upload::Stored(stored),
            "replayed" => Upload::Replayed(stored),
            _ => Upload::KeyConflict,
        },
    })
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// Its metadata.
    pub meta: BackupMeta,
    /// The document, byte for byte as uploaded.
    pub document: String,
}

/// What a fetch found of a backup that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The backup with its document.
    Backup(Backup),
    /// The backup is larger than the caller had room for: its metadata only.
    TooLarge(BackupMeta),
}

/// The owner of a token, and one of their backups with its document if it exists and fits.
#[derive(sqlx::FromRow)]
struct OwnerAndBackup {
    id: Option<Uuid>,
    created_at: Option<OffsetDateTime>,
    size_bytes: Option<i32>,
    sha256: Option<Vec<u8>>,
    document: Option<String>,
}

/// Finds the user a token belongs to and one of their backups, in one statement (a restore
/// is one round trip to the database, not two). The document comes along only when it is at
/// most `room` bytes, so the caller holds memory for what it reads *before* reading it.
/// `None` when no user has the token; otherwise the backup, if there is one.
pub async fn fetch(
    pool: &PgPool,
    token_hash: &[u8; 32],
    which: Which,
    room: usize,
) -> Result<Option<Option<Fetched>>, sqlx::Error> {
    let room = i32::try_from(room).unwrap_or(i32::MAX);
    let mut conn = pool.acquire().await?;
    let row: Option<OwnerAndBackup> = match which {
        Which::Latest => sqlx::query_as(
            "SELECT b.id, b.created_at, b.size_bytes, b.sha256, \
                    CASE WHEN b.size_bytes <= $2 THEN b.document END AS document FROM users u \
             LEFT JOIN LATERAL (SELECT id, created_at, size_bytes, sha256, document FROM backups \
                                WHERE user_id = u.id ORDER BY created_at DESC, id DESC LIMIT 1) b ON true \
             WHERE u.token_hash = $1",
        )
        .bind(token_hash.as_slice())
        .bind(room),
        Which::Id(id) => sqlx::query_as(
            "SELECT b.id, b.created_at, b.size_bytes, b.sha256, \
                    CASE WHEN b.size_bytes <= $2 THEN b.document END AS document FROM users u \
             LEFT JOIN backups b ON b.user_id = u.id AND b.id = $3 \
             WHERE u.token_hash = $1",
        )
        .bind(token_hash.as_slice())
        .bind(room)
        .bind(id),
    }
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let fetched = match (row.id, row.created_at, row.size_bytes, row.sha256) {
        (Some(id), Some(created_at), Some(size_bytes), Some(sha256)) => {
            let meta = BackupMeta { id, created_at, size_bytes, sha256 };
            Some(match row.document {
                Some(document) => Fetched::Backup(Backup { meta, document }),
                None => Fetched::TooLarge(meta),
            })
        }
        _ => None,
    };
    if let Some(Fetched::Backup(backup)) = &fetched {
        super::release_large_buffers(&mut conn, backup.document.len());
    }
    Ok(Some(fetched))
}

/// Deletes one of the user's backups. Returns whether it existed.
pub async fn delete(db: impl PgExecutor<'_>, user_id: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let result =
        sqlx::query("DELETE FROM backups WHERE user_id = $1 AND id = $2").bind(user_id).bind(id).execute(db).await?;
    Ok(result.rows_affected() > 0)
}
