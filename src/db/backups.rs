//! The backups' SQL: storing (one call of `store_backup_v4`), listing, fetching and deleting.
//! Every query is scoped to its user, so another user's backup is simply not found. The rules
//! (what to send, when to try again, the policy) are the backups service's (src/backups/).

use std::collections::HashSet;

use super::Error;
use sqlx::{PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// What is known of a backup besides its document.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BackupMeta {
    /// The backup id, as the API returns it (`backup_id`).
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

/// What `store_backup_v4` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Stored now, or equal to the latest backup (see [`Stored::deduplicated`]).
    Stored(Stored),
    /// The idempotency key was stored before with the same document: its first outcome.
    Replayed(Stored),
    /// The idempotency key was stored before with another document.
    KeyConflict,
    /// A chunk named but not sent is not stored (freed meanwhile), or does not hash to its name
    /// (damaged): nothing was written.
    MissingChunks,
    /// The user does not exist (deleted while the upload was on its way).
    NoUser,
}

/// A store's outcome, and how many stored chunks differed from the bytes sent under their
/// hash and were healed from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreResult {
    /// What the store came to.
    pub outcome: StoreOutcome,
    /// Damaged chunks healed.
    pub healed: i32,
}

/// A row of `store_backup_v4`: the backup's columns are null for the `missing` outcome.
#[derive(sqlx::FromRow)]
struct Row {
    outcome: String,
    id: Option<Uuid>,
    created_at: Option<OffsetDateTime>,
    size_bytes: Option<i32>,
    sha256: Option<Vec<u8>>,
    deduplicated: Option<bool>,
    healed: i32,
}

impl Row {
    fn stored(self) -> Result<Stored, Error> {
        match (self.id, self.created_at, self.size_bytes, self.sha256, self.deduplicated) {
            (Some(id), Some(created_at), Some(size_bytes), Some(sha256), Some(deduplicated)) => {
                Ok(Stored { meta: BackupMeta { id, created_at, size_bytes, sha256 }, deduplicated })
            }
            _ => Err(Error::Other(sqlx::Error::Protocol(format!(
                "store_backup_v4's {} outcome names no backup",
                self.outcome
            )))),
        }
    }

    fn into_result(self) -> Result<StoreResult, Error> {
        let healed = self.healed;
        let outcome = match self.outcome.as_str() {
            "stored" => StoreOutcome::Stored(self.stored()?),
            "replayed" => StoreOutcome::Replayed(self.stored()?),
            "conflict" => StoreOutcome::KeyConflict,
            "missing" => StoreOutcome::MissingChunks,
            other => return Err(Error::Other(sqlx::Error::Protocol(format!("store_backup_v4 answered {other:?}")))),
        };
        Ok(StoreResult { outcome, healed })
    }
}

/// A document to store, named by its chunks.
#[derive(Debug, Clone, Copy)]
pub struct NewBackup<'a> {
    /// Id for the new backup.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// The document's length in bytes.
    pub size_bytes: i32,
    /// Its SHA-256.
    pub sha256: &'a [u8; 32],
    /// The SHA-256 of each of its chunks, in order.
    pub chunks: &'a [&'a [u8]],
    /// The chunks sent (those the user has not stored, each once): their hashes...
    pub new_hashes: &'a [&'a [u8]],
    /// ...and their text, in the same order.
    pub new_data: &'a [&'a str],
    /// Backups to keep for the user, this one included.
    pub keep: i32,
    /// The request's `Idempotency-Key`, remembered with the outcome.
    pub idempotency_key: Option<&'a str>,
}

/// Which of these chunks (by SHA-256) the user has stored, in one statement.
pub async fn stored_chunks(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    hashes: &[&[u8]],
) -> Result<HashSet<[u8; 32]>, Error> {
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT sha256 FROM chunks WHERE user_id = $1 AND sha256 = ANY($2)")
        .bind(user_id)
        .bind(hashes)
        .fetch_all(db)
        .await?;
    Ok(stored.into_iter().filter_map(|hash| hash.try_into().ok()).collect())
}

/// Stores a document by calling `store_backup_v4` (src/db/sql/store_backup_v4.sql), its own
/// transaction, serialised per user by a lock on the user's row: the user lock, the key's
/// replay, healing, dedupe against the latest backup, the insert, retention and remembering the
/// key, in one round trip.
pub async fn store(pool: &PgPool, new: &NewBackup<'_>) -> Result<StoreResult, Error> {
    let sent = new.new_data.iter().map(|data| data.len()).sum();
    let mut conn = pool.acquire().await?;
    let row: Option<Row> = sqlx::query_as(
        "SELECT outcome, id, created_at, size_bytes, sha256, deduplicated, healed \
         FROM store_backup_v4($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(new.user_id)
    .bind(new.id)
    .bind(new.size_bytes)
    .bind(new.sha256.as_slice())
    .bind(new.chunks)
    .bind(new.new_hashes)
    .bind(new.new_data)
    .bind(new.keep)
    .bind(new.idempotency_key)
    .fetch_optional(&mut *conn)
    .await?;
    super::release_large_buffers(&mut conn, sent);
    match row {
        None => Ok(StoreResult { outcome: StoreOutcome::NoUser, healed: 0 }),
        Some(row) => row.into_result(),
    }
}

/// A position in a user's list: the last backup of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct After {
    /// When that backup was stored.
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
) -> Result<Vec<BackupMeta>, Error> {
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
    .map_err(Error::from)
}

