//! `migrate` and `migrate status`.

use anyhow::Context;

use crate::cli::{MigrateAction, MigrateArgs};
use crate::commands::{ExitStatus, connect_cli};
use crate::db::migrations;
use crate::output;

/// Runs `migrate [status]`.
pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitStatus> {
    let pool = connect_cli(&args.database).await?;
    match args.action {
        None => apply(&pool).await.map(|()| ExitStatus::Success),
        Some(MigrateAction::Status { json, check }) => {
            let mut conn = pool.acquire().await.context("could not get a database connection")?;
            let status = migrations::status(&mut conn).await.context("could not read the migration table")?;
            if json { output::print_json(&status) } else { output::print_table(&status_table(&status)) }
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

async fn apply(pool: &sqlx::PgPool) -> anyhow::Result<()> {
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
    output::status(&match new.len() {
        0 => format!("already up to date: schema version {version}"),
        1 => format!("applied 1 migration ({}); schema version {version}", new[0]),
        n => format!("applied {n} migrations ({}); schema version {version}", new.join(", ")),
    });
    Ok(())
}

fn status_table(status: &migrations::Status) -> comfy_table::Table {
    let mut table = output::table(["Version", "Description", "State", "Applied at"]);
    for applied in &status.applied {
        table.add_row([
            applied.version.to_string(),
            applied.description.clone(),
            "applied".into(),
            output::rfc3339(applied.applied_at),
        ]);
    }
    for pending in &status.pending {
        table.add_row([pending.version.to_string(), pending.description.clone(), "pending".into(), String::new()]);
    }
    table
}
