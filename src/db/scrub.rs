//! Re-reading what is stored (the scrub): every chunk re-hashed against its name, every backup
//! reassembled from its chunks and re-hashed against its SHA-256, in batches of ids so that each
//! statement is short and a progress bar can follow. The hashing runs inside PostgreSQL: nothing
//! but ids crosses the network, which matters over `fly proxy`.

use super::Error;
use serde::Serialize;
use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

/// What one batch of chunks or backups came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch<Id> {
    /// The last id of the batch (the next batch starts after it); `None` past the end.
    pub last_id: Option<Id>,
    /// Rows checked.
    pub checked: i64,
    /// Their bytes: the chunks' text, or the backups' documents.
    pub bytes: i64,
    /// Those that do not hash as they should.
    pub damaged: Vec<Id>,
}

impl<Id> From<(Option<Id>, i64, i64, Vec<Id>)> for Batch<Id> {
    fn from((last_id, checked, bytes, damaged): (Option<Id>, i64, i64, Vec<Id>)) -> Self {
        Self { last_id, checked, bytes, damaged }
    }
}

/// Re-hashes up to `limit` chunks after id `after` against their names.
pub async fn chunk_batch(db: impl PgExecutor<'_>, after: i64, limit: i64) -> Result<Batch<i64>, Error> {
    let row: (Option<i64>, i64, i64, Vec<i64>) = sqlx::query_as(
        "WITH checked AS ( \
             SELECT id, octet_length(data)::bigint AS bytes, sha256(convert_to(data, 'UTF8')) = sha256 AS ok \
             FROM chunks WHERE id > $1 ORDER BY id LIMIT $2) \
         SELECT max(id), count(*), coalesce(sum(bytes), 0)::bigint, \
                coalesce(array_agg(id ORDER BY id) FILTER (WHERE NOT ok), '{}') \
         FROM checked",
    )
    .bind(after)
    .bind(limit)
    .fetch_one(db)
    .await?;
    Ok(row.into())
}

/// Reassembles and re-hashes up to `limit` backups after id `after` (the nil id to start)
/// against their SHA-256.
pub async fn backup_batch(db: impl PgExecutor<'_>, after: Uuid, limit: i64) -> Result<Batch<Uuid>, Error> {
    let row: (Option<Uuid>, i64, i64, Vec<Uuid>) = sqlx::query_as(
        "WITH checked AS ( \
             SELECT b.id, b.size_bytes, \
                    (SELECT sha256(convert_to(coalesce(string_agg(c.data, '' ORDER BY part.n), ''), 'UTF8')) \
                     FROM unnest(b.chunk_ids) WITH ORDINALITY AS part(id, n) \
                     JOIN chunks c ON c.id = part.id AND c.user_id = b.user_id) = b.sha256 AS ok \
             FROM backups b WHERE b.id > $1 ORDER BY b.id LIMIT $2) \
         SELECT (array_agg(id ORDER BY id DESC))[1], count(*), coalesce(sum(size_bytes), 0)::bigint, \
                coalesce(array_agg(id ORDER BY id) FILTER (WHERE NOT ok), '{}') \
         FROM checked",
    )
    .bind(after)
    .bind(limit)
    .fetch_one(db)
    .await?;
    Ok(row.into())
}

/// A chunk that does not hash to its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DamagedChunk {
    /// The chunk.
    pub chunk_id: i64,
    /// Its owner.
    pub user_id: Uuid,
    /// How many of the owner's backups name it.
    pub backups: i64,
    /// Whether the owner's latest backup names it: the app's next upload of the same data
    /// sends its bytes again, which heals it.
    pub in_latest: bool,
}

/// Who and what the damaged chunks `ids` concern.
pub async fn damaged_chunks(db: impl PgExecutor<'_>, ids: &[i64]) -> Result<Vec<DamagedChunk>, Error> {
    sqlx::query_as(
        "SELECT c.id AS chunk_id, c.user_id, \
                (SELECT count(*) FROM backups b WHERE b.user_id = c.user_id AND c.id = ANY (b.chunk_ids)) AS backups, \
                coalesce((SELECT c.id = ANY (b.chunk_ids) FROM backups b WHERE b.user_id = c.user_id \
                          ORDER BY b.created_at DESC, b.id DESC LIMIT 1), false) AS in_latest \
         FROM chunks c WHERE c.id = ANY ($1) ORDER BY c.user_id, c.id",
    )
    .bind(ids)
    .fetch_all(db)
    .await
    .map_err(Error::from)
}

/// A backup whose chunks do not make its document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DamagedBackup {
    /// The backup.
    pub backup_id: Uuid,
    /// Its owner.
    pub user_id: Uuid,
    /// When it was stored.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Its document's length.
    pub size_bytes: i32,
    /// Whether it is the owner's latest backup (what a restore on a new phone fetches).
    pub latest: bool,
    /// How many of the chunks it names are damaged or gone. None: its list of chunks itself is
    /// wrong, which no upload can heal.
    pub bad_chunks: i64,
}

/// Who and what the damaged backups `ids` concern.
pub async fn damaged_backups(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<Vec<DamagedBackup>, Error> {
    sqlx::query_as(
        "SELECT b.id AS backup_id, b.user_id, b.created_at, b.size_bytes, \
                b.id = (SELECT l.id FROM backups l WHERE l.user_id = b.user_id \
                        ORDER BY l.created_at DESC, l.id DESC LIMIT 1) AS latest, \
                (SELECT count(*) FROM unnest(b.chunk_ids) AS part(id) \
                 LEFT JOIN chunks c ON c.id = part.id AND c.user_id = b.user_id \
                 WHERE c.id IS NULL OR sha256(convert_to(c.data, 'UTF8')) <> c.sha256) AS bad_chunks \
         FROM backups b WHERE b.id = ANY ($1) ORDER BY b.user_id, b.created_at",
    )
    .bind(ids)
    .fetch_all(db)
    .await
    .map_err(Error::from)
}

/// How many chunks and backups there are (what the progress bar counts towards).
pub async fn totals(db: impl PgExecutor<'_>) -> Result<(i64, i64), Error> {
    sqlx::query_as("SELECT (SELECT count(*) FROM chunks), (SELECT count(*) FROM backups)")
        .fetch_one(db)
        .await
        .map_err(Error::from)
}
