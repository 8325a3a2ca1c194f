//! One module per subcommand: orchestration only (no SQL, no HTTP handling).

pub mod backup_db;
pub mod completions;
pub mod dev;
pub mod inspect;
pub mod migrate;
pub mod prune;
pub mod request;
pub mod restore_db;
pub mod serve;
pub mod smoke_test;
pub mod verify_backup;

use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

use crate::cli::{Cli, Command, DatabaseArgs};
use crate::config::DatabaseUrl;
use crate::db;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::BackupDb(args) => backup_db::run(args).await,
        Command::RestoreDb(args) => restore_db::run(args).await,
        Command::VerifyBackup(args) => verify_backup::run(&args),
        Command::Inspect(args) => inspect::run(args).await,
        Command::Prune(args) => prune::run(args).await,
        Command::Request(args) => request::run(args).await,
        Command::SmokeTest(args) => smoke_test::run(args).await,
        Command::Completions { shell } => completions::run(shell),
    }
}

/// A small pool for an operator command, with the connection errors the CLI promises.
pub async fn connect_cli(database: &DatabaseArgs) -> anyhow::Result<PgPool> {
    let url = DatabaseUrl::from_setting(database.database_url.as_ref())?;
    let settings = db::PoolSettings { max_connections: 2, acquire_timeout: Duration::from_secs(15) };
    Ok(db::connect(&url, settings).await?)
}

/// A table and its rows, as the dump commands report them.
#[derive(Debug, Serialize)]
pub struct TableRows {
    /// Table name.
    pub name: String,
    /// Rows.
    pub rows: u64,
}

impl TableRows {
    /// A table of them for people.
    pub fn table(rows: &[Self]) -> comfy_table::Table {
        let mut table = crate::output::table(["Table", "Rows"]);
        for t in rows {
            table.add_row([t.name.clone(), t.rows.to_string()]);
        }
        table
    }

    /// The tables of a dump's manifest.
    pub fn of(trailer: &crate::dump::Trailer) -> Vec<Self> {
        trailer.tables.iter().map(|t| Self { name: t.name.clone(), rows: t.rows }).collect()
    }
}
