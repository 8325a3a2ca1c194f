//! The database side of `backup-db` and `restore-db`: a consistent snapshot streamed out with
//! COPY, and a load streamed in with COPY, each in one transaction.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use sqlx::postgres::PgCopyIn;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use time::OffsetDateTime;

use super::Error;
use super::copy_binary::Column;
use super::migrations::MIGRATOR;
use crate::dump::sequences::SequenceValue;

/// Our tables in load order (parents before children). A test checks that it names every
/// table the migrations create.
pub const TABLES: &[&str] =
    &["_sqlx_migrations", "users", "chunks", "backups", "idempotency_keys", "database_backups", "database_sizes"];
/// The tables a dump leaves out: filler, not data ([`super::reserve`]), and rows the
/// migrations themselves write (the schema section, replayed on restore, writes them again).
/// Nothing reads it but the test that every table is either dumped or named here.
#[allow(dead_code)]
pub const NOT_DUMPED: &[&str] = &["storage_reserve", "schema_compatibility"];

/// sqlx's own migration table, as sqlx creates it.
const MIGRATIONS_TABLE: &str = "CREATE TABLE _sqlx_migrations (\n    version BIGINT PRIMARY KEY,\n    \
    description TEXT NOT NULL,\n    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),\n    success BOOLEAN NOT NULL,\n    \
    checksum BYTEA NOT NULL,\n    execution_time BIGINT NOT NULL\n);\n";

/// Why a dump cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The database has migrations this binary does not know.
    #[error(
        "the database's schema (version {database}) is newer than this tool's ({known}); use a newer dailyreps-backup-server"
    )]
    SchemaTooNew {
        /// The database's newest migration.
        database: i64,
        /// This binary's newest.
        known: i64,
    },
    /// A query failed.
    #[error(transparent)]
    Database(#[from] Error),
}

impl From<sqlx::Error> for SnapshotError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error.into())
    }
}

/// One read-only repeatable-read transaction: every table is read as of one instant while
/// the server goes on writing.
pub struct Snapshot {
    tx: Transaction<'static, Postgres>,
    /// The instant it shows, by the database's clock (its transaction's start): a backup is
    /// named and dated by it, never by the clock of the machine taking it, which may be wrong.
    pub taken_at: OffsetDateTime,
}

impl Snapshot {
    /// Starts the snapshot.
    pub async fn begin(pool: &PgPool) -> Result<Self, Error> {
        let mut tx = pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        let taken_at = sqlx::query_scalar("SELECT now()").fetch_one(&mut *tx).await?;
        Ok(Self { tx, taken_at })
    }

    /// The server's version, e.g. `16.4`.
    pub async fn postgres_version(&mut self) -> Result<String, Error> {
        sqlx::query_scalar("SHOW server_version").fetch_one(&mut *self.tx).await.map_err(Error::from)
    }

