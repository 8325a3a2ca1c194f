//! `inspect health`: the facts in at most two round trips, judged by `crate::database_health`, shown as
//! a table (or JSON), and told to a monitor with `--ping`; exit 3 when a check warns.

use anyhow::{Context, bail};

use crate::commands::ExitStatus;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::DatabaseArgs;
use crate::commands::connect_cli;
use crate::config::{ByteSize, HumanDuration};
use crate::database_health::{Report, Thresholds, judge};
use crate::db::database_health::{self as queries, TableHealth};
use crate::output::{self, Cell, Printer, Rows};
use crate::ping::Ping;

/// Runs `inspect health`, and pings `ping` with the verdict.
pub async fn run(
    database: &DatabaseArgs,
    json: bool,
    volume: Option<ByteSize>,
    long_transaction: HumanDuration,
    ping: Option<&str>,
    printer: Printer,
) -> anyhow::Result<ExitStatus> {
    let checked = match connect_cli(database).await {
        Ok(pool) => check(&pool, json, volume, long_transaction, printer).await,
        Err(error) => Err(error),
    };
    if let Some(ping) = ping.and_then(Ping::new) {
        match &checked {
            Ok(report) if report.ok => ping.success(format!("{} checks ok", report.checks.len())).await,
            Ok(report) => ping.fail(&warnings(report).join("\n")).await,
            Err(error) => ping.fail(&format!("{error:#}")).await,
        }
    }
    let report = checked?;
    if !report.ok {
        let warned: Vec<&str> = report.checks.iter().filter(|check| !check.ok).map(|check| check.name).collect();
        output::warning(&format!("{} of {} checks warn: {}", warned.len(), report.checks.len(), warned.join(", ")));
        return Ok(ExitStatus::Warned);
    }
    Ok(ExitStatus::Success)
}

/// Each warning as `name: detail`.
fn warnings(report: &Report) -> Vec<String> {
    report.checks.iter().filter(|check| !check.ok).map(|check| format!("{}: {}", check.name, check.detail)).collect()
}

/// Reads the facts, judges and prints them.
async fn check(
    pool: &sqlx::PgPool,
    json: bool,
    volume: Option<ByteSize>,
    long_transaction: HumanDuration,
    printer: Printer,
) -> anyhow::Result<Report> {
    // One connection for both statements: a second from the pool would cost its own handshake.
    let mut conn = pool.acquire().await.context("could not connect")?;
    let facts = match queries::facts(&mut *conn).await {
        Err(crate::db::Error::SchemaMissing(_)) => {
            bail!("the database lacks this version's tables (database_sizes): run `migrate` first")
        }
        facts => facts.context("could not read the database's health")?,
    };
    let wal_bytes = if facts.may_list_wal {
        Some(queries::wal_bytes(&mut *conn).await.context("could not measure the WAL directory")?)
    } else {
        None
    };
    let limits =
        Thresholds { volume_bytes: volume.map(|size| size.0), session_seconds: long_transaction.0.as_secs_f64() };
    let now = OffsetDateTime::now_utc();
    let report = judge(&facts, wal_bytes, limits, now);
    if json {
        output::print_json(&HealthJson { report: &report, tables: &facts.tables })
    } else {
        print(&report, &facts.tables, printer)
    }
    .context("could not write the output")?;
    Ok(report)
}

#[derive(Serialize)]
struct HealthJson<'a> {
    #[serde(flatten)]
    report: &'a Report,
    tables: &'a [TableHealth],
}

/// The summary beside the checks' rows; for people, the largest tables under them.
fn print(report: &Report, tables: &[TableHealth], printer: Printer) -> std::io::Result<()> {
    let growth = report.growth_bytes_per_day;
    let rate = |rate: Option<f64>| rate.map_or_else(|| "unknown".to_owned(), |r| output::bytes(r.round() as i64));
    let mut summary = format!(
        "Database {}; growth a day: {} (7 days), {} (30 days)",
        output::bytes(report.database_bytes),
        rate(growth.last_7_days),
        rate(growth.last_30_days)
    );
    if let Some(days) = report.days_until_full {
        summary.push_str(&format!("; the volume is full in about {days} days"));
    }
    printer.aside(&summary)?;
    printer.rows(&crate::commands::check_rows(&report.checks))?;
    if !printer.for_people() {
        return Ok(());
    }
    let mut largest = Rows::plain(&["Largest tables", "Size", "Rows", "Dead rows", "Last vacuum", "Last analyze"]);
    for table in tables {
        largest.push(vec![
            table.name.as_str().into(),
            Cell::Bytes(table.bytes),
            table.live_rows.into(),
            table.dead_rows.into(),
            table.last_vacuum.into(),
            table.last_analyze.into(),
        ]);
    }
    printer.rows(&largest)
}
