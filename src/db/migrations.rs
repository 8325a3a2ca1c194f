//! The embedded migrations: applying them, and what a database has applied.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::Connection;
use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use super::Error;
use super::functions;

/// Every migration in `migrations/`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// The newest schema version this binary knows.
pub fn latest_known_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// A migration the database has applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// Version number (the file name's prefix).
    pub version: i64,
    /// What it does.
    pub description: String,
    /// When it was applied.
    #[serde(with = "time::serde::rfc3339")]
    pub applied_at: OffsetDateTime,
}

/// A migration this binary has that the database lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pending {
    /// Version number.
    pub version: i64,
    /// What it does.
    pub description: String,
}

/// Applied and pending migrations of one database (as `migrate status --json` prints it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Applied, oldest first; may include versions newer than this binary's.
    pub applied: Vec<Applied>,
    /// Known to this binary but not applied, oldest first.
    pub pending: Vec<Pending>,
}

/// Why migrations could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// sqlx refused or a migration failed (its transaction rolled back).
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// The database could not be asked.
    #[error(transparent)]
    Database(#[from] super::Error),
    /// Requests kept the tables busy.
    #[error("{step} found no pause between requests to take the tables in {seconds} s; nothing of it was applied")]
    Busy {
        /// The migration, or the functions' installation.
        step: String,
        /// How long it tried.
        seconds: u64,
    },
}

impl From<sqlx::Error> for ApplyError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error.into())
    }
}

/// How long `apply` keeps trying to find a moment between requests for a migration.
const LOCK_PATIENCE: Duration = Duration::from_secs(60);

/// Applies pending migrations, one at a time, each between requests, then installs the SQL
/// functions ([`functions`]) when the database lacks this binary's. Takes PostgreSQL's
/// advisory lock (sqlx's, so any release's `migrate` waits for it), so concurrent runs apply
/// each migration once; a schema newer than this binary's is left as it is.
///
/// The release before serves while this runs (Fly's release_command). A migration that locks
/// a table its requests use, one lock at a time, deadlocks with them: an upload locks its user
/// and then writes `backups`, the DELETE route writes `backups` and then its trigger locks the
/// user, so a migration that needs both waits on one while holding the other (migration 6,
/// under steady uploads, every time). PostgreSQL then cancels one side: the migration, which
/// fails the deploy, or a request, which answers 500. So each migration's transaction first
/// takes every table of the schema at once, in ACCESS EXCLUSIVE mode, waiting at most
/// [`LOCK_WAIT`] (below deadlock detection's 1 s) and trying again after a pause while
/// requests hold them. Holding them all, it never waits on a request again, and requests wait
/// for it (README: Changing the schema says why migrations must therefore be short).
/// Migrations marked `-- no-transaction` (CREATE INDEX CONCURRENTLY) run as they are.
pub async fn apply(pool: &PgPool) -> Result<(), ApplyError> {
    let mut migrator = sqlx::migrate!();
    // A newer schema comes from a deploy in progress; the old binary must not fail on it.
    migrator.set_ignore_missing(true);
    // Taken once below, before any table lock: a second `migrate` waits for it holding nothing.
    migrator.set_locking(false);
    let mut conn = pool.acquire().await?;
    conn.lock().await?;
    let applied = apply_each(&migrator, &mut conn).await;
    conn.unlock().await?;
    applied
}

/// How long a migration waits for the schema's tables before trying again.
const LOCK_WAIT: &str = "200ms";

async fn apply_each(migrator: &Migrator, conn: &mut PgConnection) -> Result<(), ApplyError> {
    let pending = status(conn).await?.pending;
    for version in pending.iter().map(|pending| pending.version) {
        let no_tx = migrator.iter().any(|migration| migration.version == version && migration.no_tx);
        if no_tx {
            migrator.run_to(version, &mut *conn).await?;
            continue;
        }
        holding_every_table(conn, format!("migration {version}"), async |tx| Ok(migrator.run_to(version, tx).await?))
            .await?;
    }
    // The SQL functions, once the tables they use are there: only when one is missing or not
    // this binary's text, so a `migrate` with nothing to do takes no lock.
    if !functions::outdated(conn).await?.is_empty() {
        holding_every_table(conn, "installing the SQL functions".to_owned(), async |tx| {
            Ok(functions::install(tx).await?)
        })
        .await?;
    }
    Ok(())
}

