//! `migrate` and `migrate status`.

use anyhow::Context;

use crate::cli::{MigrateAction, MigrateArgs};
use crate::commands::{ExitStatus, connect_cli};
use crate::db::migrations;
use crate::output::{self, Cell, Printer, Rows};

/// Runs `migrate [status]`.
pub async fn run(args: MigrateArgs, printer: Printer) -> anyhow::Result<ExitStatus> {
    let pool = connect_cli(&args.database).await?;
    match args.action {
        None => apply(&pool, printer).await.map(|()| ExitStatus::Success),
        Some(MigrateAction::Status { json, check }) => {
            let mut conn = pool.acquire().await.context("could not get a database connection")?;
            let status = migrations::status(&mut conn).await.context("could not read the migration table")?;
            if json { output::print_json(&status) } else { printer.rows(&status_rows(&status)) }
                .context("could not write the output")?;
            if check && !status.pending.is_empty() {
                let pending: Vec<String> = status.pending.iter().map(|p| p.version.to_string()).collect();
                output::warning(&format!(
                    "{} migrations pending ({}); run `migrate`",
                    pending.len(),
                    pending.join(", ")
                ));
                return Ok(ExitStatus::Warned);
            }
            Ok(ExitStatus::Success)
        }
    }
}

async fn apply(pool: &sqlx::PgPool, printer: Printer) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await.context("could not get a database connection")?;
    let before = migrations::status(&mut conn).await.context("could not read the migration table")?;
    drop(conn);
    migrations::apply(pool).await.context("migration failed")?;
    let mut conn = pool.acquire().await.context("could not get a database connection")?;
    let after = migrations::status(&mut conn).await.context("could not read the migration table")?;
    let version = after.applied.iter().map(|a| a.version).max().unwrap_or(0);
    // Another machine may have applied some of them meanwhile: count what is new since.
    let new: Vec<String> = after
        .applied
        .iter()
        .filter(|done| !before.applied.iter().any(|was| was.version == done.version))
        .map(|done| format!("{} {}", done.version, done.description))
        .collect();
    printer.status(&match new.len() {
        0 => format!("already up to date: schema version {version}"),
        1 => format!("applied 1 migration ({}); schema version {version}", new[0]),
        n => format!("applied {n} migrations ({}); schema version {version}", new.join(", ")),
    });
    Ok(())
}

fn status_rows(status: &migrations::Status) -> Rows {
    let mut rows = Rows::plain(&["Version", "Description", "State", "Applied at"]);
    for applied in &status.applied {
        rows.push(vec![
            applied.version.into(),
            applied.description.as_str().into(),
            "applied".into(),
            Cell::Time(applied.applied_at),
        ]);
    }
    for pending in &status.pending {
        rows.push(vec![pending.version.into(), pending.description.as_str().into(), "pending".into(), "".into()]);
    }
    rows
}
