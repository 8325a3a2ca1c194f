//! The database layer: the pool, the migrations, and (in one file per table group) the only SQL.

pub mod admin;
pub mod backups;
pub mod copy_binary;
pub mod database_backups;
pub mod database_health;
pub mod dump;
mod error;
pub mod functions;
pub mod idempotency;
pub mod inspect;
pub mod migrations;
pub mod prune;
pub mod reserve;
pub mod scrub;
pub mod users;

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};

pub use self::error::Error;
use self::error::describe;
use crate::config::DatabaseUrl;

/// How the pool behaves.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Most connections held open.
    pub max_connections: u32,
    /// How long a caller waits for a connection (and a new connection for its handshake).
    pub acquire_timeout: Duration,
}

/// The database could not be reached. Says what was tried, never the password.
#[derive(Debug, thiserror::Error)]
#[error("could not connect to PostgreSQL at {endpoint}: {reason}{hint}")]
pub struct ConnectError {
    endpoint: String,
    reason: String,
    hint: &'static str,
    answered: bool,
}

const PROXY_HINT: &str = "; if this is Fly Postgres, is `fly proxy 15432:5432 -a dailyreps-backup-server-db` running?";

/// Opens a pool and makes one connection, so a wrong URL or a dead server is reported now.
/// A refused connection is retried until `acquire_timeout` (a server that is starting).
pub async fn connect(url: &DatabaseUrl, settings: PoolSettings) -> Result<PgPool, ConnectError> {
    // Every rule that runs in the database (the upload's checks, the trigger that frees chunks,
    // prune's lock-then-recheck) is written for READ COMMITTED: a database or role whose default
    // is another level must not change what they mean. (The dump and restore ask for theirs.)
    let options = url
        .connect_options()
        .application_name("dailyreps-backup-server")
        .options([("default_transaction_isolation", "read committed")]);
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        // A ping per checkout costs a round trip on every request; a dead connection shows
        // itself on first use instead, and is then discarded by the pool.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(|error| ConnectError::new(url, &error))
}

/// [`connect`] for an operator at a terminal: a refused connection (a forgotten `fly proxy`)
/// is reported at once rather than retried for `acquire_timeout`. One TCP handshake first,
/// which to a local proxy costs nothing.
pub async fn connect_now(url: &DatabaseUrl, settings: PoolSettings) -> Result<PgPool, ConnectError> {
    let options = url.connect_options();
    let host = options.get_host();
    if !host.starts_with('/') {
        let address = (host.to_owned(), options.get_port());
        let reason = match tokio::time::timeout(settings.acquire_timeout, tokio::net::TcpStream::connect(address)).await
        {
            Ok(Ok(_)) => None,
            Ok(Err(io)) => Some(sqlx::Error::Io(io)),
            Err(_) => Some(sqlx::Error::PoolTimedOut),
        };
        if let Some(error) = reason {
            return Err(ConnectError::new(url, &error));
        }
    }
    connect(url, settings).await
}

impl ConnectError {
    fn new(url: &DatabaseUrl, error: &sqlx::Error) -> Self {
        // The proxy hint only when nothing answered: an answer from PostgreSQL (no such
        // database, role or password) means the way there works.
        let hint = match error {
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("3D000") => "; check the database name in the URL",
                Some("28000") => "; check the user name in the URL",
                Some("28P01") => "; check the user name and password in the URL",
                _ => "",
            },
            _ if url.is_local() => PROXY_HINT,
            _ => "",
        };
        let answered = matches!(error, sqlx::Error::Database(_));
        Self { endpoint: url.endpoint(), reason: describe(error), hint, answered }
    }

    /// Whether nothing answered (no server, no proxy, no route), rather than PostgreSQL
    /// refusing the database, role or password.
    pub fn is_unreachable(&self) -> bool {
        !self.answered
    }
}

/// Values up to this size leave their buffers with the connection, ready for the next one.
const LARGE_VALUE_BYTES: usize = 1024 * 1024;

/// A connection that carried a value of `value_bytes` keeps buffers that large: give them back
/// before it idles in the pool, when it was large (a 10 MiB document on each of the pool's
/// connections would otherwise stay resident). Small ones keep theirs: regrowing a buffer on
/// every request costs more than it saves.
fn release_large_buffers(conn: &mut PgConnection, value_bytes: usize) {
    if value_bytes > LARGE_VALUE_BYTES {
        sqlx::Connection::shrink_buffers(conn);
    }
}
