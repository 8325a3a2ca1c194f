//! Backups: storing (with dedupe, retention and idempotency in one call), listing,
//! fetching and deleting. Every query is scoped to its user, so another user's backup is
//! simply not found.

use std::collections::HashSet;

use sqlx::{PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::chunking;
use crate::encoding::sha256;

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
    /// A chunk found stored was freed, or does not hash to its name (damaged), before the
    /// store: nothing was written; store again, sending every chunk.
    ResendChunks,
}

/// A row of `store_backup_v3`: the backup's columns are null for the `missing` outcome.
#[derive(sqlx::FromRow)]
struct Outcome {
    outcome: String,
    id: Option<Uuid>,
    created_at: Option<OffsetDateTime>,
    size_bytes: Option<i32>,
    sha256: Option<Vec<u8>>,
    deduplicated: Option<bool>,
    /// Damaged chunks healed from the bytes sent.
    healed: i32,
}

impl Outcome {
    fn stored(self) -> Result<Stored, sqlx::Error> {
        match (self.id, self.created_at, self.size_bytes, self.sha256, self.deduplicated) {
            (Some(id), Some(created_at), Some(size_bytes), Some(sha256), Some(deduplicated)) => {
                Ok(Stored { meta: BackupMeta { id, created_at, size_bytes, sha256 }, deduplicated })
            }
            _ => Err(sqlx::Error::Protocol(format!("store_backup_v3's {} outcome names no backup", self.outcome))),
        }
    }
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

/// A document cut into chunks, with those its user has stored already found: what an
/// upload sends to the database is only the rest.
pub struct Prepared<'a> {
    new: NewBackup<'a>,
    size: i32,
    keep: i32,
    /// The document's chunks in order, each with its SHA-256.
    chunks: Vec<(&'a str, [u8; 32])>,
    /// The hashes of those the user has stored.
    stored: HashSet<[u8; 32]>,
}

impl Prepared<'_> {
    /// The bytes of the chunks a store will send: each not yet stored, once.
    pub fn bytes_to_send(&self) -> usize {
        self.to_send().map(|(data, _)| data.len()).sum()
    }

    fn to_send(&self) -> impl Iterator<Item = &(&str, [u8; 32])> {
        let mut seen = HashSet::new();
        self.chunks.iter().filter(move |(_, hash)| !self.stored.contains(hash) && seen.insert(hash))
    }
}

/// Documents up to this size go to the database whole, with no question first: a round trip
/// costs more than sending them (`store_backup_v3` skips the chunks already stored).
const ASK_ABOVE_BYTES: usize = 64 * 1024;

/// Cuts a document into chunks and asks, in one statement, which of them its user has stored
/// (for a document over [`ASK_ABOVE_BYTES`]).
pub async fn prepare<'a>(pool: &PgPool, new: NewBackup<'a>) -> Result<Prepared<'a>, sqlx::Error> {
    let size = i32::try_from(new.document.len()).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let keep = i32::try_from(new.keep).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let chunks: Vec<(&str, [u8; 32])> = chunking::chunks(new.document).map(|c| (c, sha256(c.as_bytes()))).collect();
    if new.document.len() <= ASK_ABOVE_BYTES {
        return Ok(Prepared { new, size, keep, chunks, stored: HashSet::new() });
    }
    let hashes: Vec<&[u8]> = chunks.iter().map(|(_, hash)| hash.as_slice()).collect();
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT sha256 FROM chunks WHERE user_id = $1 AND sha256 = ANY($2)")
        .bind(new.user_id)
        .bind(&hashes)
        .fetch_all(pool)
        .await?;
    let stored = stored.into_iter().filter_map(|hash| hash.try_into().ok()).collect();
    Ok(Prepared { new, size, keep, chunks, stored })
}

/// Stores a prepared document unless it equals the user's latest backup (and that reads back),
/// deletes the user's backups beyond the newest `keep` (and the chunks only they named), and
/// remembers the idempotency key; or answers a repeated key. One call of the `store_backup_v3`
/// function (migrations/*_store_backup_v3.sql) with the chunks the user has not stored: its own
/// transaction, serialised per user by a lock on the user's row. A stored chunk that differs
/// from the bytes sent under its hash is healed from them (and logged).
///
/// [`Upload::ResendChunks`] when a chunk found stored was freed meanwhile (its last backup
/// deleted) or does not hash to its name: nothing was written, and the next call sends every
/// chunk, which heals a damaged one.
pub async fn store(pool: &PgPool, prepared: &mut Prepared<'_>) -> Result<Upload, sqlx::Error> {
    let hashes: Vec<&[u8]> = prepared.chunks.iter().map(|(_, hash)| hash.as_slice()).collect();
    let (new_hashes, new_data): (Vec<&[u8]>, Vec<&str>) =
        prepared.to_send().map(|(data, hash)| (hash.as_slice(), *data)).unzip();
    let sent = new_data.iter().map(|data| data.len()).sum();
    let new = &prepared.new;
    let mut conn = pool.acquire().await?;
    let outcome: Option<Outcome> = sqlx::query_as(
        "SELECT outcome, id, created_at, size_bytes, sha256, deduplicated, healed \
         FROM store_backup_v3($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(new.user_id)
    .bind(new.id)
    .bind(prepared.size)
    .bind(new.sha256.as_slice())
    .bind(&hashes)
    .bind(&new_hashes)
    .bind(&new_data)
    .bind(prepared.keep)
    .bind(new.idempotency_key)
    .fetch_optional(&mut *conn)
    .await?;
    super::release_large_buffers(&mut conn, sent);
    let Some(row) = outcome else { return Ok(Upload::NoUser) };
    if row.healed > 0 {
        tracing::warn!(
            user_id = %new.user_id,
            healed = row.healed,
            "stored chunks did not match the bytes uploaded under their SHA-256 (damaged); healed them from the upload"
        );
    }
    Ok(match row.outcome.as_str() {
        "stored" => Upload::Stored(row.stored()?),
        "replayed" => Upload::Replayed(row.stored()?),
        "conflict" => Upload::KeyConflict,
        "missing" if !prepared.stored.is_empty() => {
            prepared.stored.clear();
            Upload::ResendChunks
        }
        other => return Err(sqlx::Error::Protocol(format!("store_backup_v3 answered {other} with every chunk sent"))),
    })
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
) -> Result<Option<Option<Fetched>>, sqlx::Error> {
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
pub async fn delete(db: impl PgExecutor<'_>, user_id: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
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
