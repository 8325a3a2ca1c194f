//! `migrate` and `migrate status`.

use anyhow::Context;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::{MigrateAction, MigrateArgs};
use crate::commands::connect_cli;
use crate::db::migrations;
use crate::output;

/// Runs `migrate [status]`.
pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let pool = connect_cli(&args.database).await?;
    match args.action {
        None => apply(&pool).await,
        Some(MigrateAction::Status { json }) => {
            let mut conn = pool.acquire().await.context("could not get a database connection")?;
            let status = migrations::status(&mut conn).await.context("could not read the migration table")?;
            if json {
                output::print_json(&StatusJson::from(&status))
            } else {
                output::print_table(&status_table(&status))
            }
            .context("could not write the output")
        }
    }
}

async fn apply(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    migrations::apply(pool).await.context("migration failed")?;
    let mut conn = pool.acquire().await.context("could not get a database connection")?;
    let status = migrations::status(&mut conn).await.context("could not read the migration table")?;
    let version = status.applied.iter().map(|a| a.version).max().unwrap_or(0);
    output::status(&format!("database schema is at version {version} ({} migrations applied)", status.applied.len()));
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

#[derive(Serialize)]
struct StatusJson {
    applied: Vec<AppliedJson>,
    pending: Vec<PendingJson>,
}

#[derive(Serialize)]
struct AppliedJson {
    version: i64,
    description: String,
    #[serde(with = "time::serde::rfc3339")]
    applied_at: OffsetDateTime,
}

#[derive(Serialize)]
struct PendingJson {
    version: i64,
    description: String,
}

impl From<&migrations::Status> for StatusJson {
    fn from(status: &migrations::Status) -> Self {
        Self {
            applied: status
                .applied
                .iter()
                .map(|a| AppliedJson {
                    version: a.version,
                    description: a.description.clone(),
                    applied_at: a.applied_at.to_offset(time::UtcOffset::UTC),
                })
                .collect(),
            pending: status
                .pending
                .iter()
                .map(|p| PendingJson { version: p.version, description: p.description.clone() })
                .collect(),
        }
    }
}