    /// The newest applied migration.
    pub async fn schema_version(&mut self) -> Result<i64, Error> {
        sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *self.tx)
            .await
            .map_err(Error::from)
    }

    /// The SQL that recreates the schema at `version`: sqlx's table and our migrations.
    pub fn schema_sql(version: i64) -> Result<String, SnapshotError> {
        let known = super::migrations::latest_known_version();
        if version > known {
            return Err(SnapshotError::SchemaTooNew { database: version, known });
        }
        let mut sql = String::from(MIGRATIONS_TABLE);
        for migration in MIGRATOR.iter().filter(|m| m.version <= version && !m.migration_type.is_down_migration()) {
            sql.push_str(&format!(
                "-- migration {}: {}\n{}\n",
                migration.version,
                migration.description,
                migration.sql.as_str().trim_end()
            ));
        }
        Ok(sql)
    }

    /// A table's columns, quoted, in order; none when the schema (an older one) lacks it.
    pub async fn columns(&mut self, table: &str) -> Result<Vec<String>, Error> {
        sqlx::query_scalar(
            "SELECT quote_ident(attname) FROM pg_attribute \
             WHERE attrelid = to_regclass('public.' || quote_ident($1)) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        )
        .bind(table)
        .fetch_all(&mut *self.tx)
        .await.map_err(Error::from)
    }

    /// The planner's row estimate of all our tables, for a progress bar.
    pub async fn estimated_rows(&mut self) -> Result<i64, Error> {
        sqlx::query_scalar(
            "SELECT coalesce(sum(greatest(reltuples, 0)), 0)::bigint FROM pg_class \
             WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' AND relname = ANY($1)",
        )
        .bind(TABLES)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(Error::from)
    }

    /// The table's rows in COPY text format, as they arrive.
    pub async fn copy_out(
        &mut self,
        table: &str,
        columns: &[String],
    ) -> Result<BoxStream<'_, Result<Bytes, sqlx::Error>>, Error> {
        // Names come from TABLES and the catalog's quote_ident, never from input.
        let statement = format!("COPY public.{table} ({}) TO STDOUT", columns.join(", "));
        self.tx.copy_out_raw(&statement).await.map_err(Error::from)
    }

    /// Where each sequence owned by a column of our tables stands now. (Sequences of other
    /// objects are not ours to restore: the schema is rebuilt from the migrations alone.)
    pub async fn sequences(&mut self) -> Result<Vec<SequenceValue>, Error> {
        let rows: Vec<(String, Option<i64>, i64)> = sqlx::query_as(
            "SELECT DISTINCT format('%I.%I', s.schemaname, s.sequencename), s.last_value, s.start_value \
             FROM pg_sequences s \
             JOIN pg_class c ON c.relname = s.sequencename AND c.relnamespace = 'public'::regnamespace \
             JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i') \
             JOIN pg_class t ON t.oid = d.refobjid AND t.relnamespace = 'public'::regnamespace \
             WHERE s.schemaname = 'public' AND t.relname = ANY($1) ORDER BY 1",
        )
        .bind(TABLES)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, last, start)| SequenceValue { name, value: last.unwrap_or(start), is_called: last.is_some() })
            .collect())
    }

    /// Ends the snapshot.
    pub async fn finish(self) -> Result<(), Error> {
        self.tx.rollback().await.map_err(Error::from)
    }
}

/// Drops everything in the public schema (for `restore-db --force`), inside the caller's transaction.
pub async fn clear(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .execute(conn)
        .await
        .map(drop)
        .map_err(Error::from)
}

/// What a non-empty target holds, to name before replacing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contents {
    /// Tables in its public schema.
    pub tables: i64,
    /// Accounts, when it has our `users` table.
    pub users: Option<i64>,
    /// Backups, when it has our `backups` table.
    pub backups: Option<i64>,
}

/// Counts what the database holds.
pub async fn contents(conn: &mut PgConnection) -> Result<Contents, Error> {
    let (tables, has_users, has_backups): (i64, bool, bool) = sqlx::query_as(
        "SELECT count(*), bool_or(tablename = 'users'), bool_or(tablename = 'backups') \
         FROM pg_tables WHERE schemaname = 'public'",
    )
    .fetch_one(&mut *conn)
    .await
    .map(|(tables, users, backups): (i64, Option<bool>, Option<bool>)| {
        (tables, users.unwrap_or(false), backups.unwrap_or(false))
    })?;
    let mut count = async |table: &str, present: bool| -> Result<Option<i64>, Error> {
        if !present {
            return Ok(None);
        }
        // `table` is one of two names above, never input.
        let sql = format!("SELECT count(*) FROM public.{table}");
        Ok(Some(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *conn).await?))
    };
    let users = count("users", has_users).await?;
    let backups = count("backups", has_backups).await?;
    Ok(Contents { tables, users, backups })
}

/// Creates the schema at `version` from this binary's own migrations (never from a dump's
/// text), in the caller's transaction.
pub async fn create_schema(conn: &mut PgConnection, version: i64) -> Result<(), SnapshotError> {
    let sql = Snapshot::schema_sql(version)?;
    // The migrations compiled into this binary, and sqlx's table: no byte of it from a file.
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(conn).await?;
    Ok(())
}

/// Whether the migrations the loaded `_sqlx_migrations` records are exactly this binary's up
/// to `version`, checksums included: a restored database must be what `migrate` expects.
pub async fn records_match_migrations(conn: &mut PgConnection, version: i64) -> Result<bool, Error> {
    let recorded: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(conn)
            .await?;
    let known: Vec<(i64, Vec<u8>)> = MIGRATOR
        .iter()
        .filter(|m| m.version <= version && !m.migration_type.is_down_migration())
        .map(|m| (m.version, m.checksum.to_vec()))
        .collect();
    Ok(recorded == known)
}

