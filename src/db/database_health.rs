//! What `inspect health` reads from the server, in one statement (and a second, for the WAL
//! directory, only when the role may list it), and the daily size samples `serve` writes.
//! Statements without parameters go as simple queries: one round trip each over `fly proxy`.

use super::Error;
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, Row};
use time::OffsetDateTime;

/// The facts about the database and its server.
#[derive(Debug, Clone, Deserialize)]
pub struct Facts {
    /// `server_version`, e.g. `16.4`.
    pub server_version: String,
    /// `server_version_num`, e.g. `160004`.
    pub server_version_num: i64,
    /// This database's size on disk.
    pub database_bytes: i64,
    /// The size of every database the role may see, this one included.
    pub cluster_bytes: i64,
    /// The daily samples of this database's size, oldest first (the last 40 days).
    pub sizes: Vec<SizeSample>,
    /// The largest tables.
    pub tables: Vec<TableHealth>,
    /// This database's sessions in a transaction or running a statement (not this one), without
    /// their text.
    pub sessions: Vec<Session>,
    /// Client connections open on the server.
    pub connections: i64,
    /// `max_connections`.
    pub max_connections: i64,
    /// Connections only superusers (or `pg_use_reserved_connections`) may use.
    pub reserved_connections: i64,
    /// Replication slots.
    pub slots: Vec<Slot>,
    /// Whether the role may list the WAL directory (`pg_ls_waldir`).
    pub may_list_wal: bool,
    /// The space kept in reserve (`storage_reserve`; 0 before its migration).
    pub reserve_bytes: i64,
    /// The newest database backup `backup-db` recorded; `None` when there is none.
    pub newest_backup: Option<NewestBackup>,
    /// WAL archiving (`archive_mode`, `pg_stat_archiver`).
    pub archiving: Archiving,
}

/// The newest row of `database_backups`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewestBackup {
    /// When it finished.
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// Where it went (a path or an s3:// URL; never a secret).
    pub location: String,
}

/// WAL archiving's setting and progress. Never `archive_command`: its text may hold a secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Archiving {
    /// `archive_mode`: `off`, `on` or `always`.
    pub mode: String,
    /// WAL segments archived since the statistics were reset.
    pub archived_count: i64,
    /// When the last one was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_archived_at: Option<OffsetDateTime>,
    /// Failed attempts since the statistics were reset.
    pub failed_count: i64,
    /// When the last failure was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_failed_at: Option<OffsetDateTime>,
}

/// One day's sample of the database's size.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SizeSample {
    /// When it was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    /// The database's size then.
    pub bytes: i64,
}

/// A table's size and how clean it is.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct TableHealth {
    /// The table's name.
    pub name: String,
    /// Bytes with indexes and TOAST.
    pub bytes: i64,
    /// Live rows (the statistics' estimate).
    pub live_rows: i64,
    /// Dead rows awaiting vacuum.
    pub dead_rows: i64,
    /// The last vacuum, by hand or autovacuum.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_vacuum: Option<OffsetDateTime>,
    /// The last analyze, by hand or autovacuum.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_analyze: Option<OffsetDateTime>,
}

/// A session in a transaction or a statement. Never its query text: that may hold user data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Session {
    /// Its backend's process id.
    pub pid: i64,
    /// The role it is logged in as.
    pub user_name: Option<String>,
    /// `active`, `idle in transaction`, …
    pub state: String,
    /// How long its transaction has been open.
    pub transaction_seconds: Option<f64>,
    /// How long its current (or last) statement has been running.
    pub query_seconds: Option<f64>,
}

/// A replication slot.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Slot {
    /// The slot's name (what `pg_drop_replication_slot` takes).
    pub name: String,
    /// `physical` or `logical`.
    pub kind: String,
    /// Whether a consumer is connected.
    pub active: bool,
    /// WAL it holds back from removal (unknown on a standby, or before it reserved any).
    pub retained_wal_bytes: Option<i64>,
}