/// Which backup to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The user's newest backup.
    Latest,
    /// This one.
    Id(Uuid),
}

/// A backup with its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// Id, owner, time, size and hash.
    pub meta: BackupMeta,
    /// The document's chunks in order: together, the document as stored. The caller checks
    /// them against [`BackupMeta::sha256`] before trusting them.
    pub chunks: Vec<String>,
}

/// What a fetch found of a backup that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The backup with its document.
    Backup(Backup),
    /// The backup is larger than the caller had room for: its metadata only.
    TooLarge(BackupMeta),
}

/// The owner of a token, one of their backups, and one of its chunks if it fits: a row per
/// chunk, in order.
#[derive(sqlx::FromRow)]
struct OwnerBackupChunk {
    id: Option<Uuid>,
    created_at: Option<OffsetDateTime>,
    size_bytes: Option<i32>,
    sha256: Option<Vec<u8>>,
    data: Option<String>,
}

/// The statement of a fetch, with `$backup` joining the backup `b` to the token's user `u`.
macro_rules! fetch_sql {
    ($backup:literal) => {
        concat!(
            "SELECT b.id, b.created_at, b.size_bytes, b.sha256, c.data FROM users u ",
            $backup,
            " LEFT JOIN LATERAL (SELECT c.data, part.n FROM unnest(b.chunk_ids) WITH ORDINALITY AS part(id, n) \
                                 JOIN chunks c ON c.id = part.id AND c.user_id = u.id \
                                 WHERE b.size_bytes <= $2) c ON true \
             WHERE u.token_hash = $1 ORDER BY c.n"
        )
    };
}

/// Finds the user a token belongs to and one of their backups with its chunks, in one
/// statement (a restore is one round trip to the database, not two). The chunks come along
/// only when the document is at most `room` bytes, so the caller holds memory for what it
/// reads *before* reading it. `None` when no user has the token; otherwise the backup, if
/// there is one.
pub async fn fetch(
    pool: &PgPool,
    token_hash: &[u8; 32],
    which: Which,
    room: usize,
) -> Result<Option<Option<Fetched>>, Error> {
    let room = i32::try_from(room).unwrap_or(i32::MAX);
    let query = match which {
        Which::Latest => sqlx::query_as(fetch_sql!(
            "LEFT JOIN LATERAL (SELECT * FROM backups WHERE user_id = u.id \
             ORDER BY created_at DESC, id DESC LIMIT 1) b ON true"
        ))
        .bind(token_hash.as_slice())
        .bind(room),
        Which::Id(id) => sqlx::query_as(fetch_sql!("LEFT JOIN backups b ON b.user_id = u.id AND b.id = $3"))
            .bind(token_hash.as_slice())
            .bind(room)
            .bind(id),
    };
    let mut conn = pool.acquire().await?;
    let rows: Vec<OwnerBackupChunk> = query.fetch_all(&mut *conn).await?;
    let Some(first) = rows.first() else { return Ok(None) };
    let (Some(id), Some(created_at), Some(size_bytes), Some(sha256)) =
        (first.id, first.created_at, first.size_bytes, first.sha256.clone())
    else {
        return Ok(Some(None));
    };
    let meta = BackupMeta { id, created_at, size_bytes, sha256 };
    if size_bytes > room {
        return Ok(Some(Some(Fetched::TooLarge(meta))));
    }
    let chunks: Vec<String> = rows.into_iter().filter_map(|row| row.data).collect();
    super::release_large_buffers(&mut conn, chunks.iter().map(String::len).sum());
    Ok(Some(Some(Fetched::Backup(Backup { meta, chunks }))))
}

/// Deletes one of the user's backups (and the chunks only it named). Returns whether it existed.
pub async fn delete(db: impl PgExecutor<'_>, user_id: Uuid, id: Uuid) -> Result<bool, Error> {
    // The user's row is locked before the backup's, in the order an upload takes them, so
    // this and an upload's retention never wait on each other.
    let result = sqlx::query(
        "WITH owner AS MATERIALIZED (SELECT id FROM users WHERE id = $1 FOR UPDATE) \
         DELETE FROM backups WHERE user_id = (SELECT id FROM owner) AND id = $2",
    )
    .bind(user_id)
    .bind(id)
    .execute(db)
    .await?;
    Ok(result.rows_affected() > 0)
}