/// Sets a sequence the schema has to a parsed value; `false` when the schema has no such
/// sequence. The name is bound, never spliced into SQL.
pub async fn set_sequence(conn: &mut PgConnection, sequence: &SequenceValue) -> Result<bool, Error> {
    let set: Option<i64> = sqlx::query_scalar(
        "SELECT pg_catalog.setval(c.oid, $2, $3) FROM pg_class c \
         WHERE c.oid = to_regclass($1) AND c.relkind = 'S' AND c.relnamespace = 'public'::regnamespace",
    )
    .bind(&sequence.name)
    .bind(sequence.value)
    .bind(sequence.is_called)
    .fetch_optional(conn)
    .await?;
    Ok(set.is_some())
}

/// How one table of the schema is loaded: the COPY statement a dump of it must carry, word
/// for word, and the binary load where its types allow.
pub struct LoadPlan {
    /// `COPY public.NAME (columns) FROM stdin;`, as the writer puts it.
    pub copy: String,
    /// Rows converted to COPY's binary format, when every column's type converts.
    pub binary: Option<BinaryLoad>,
}

/// A table's load in COPY's binary format: the statement, and the types to convert to.
pub struct BinaryLoad {
    /// `COPY … FROM stdin WITH (FORMAT binary)`.
    pub statement: String,
    /// The columns' types, in order.
    pub columns: Vec<Column>,
}

/// How to load table `name` of the schema in the target: `None` when it has no such table.
pub async fn load_plan(conn: &mut PgConnection, name: &str) -> Result<Option<LoadPlan>, Error> {
    let (names, types): (Option<String>, Option<Vec<String>>) = sqlx::query_as(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum), \
                array_agg(format_type(atttypid, atttypmod) ORDER BY attnum) \
         FROM pg_attribute \
         WHERE attrelid = to_regclass('public.' || quote_ident($1)) AND attnum > 0 AND NOT attisdropped",
    )
    .bind(name)
    .fetch_one(conn)
    .await?;
    let Some(names) = names else { return Ok(None) };
    let copy = format!("COPY public.{name} ({names}) FROM stdin;");
    let columns: Option<Vec<Column>> = types.unwrap_or_default().iter().map(|t| Column::of(t)).collect();
    let binary = columns.map(|columns| BinaryLoad {
        statement: format!("{} WITH (FORMAT binary)", copy.trim_end_matches(';')),
        columns,
    });
    Ok(Some(LoadPlan { copy, binary }))
}

/// Starts a `COPY … FROM stdin` of a [`LoadPlan`]'s statement.
pub async fn copy_in<'c>(conn: &'c mut PgConnection, statement: &str) -> Result<PgCopyIn<&'c mut PgConnection>, Error> {
    conn.copy_in_raw(statement).await.map_err(Error::from)
}

/// Indexes and constraints set aside while a restore loads, as pg_restore does: building an
/// index once over loaded rows, and checking a foreign key with one join, beats doing both
/// row by row. Primary keys and unique constraints are indexes too.
pub struct Deferred {
    recreate: Vec<String>,
}

/// Drops the public schema's indexes, primary keys, unique and foreign key constraints (in the
/// caller's transaction) and remembers how to put them back.
pub async fn defer_indexes_and_foreign_keys(conn: &mut PgConnection) -> Result<Deferred, Error> {
    // Foreign keys first, as they lean on the keys they reference; put back in reverse order.
    let constraints: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT conrelid::regclass::text, quote_ident(conname), pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE contype IN ('f', 'p', 'u') AND connamespace = 'public'::regnamespace \
         ORDER BY contype = 'f' DESC, oid",
    )
    .fetch_all(&mut *conn)
    .await?;
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indrelid \
         WHERE c.relnamespace = 'public'::regnamespace \
           AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut drop = String::new();
    for (table, name, _) in &constraints {
        drop.push_str(&format!("ALTER TABLE {table} DROP CONSTRAINT {name};\n"));
    }
    let mut recreate = Vec::new();
    for (index, definition) in indexes {
        drop.push_str(&format!("DROP INDEX {index};\n"));
        recreate.push(definition);
    }
    recreate.extend(
        constraints
            .into_iter()
            .rev()
            .map(|(table, name, definition)| format!("ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")),
    );
    // Every name comes from the catalog, quoted by PostgreSQL.
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut *conn).await?;
    Ok(Deferred { recreate })
}

/// Puts back what [`defer_indexes_and_foreign_keys`] set aside, checking every foreign key.
pub async fn restore_deferred(conn: &mut PgConnection, deferred: Deferred) -> Result<(), Error> {
    for statement in deferred.recreate {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut *conn).await?;
    }
    Ok(())
}
