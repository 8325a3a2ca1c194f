//! The database layer: the pool, the migrations, and (in one file per table group) the only SQL.

pub mod admin;
pub mod backups;
pub mod dump;
pub mod inspect;
pub mod migrations;
pub mod prune;
pub mod users;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

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
}

const PROXY_HINT: &str = "; if this is Fly Postgres, is `fly proxy 15432:5432 -a dailyreps-backup-server-db` running?";

/// Opens a pool and makes one connection, so a wrong URL or a dead server is reported now.
pub async fn connect(url: &DatabaseUrl, settings: PoolSettings) -> Result<PgPool, ConnectError> {
    let options = url.connect_options().application_name("dailyreps-backup-server");
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        // A ping per checkout costs a round trip on every request; a dead connection shows
        // itself on first use instead, and is then discarded by the pool.
        .test_before_acquire(false)
        // A connection that carried a 10 MiB document keeps buffers that size; give them back
        // before it idles in the pool (a no-op for connections whose buffers are small).
        .after_release(|conn, _| {
            Box::pin(async move {
                sqlx::Connection::shrink_buffers(conn);
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .map_err(|error| ConnectError {
            endpoint: url.endpoint(),
            reason: describe(&error),
            hint: if url.is_local() { PROXY_HINT } else { "" },
        })
}

fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::PoolTimedOut => "no answer in time".into(),
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Tls(tls) => format!("TLS failed: {tls}"),
        other => other.to_string(),
    }
}
