//! Read-only operator views. Each is one or two statements however many rows it returns,
//! since the operator may be on the far side of a slow `fly proxy`.

use super::Error;
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgExecutor, Row};
use time::OffsetDateTime;
use uuid::Uuid;

/// A user with their backups in aggregate (as `inspect --json` prints it: times in RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct UserRow {
    /// The account id.
    pub user_id: Uuid,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Its newest backup's time.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_backup_at: Option<OffsetDateTime>,
    /// How many backups.
    pub backup_count: i64,
    /// Their documents' bytes together.
    pub total_bytes: i64,
    /// What their chunks take as stored (compressed, each kept once).
    pub stored_bytes: i64,
}

/// How to order users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserOrder {
    /// Newest accounts first.
    Created,
    /// Most recent backup first (never backed up last).
    LastBackup,
    /// Most bytes first.
    Size,
    /// Most backups first.
    Count,
}

/// The columns of a [`UserRow`], from [`USER_SOURCES`].
const USER_COLUMNS: &str = "u.id AS user_id, u.created_at, s.last_backup_at, \
            coalesce(s.backup_count, 0) AS backup_count, coalesce(s.total_bytes, 0) AS total_bytes, \
            coalesce(k.stored_bytes, 0) AS stored_bytes";

const USER_SOURCES: &str = "FROM users u LEFT JOIN ( \
         SELECT user_id, max(created_at) AS last_backup_at, count(*) AS backup_count, \
                sum(size_bytes)::bigint AS total_bytes \
         FROM backups GROUP BY user_id) s ON s.user_id = u.id \
     LEFT JOIN ( \
         SELECT user_id, sum(pg_column_size(data))::bigint AS stored_bytes \
         FROM chunks GROUP BY user_id) k ON k.user_id = u.id";

/// A page of users and how many there are in all, in one statement (two for a page past the
/// end, which has no row to carry the count).
pub async fn users(
    db: impl PgExecutor<'_> + Copy,
    order: UserOrder,
    limit: i64,
    offset: i64,
) -> Result<(Vec<UserRow>, i64), Error> {
    let order_by = match order {
        UserOrder::Created => "u.created_at DESC",
        UserOrder::LastBackup => "s.last_backup_at DESC NULLS LAST",
        UserOrder::Size => "total_bytes DESC",
        UserOrder::Count => "backup_count DESC",
    };
    // The count is an uncorrelated subquery: computed once, beside the page.
    let sql = format!(
        "SELECT (SELECT count(*) FROM users) AS total, {USER_COLUMNS} {USER_SOURCES} \
         ORDER BY {order_by}, u.id LIMIT $1 OFFSET $2"
    );
    // `order_by` is one of the constants above, never user text.
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(limit).bind(offset).fetch_all(db).await?;
    let total = match rows.first() {
        Some(row) => row.try_get("total")?,
        None => sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(db).await?,
    };
    Ok((rows.iter().map(UserRow::from_row).collect::<Result<_, _>>()?, total))
}

/// One user, in aggregate.
pub async fn user(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<UserRow>, Error> {
    let sql = format!("SELECT {USER_COLUMNS} {USER_SOURCES} WHERE u.id = $1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(db).await.map_err(Error::from)
}

/// A backup, as the operator sees it (and `inspect --json` prints it: the hash in hex).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct BackupRow {
    /// The backup's id.
    pub backup_id: Uuid,
    /// The account it belongs to.
    pub user_id: Uuid,
    /// When it was stored.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Document bytes.
    pub size_bytes: i32,
    /// SHA-256 of the document.
    #[serde(serialize_with = "crate::encoding::serialize_hex")]
    pub sha256: Vec<u8>,
}

/// Backups newest first, optionally of one user and since a time, after a (time, id)
/// position, and how many match the user and time in all: one statement (two for a page past
/// the end, which has no row to carry the count).
pub async fn backups(
    db: impl PgExecutor<'_> + Copy,
    user: Option<Uuid>,
    since: Option<OffsetDateTime>,
    before: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<(Vec<BackupRow>, i64), Error> {
    const MATCHING: &str =
        "FROM backups WHERE ($1::uuid IS NULL OR user_id = $1) AND ($2::timestamptz IS NULL OR created_at >= $2)";
    let sql = format!(
        "SELECT (SELECT count(*) {MATCHING}) AS total, id AS backup_id, user_id, created_at, size_bytes, sha256 \
         {MATCHING} AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4)) \
         ORDER BY created_at DESC, id DESC LIMIT $5"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user)
        .bind(since)
        .bind(before.map(|(at, _)| at))
        .bind(before.map(|(_, id)| id))
        .bind(limit)
        .fetch_all(db)
        .await?;
    let total = match rows.first() {
        Some(row) => row.try_get("total")?,
        None => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) {MATCHING}")))
                .bind(user)
                .bind(since)
                .fetch_one(db)
                .await?
        }
    };
    Ok((rows.iter().map(BackupRow::from_row).collect::<Result<_, _>>()?, total))
}

