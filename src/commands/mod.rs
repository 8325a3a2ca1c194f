//! One module per subcommand: orchestration only (no SQL, no HTTP handling).

pub mod backup_db;
pub mod backup_status;
pub mod completions;
pub mod dev;
pub mod doctor;
pub mod dump_source;
pub mod exit;
pub mod inspect;
pub mod list_backups;
pub mod migrate;
pub mod prune;
pub mod request;
pub mod reserve;
pub mod restore_db;
pub mod scrub;
pub mod serve;
pub mod smoke_test;
pub mod verify_backup;

use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

pub use self::exit::{Declined, ExitStatus, Interrupted, UsageError};
use crate::cli::{Cli, Command, DatabaseArgs};
use crate::config::{DatabaseUrl, HumanDuration};
use crate::db;
use crate::output::Printer;

/// Runs the parsed command line. A verdict (a check that warns) is the status returned; an
/// error is what stopped the command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let printer = Printer::new(cli.quiet);
    let done = |result: anyhow::Result<()>| result.map(|()| ExitStatus::Success);
    match cli.command {
        Command::Serve(args) => done(serve::run(args, printer).await),
        Command::Migrate(args) => migrate::run(args, printer).await,
        Command::BackupDb(args) => done(backup_db::run(args, printer).await),
        Command::RestoreDb(args) => done(restore_db::run(args, printer).await),
        Command::VerifyBackup(args) => verify_backup::run(&args, printer).await,
        Command::ListBackups(args) => done(list_backups::run(&args, printer).await),
        Command::BackupStatus(args) => backup_status::run(&args, printer).await,
        Command::Inspect(args) => inspect::run(args, printer).await,
        Command::Doctor(args) => doctor::run(args, printer).await,
        Command::Prune(args) => prune::run(args, printer).await,
        Command::Scrub(args) => scrub::run(args, printer).await,
        Command::Reserve(args) => done(reserve::run(args, printer).await),
        Command::Request(args) => done(request::run(args).await),
        Command::SmokeTest(args) => smoke_test::run(args, printer).await,
        Command::Completions { shell } => done(completions::run(shell)),
    }
}

/// A small pool for an operator command, with the connection errors the CLI promises.
pub async fn connect_cli(database: &DatabaseArgs) -> anyhow::Result<PgPool> {
    connect_to(&DatabaseUrl::from_setting(database.database_url.as_ref())?).await
}

/// [`connect_cli`] for a URL already parsed (a command that names its target first).
pub async fn connect_to(url: &DatabaseUrl) -> anyhow::Result<PgPool> {
    let settings = db::PoolSettings { max_connections: 2, acquire_timeout: Duration::from_secs(15) };
    Ok(db::connect_now(url, settings).await?)
}

/// The moment `duration` (given as `flag`) before `now`; one too far back is a usage error.
pub fn cutoff(
    duration: Option<HumanDuration>,
    now: time::OffsetDateTime,
    flag: &str,
) -> Result<Option<time::OffsetDateTime>, UsageError> {
    duration
        .map(|d| d.before(now).ok_or_else(|| UsageError(format!("{flag} {d} reaches back before any date"))))
        .transpose()
}

/// A cutoff for people: `2026-09-02 20:00 UTC`.
pub fn describe_time(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}-{:02} {:02}:{:02} UTC", at.year(), u8::from(at.month()), at.day(), at.hour(), at.minute())
}

/// A command's error for the operator: each cause once, as `{:#}` would print them, except
/// that a database error ends the chain with its own description (PostgreSQL's message, and
/// for a missing table the way out), not sqlx's, which repeats it.
pub fn describe_error(error: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in error.chain() {
        parts.push(cause.to_string());
        if cause.is::<crate::db::Error>() {
            break;
        }
    }
    parts.join(": ")
}

/// Checks as rows: name, `ok` or `WARN`, and the detail (with its fix).
pub fn check_rows(checks: &[crate::database_health::Check]) -> crate::output::Rows {
    use crate::output::{Cell, Fit, Rows};
    let mut rows = Rows::new(&[("Check", Fit::Whole), ("Status", Fit::Whole), ("Detail", Fit::Wrap)]);
    for check in checks {
        rows.push(vec![check.name.into(), Cell::verdict(check.ok, "ok", "WARN"), check.detail.as_str().into()]);
    }
    rows
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
    /// Them as rows to print.
    pub fn rows(tables: &[Self]) -> crate::output::Rows {
        let mut rows = crate::output::Rows::plain(&["Table", "Rows"]);
        for t in tables {
            rows.push(vec![t.name.as_str().into(), t.rows.to_string().into()]);
        }
        rows
    }

    /// The tables of a dump's manifest.
    pub fn of(trailer: &crate::dump::Trailer) -> Vec<Self> {
        trailer.tables.iter().map(|t| Self { name: t.name.clone(), rows: t.rows }).collect()
    }
}
