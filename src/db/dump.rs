//! The database side of `backup-db` and `restore-db`: a consistent snapshot streamed out with
//! COPY, and a load streamed in with COPY, each in one transaction.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use sqlx::postgres::PgCopyIn;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::copy_binary::Column;
use super::migrations::MIGRATOR;

/// Our tables in load order (parents before children). A test checks that it names every
/// table the migrations create.
pub const TABLES: &[&str] = &["_sqlx_migrations", "users", "backups", "idempotency_keys"];

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
    Database(#[from] sqlx::Error),
}

/// One read-only repeatable-read transaction: every table is read as of one instant while
/// the server goes on writing.
pub struct Snapshot {
    tx: Transaction<'static, Postgres>,
}

impl Snapshot {
    /// Starts the snapshot.
    pub async fn begin(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let tx = pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        Ok(Self { tx })
    }

    /// The server's version, e.g. `16.4`.
    pub async fn postgres_version(&mut self) -> Result<String, sqlx::Error> {
        sqlx::query_scalar("SHOW server_version").fetch_one(&mut *self.tx).await
    }

    /// The newest applied migration.
    pub async fn schema_version(&mut self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *self.tx)
            .await
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

    /// A table's columns, quoted, in order.
    pub async fn columns(&mut self, table: &str) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT quote_ident(attname) FROM pg_attribute \
             WHERE attrelid = ('public.' || quote_ident($1))::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        )
        .bind(table)
        .fetch_all(&mut *self.tx)
        .await
    }

    /// The planner's row estimate of all our tables, for a progress bar.
    pub async fn estimated_rows(&mut self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT coalesce(sum(greatest(reltuples, 0)), 0)::bigint FROM pg_class \
             WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' AND relname = ANY($1)",
        )
        .bind(TABLES)
        .fetch_one(&mut *self.tx)
        .await
    }

    /// The table's rows in COPY text format, as they arrive.
    pub async fn copy_out(
        &mut self,
        table: &str,
        columns: &[String],
    ) -> Result<BoxStream<'_, Result<Bytes, sqlx::Error>>, sqlx::Error> {
        // Names come from TABLES and the catalog's quote_ident, never from input.
        let statement = format!("COPY public.{table} ({}) TO STDOUT", columns.join(", "));
        self.tx.copy_out_raw(&statement).await
    }

    /// `setval` calls that put every sequence where it is now.
    pub async fn sequences_sql(&mut self) -> Result<String, sqlx::Error> {
        let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences WHERE schemaname = 'public'",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, last)| match last {
                Some(value) => format!("SELECT pg_catalog.setval('{name}', {value}, true);\n"),
                None => format!("SELECT pg_catalog.setval('{name}', 1, false);\n"),
            })
            .collect())
    }

    /// Ends the snapshot.
    pub async fn finish(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

/// Whether the database holds no table of its own.
pub async fn is_empty(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetch_one(conn).await?;
    Ok(tables == 0)
}

/// Drops everything in the public schema (for `restore-db --force`), inside the caller's transaction.
pub async fn clear(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;").execute(conn).await.map(drop)
}

/// Runs a block of SQL from a verified dump.
pub async fn run_sql(conn: &mut PgConnection, sql: String) -> Result<(), sqlx::Error> {
    // The dump was written by this tool and its checksums verified before loading.
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(conn).await.map(drop)
}

/// A table's load in COPY's binary format: the statement, and the types to convert to.
pub struct BinaryLoad {
    /// `COPY … FROM stdin WITH (FORMAT binary)`.
    pub statement: String,
    /// The columns' types, in order.
    pub columns: Vec<Column>,
}

/// How to load a table whose dump says `copy` (`COPY public.NAME (columns) FROM stdin;`) in
/// binary: `None` when a column's type does not convert or the columns differ from the target's
/// (then the dump's own text COPY loads it).
pub async fn binary_load(conn: &mut PgConnection, name: &str, copy: &str) -> Result<Option<BinaryLoad>, sqlx::Error> {
    let (names, types): (Option<String>, Option<Vec<String>>) = sqlx::query_as(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum), \
                array_agg(format_type(atttypid, atttypmod) ORDER BY attnum) \
         FROM pg_attribute \
         WHERE attrelid = ('public.' || quote_ident($1))::regclass AND attnum > 0 AND NOT attisdropped",
    )
    .bind(name)
    .fetch_one(conn)
    .await?;
    let columns: Option<Vec<Column>> = types.unwrap_or_default().iter().map(|t| Column::of(t)).collect();
    let same_columns = names.is_some_and(|names| copy == format!("COPY public.{name} ({names}) FROM stdin;"));
    Ok(columns.filter(|_| same_columns).map(|columns| BinaryLoad {
        statement: format!("{} WITH (FORMAT binary)", copy.trim_end_matches(';')),
        columns,
    }))
}

/// Starts a `COPY … FROM stdin` of a verified dump.
pub async fn copy_in<'c>(
    conn: &'c mut PgConnection,
    statement: &str,
) -> Result<PgCopyIn<&'c mut PgConnection>, sqlx::Error> {
    conn.copy_in_raw(statement).await
}

/// Indexes and constraints set aside while a restore loads, as pg_restore does: building an
/// index once over loaded rows, and checking a foreign key with one join, beats doing both
/// row by row. Primary keys and unique constraints are indexes too.
pub struct Deferred {
    recreate: Vec<String>,
}

/// Drops the public schema's indexes, primary keys, unique and foreign key constraints (in the
/// caller's transaction) and remembers how to put them back.
pub async fn defer_indexes_and_foreign_keys(conn: &mut PgConnection) -> Result<Deferred, sqlx::Error> {
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
pub async fn restore_deferred(conn: &mut PgConnection, deferred: Deferred) -> Result<(), sqlx::Error> {
    for statement in deferred.recreate {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut *conn).await?;
    }
    Ok(())
}