const FACTS: &str = "SELECT json_build_object( \
    'server_version', current_setting('server_version'), \
    'server_version_num', current_setting('server_version_num')::int, \
    'database_bytes', pg_database_size(current_database()), \
    'cluster_bytes', (SELECT coalesce(sum(CASE WHEN has_database_privilege(oid, 'CONNECT') \
                                          THEN pg_database_size(oid) END), 0)::bigint FROM pg_database), \
    'sizes', coalesce((SELECT json_agg(json_build_object('taken_at', taken_at, 'bytes', bytes) ORDER BY day) \
                       FROM database_sizes), '[]'::json), \
    'tables', coalesce((SELECT json_agg(t) FROM ( \
        SELECT relname AS name, pg_total_relation_size(relid) AS bytes, n_live_tup AS live_rows, \
               n_dead_tup AS dead_rows, greatest(last_vacuum, last_autovacuum) AS last_vacuum, \
               greatest(last_analyze, last_autoanalyze) AS last_analyze \
        FROM pg_stat_user_tables ORDER BY pg_total_relation_size(relid) DESC, relname LIMIT 5) t), '[]'::json), \
    'sessions', coalesce((SELECT json_agg(s ORDER BY s.pid) FROM ( \
        SELECT pid, usename AS user_name, state, \
               extract(epoch FROM now() - xact_start)::float8 AS transaction_seconds, \
               extract(epoch FROM now() - query_start)::float8 AS query_seconds \
        FROM pg_stat_activity \
        WHERE backend_type = 'client backend' AND datname = current_database() AND pid <> pg_backend_pid() \
          AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')) s), '[]'::json), \
    'connections', (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'), \
    'max_connections', current_setting('max_connections')::int, \
    'reserved_connections', current_setting('superuser_reserved_connections')::int \
                            + coalesce(current_setting('reserved_connections', true)::int, 0), \
    'slots', coalesce((SELECT json_agg(r ORDER BY r.name) FROM ( \
        SELECT slot_name AS name, slot_type AS kind, active, \
               CASE WHEN NOT pg_is_in_recovery() \
                    THEN pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint END AS retained_wal_bytes \
        FROM pg_replication_slots) r), '[]'::json), \
    'may_list_wal', has_function_privilege('pg_ls_waldir()', 'EXECUTE'), \
    'reserve_bytes', coalesce(pg_relation_size(to_regclass('storage_reserve')), 0), \
    'newest_backup', (SELECT json_build_object('finished_at', finished_at, 'location', location) \
                      FROM database_backups ORDER BY finished_at DESC LIMIT 1), \
    'archiving', (SELECT json_build_object('mode', current_setting('archive_mode'), \
                         'archived_count', archived_count, 'last_archived_at', last_archived_time, \
                         'failed_count', failed_count, 'last_failed_at', last_failed_time) FROM pg_stat_archiver) \
)::text";

/// The facts, in one round trip.
pub async fn facts(db: impl PgExecutor<'_>) -> Result<Facts, Error> {
    let row = sqlx::raw_sql(FACTS).fetch_one(db).await?;
    let json: String = row.try_get(0)?;
    serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(Box::new(e))).map_err(Error::from)
}

/// The WAL directory's size, in one round trip (only for a role that may list it).
pub async fn wal_bytes(db: impl PgExecutor<'_>) -> Result<i64, Error> {
    let row = sqlx::raw_sql("SELECT coalesce(sum(size), 0)::bigint FROM pg_ls_waldir()").fetch_one(db).await?;
    row.try_get(0).map_err(Error::from)
}

/// How many samples are kept: enough for a 30-day rate.
const SAMPLE_DAYS: i32 = 40;

/// Records today's (UTC) size of this database, unless another process already has; forgets
/// samples older than [`SAMPLE_DAYS`].
pub async fn record_size(db: impl PgExecutor<'_>) -> Result<(), Error> {
    sqlx::query(
        "WITH old AS (DELETE FROM database_sizes WHERE day < (now() AT TIME ZONE 'UTC')::date - $1) \
         INSERT INTO database_sizes (day, bytes) \
         VALUES ((now() AT TIME ZONE 'UTC')::date, pg_database_size(current_database())) \
         ON CONFLICT (day) DO NOTHING",
    )
    .bind(SAMPLE_DAYS)
    .execute(db)
    .await
    .map(drop)
    .map_err(Error::from)
}

/// The figures `serve` exports: this database's size, and client connections in use and allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Gauges {
    /// `pg_database_size` of this database.
    pub database_bytes: i64,
    /// Client connections open on the server.
    pub connections: i64,
    /// `max_connections`.
    pub max_connections: i64,
}

/// The gauges, in one statement.
pub async fn gauges(db: impl PgExecutor<'_>) -> Result<Gauges, Error> {
    sqlx::query_as(
        "SELECT pg_database_size(current_database()) AS database_bytes, \
                (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS connections, \
                current_setting('max_connections')::bigint AS max_connections",
    )
    .fetch_one(db)
    .await
    .map_err(Error::from)
}