/// The whole database at a glance (printed as is by `inspect stats --json`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Stats {
    /// Accounts.
    pub users: i64,
    /// Backups.
    pub backups: i64,
    /// Document bytes together.
    pub total_bytes: i64,
    /// What the documents' chunks take as stored (compressed, each kept once per user).
    pub stored_bytes: i64,
    /// The database's size on disk.
    pub database_bytes: i64,
    /// Our tables: exact rows and size on disk (with indexes and TOAST).
    pub tables: Vec<TableStats>,
    /// The users holding the most bytes.
    pub largest_users: Vec<LargeUser>,
    /// Backups per day, the last 14 days (UTC), oldest first, days without any included.
    pub backups_per_day: Vec<DayCount>,
    /// The newest recorded backup of the database itself (`backup-db`), if any.
    pub last_database_backup: Option<DatabaseBackup>,
}

/// A recorded backup of the database.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct DatabaseBackup {
    /// When it finished.
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: time::OffsetDateTime,
    /// Where it went (a path or an s3:// URL).
    pub location: String,
    /// The dump's size, as stored.
    pub bytes: i64,
    /// How long ago it finished, by the database's clock.
    pub age_seconds: i64,
}

/// One table's figures.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct TableStats {
    /// Table name.
    pub name: String,
    /// Exact row count.
    pub rows: i64,
    /// Bytes on disk.
    pub bytes: i64,
}

/// A user among the largest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct LargeUser {
    /// The account id.
    pub user_id: Uuid,
    /// Bytes of its backups.
    pub total_bytes: i64,
    /// What its chunks take as stored.
    pub stored_bytes: i64,
    /// How many backups.
    pub backup_count: i64,
}

/// Backups stored on one day.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct DayCount {
    /// The day (UTC), `YYYY-MM-DD`.
    pub date: String,
    /// Backups created that day.
    pub backups: i64,
}

/// Every figure of `inspect stats`, in one statement (assembled as JSON by PostgreSQL).
pub async fn stats(db: impl PgExecutor<'_>, largest: i64) -> Result<Stats, Error> {
    let json: String = sqlx::query_scalar(
        "SELECT json_build_object( \
           'users', (SELECT count(*) FROM users), \
           'backups', (SELECT count(*) FROM backups), \
           'total_bytes', (SELECT coalesce(sum(size_bytes), 0)::bigint FROM backups), \
           'stored_bytes', (SELECT coalesce(sum(pg_column_size(data)), 0)::bigint FROM chunks), \
           'database_bytes', pg_database_size(current_database()), \
           'tables', json_build_array( \
               json_build_object('name', 'users', 'rows', (SELECT count(*) FROM users), \
                                 'bytes', pg_total_relation_size('users')), \
               json_build_object('name', 'chunks', 'rows', (SELECT count(*) FROM chunks), \
                                 'bytes', pg_total_relation_size('chunks')), \
               json_build_object('name', 'backups', 'rows', (SELECT count(*) FROM backups), \
                                 'bytes', pg_total_relation_size('backups')), \
               json_build_object('name', 'idempotency_keys', 'rows', (SELECT count(*) FROM idempotency_keys), \
                                 'bytes', pg_total_relation_size('idempotency_keys')), \
               json_build_object('name', 'database_backups', 'rows', (SELECT count(*) FROM database_backups), \
                                 'bytes', pg_total_relation_size('database_backups'))), \
           'last_database_backup', (SELECT json_build_object('finished_at', finished_at, 'location', location, \
                                                             'bytes', bytes, 'age_seconds', \
                                                             extract(epoch FROM now() - finished_at)::bigint) \
               FROM database_backups ORDER BY finished_at DESC LIMIT 1), \
           'largest_users', coalesce((SELECT json_agg(l) FROM ( \
               SELECT b.user_id, sum(b.size_bytes)::bigint AS total_bytes, count(*) AS backup_count, \
                      (SELECT coalesce(sum(pg_column_size(c.data)), 0)::bigint FROM chunks c \
                       WHERE c.user_id = b.user_id) AS stored_bytes \
               FROM backups b GROUP BY b.user_id ORDER BY total_bytes DESC, b.user_id LIMIT $1) l), '[]'::json), \
           'backups_per_day', (SELECT json_agg(json_build_object('date', to_char(d.day, 'YYYY-MM-DD'), \
                                                                 'backups', coalesce(c.n, 0)) ORDER BY d.day) \
               FROM generate_series((now() AT TIME ZONE 'UTC')::date - 13, (now() AT TIME ZONE 'UTC')::date, '1 day') AS d(day) \
               LEFT JOIN (SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM backups \
                          WHERE created_at >= now() - interval '15 days' GROUP BY 1) c ON c.day = d.day) \
         )::text",
    )
    .bind(largest)
    .fetch_one(db)
    .await?;
    serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(Box::new(e))).map_err(Error::from)
}