/// Runs `work` in a transaction that holds every table of the schema, begun in a pause between
/// requests: tried again with growing pauses for up to [`LOCK_PATIENCE`].
async fn holding_every_table(
    conn: &mut PgConnection,
    step: String,
    mut work: impl AsyncFnMut(&mut PgConnection) -> Result<(), ApplyError>,
) -> Result<(), ApplyError> {
    let deadline = Instant::now() + LOCK_PATIENCE;
    let mut pause = Duration::from_millis(50);
    loop {
        let mut tx = conn.begin().await?;
        if lock_every_table(&mut tx).await? {
            work(&mut tx).await?;
            tx.commit().await?;
            return Ok(());
        }
        tx.rollback().await?;
        if Instant::now() >= deadline {
            return Err(ApplyError::Busy { step, seconds: LOCK_PATIENCE.as_secs() });
        }
        tracing::debug!(step, pause_ms = pause.as_millis(), "requests hold the tables; trying again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Locks every table of the schema (but sqlx's own) in ACCESS EXCLUSIVE mode in one statement,
/// waiting at most [`LOCK_WAIT`]; `false` when requests held one that long.
async fn lock_every_table(tx: &mut PgConnection) -> Result<bool, Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL lock_timeout = '{LOCK_WAIT}'"))).execute(&mut *tx).await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I', tablename) FROM pg_tables \
         WHERE schemaname = current_schema() AND tablename <> '_sqlx_migrations' ORDER BY tablename",
    )
    .fetch_all(&mut *tx)
    .await?;
    if !tables.is_empty() {
        let lock = format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", tables.join(", "));
        match sqlx::query(sqlx::AssertSqlSafe(lock)).execute(&mut *tx).await {
            Err(error) if error.as_database_error().and_then(|db| db.code()).is_some_and(|code| code == "55P03") => {
                return Ok(false);
            }
            other => other?,
        };
    }
    // The migration's own waits (none, for the tables it holds) get the usual bound back.
    sqlx::query("SET LOCAL lock_timeout = '5s'").execute(&mut *tx).await?;
    Ok(true)
}

/// What the database has applied and what this binary would still apply.
pub async fn status(conn: &mut PgConnection) -> Result<Status, Error> {
    let rows: Vec<(i64, String, OffsetDateTime)> = match sqlx::query_as(
        "SELECT version, description, installed_on FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(conn)
    .await
    .map_err(Error::from)
    {
        Err(Error::SchemaMissing(_)) => Vec::new(),
        other => other?,
    };
    let applied: Vec<Applied> = rows
        .into_iter()
        .map(|(version, description, applied_at)| Applied { version, description, applied_at })
        .collect();
    let pending = MIGRATOR
        .iter()
        .filter(|known| !applied.iter().any(|done| done.version == known.version))
        .map(|known| Pending { version: known.version, description: known.description.to_string() })
        .collect();
    Ok(Status { applied, pending })
}

/// The oldest schema a binary may know and serve on all of these (newer) migrations, from
/// `schema_compatibility`; `None` when one of them has no row there (so none is known to be
/// safe).
pub async fn oldest_compatible(conn: &mut PgConnection, versions: &[i64]) -> Result<Option<i64>, Error> {
    let (listed, oldest): (i64, Option<i64>) = match sqlx::query_as(
        "SELECT count(*), max(oldest_compatible) FROM schema_compatibility WHERE version = ANY($1)",
    )
    .bind(versions)
    .fetch_one(conn)
    .await
    .map_err(Error::from)
    {
        Err(Error::SchemaMissing(_)) => (0, None),
        other => other?,
    };
    Ok(oldest.filter(|_| usize::try_from(listed).is_ok_and(|listed| listed == versions.len())))
}
