//! `scrub`: re-reads every stored chunk and backup and names the damaged ones, as restic's
//! `check --read-data` and ZFS's scrub do. Read-only; exit 3 when anything is damaged.

use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cli::ScrubArgs;
use crate::commands::{Interrupted, Warned, connect_cli};
use crate::db::scrub::{self, DamagedBackup, DamagedChunk};
use crate::output;

/// Chunks per statement: about 8 KiB each, so some 8 MiB re-hashed per round trip.
const CHUNKS_PER_BATCH: i64 = 1000;
/// Backups per statement: each is reassembled whole inside PostgreSQL, one at a time.
const BACKUPS_PER_BATCH: i64 = 100;

/// What the scrub found.
#[derive(Debug, Default, Serialize)]
struct Report {
    ok: bool,
    chunks_checked: i64,
    chunk_bytes: i64,
    backups_checked: i64,
    document_bytes: i64,
    seconds: f64,
    damaged_chunks: Vec<DamagedChunk>,
    damaged_backups: Vec<DamagedBackup>,
}

/// Runs `scrub`.
pub async fn run(args: ScrubArgs) -> anyhow::Result<()> {
    let pool = connect_cli(&args.database).await?;
    let started = Instant::now();
    let mut report = tokio::select! {
        report = scrub(&pool) => report?,
        _ = tokio::signal::ctrl_c() => {
            return Err(Interrupted("interrupted: the scrub only reads, so nothing was changed".into()).into());
        }
    };
    report.seconds = started.elapsed().as_secs_f64();
    report.ok = report.damaged_chunks.is_empty() && report.damaged_backups.is_empty();
    if args.json { output::print_json(&report) } else { print_text(&report) }.context("could not write the output")?;
    if report.ok {
        return Ok(());
    }
    Err(Warned(format!(
        "{} damaged chunks and {} damaged backups",
        report.damaged_chunks.len(),
        report.damaged_backups.len()
    ))
    .into())
}

async fn scrub(pool: &PgPool) -> anyhow::Result<Report> {
    let (chunks, backups) = scrub::totals(pool).await.context("could not count the chunks and backups")?;
    let bar = output::progress(u64::try_from(chunks + backups).unwrap_or(0).max(1), "rows", false);
    let mut report = Report::default();
    let (mut damaged_chunks, mut damaged_backups) = (Vec::new(), Vec::new());
    let mut after = 0;
    bar.set_message("chunks");
    loop {
        let batch = scrub::chunk_batch(pool, after, CHUNKS_PER_BATCH).await.context("could not read the chunks")?;
        let Some(last) = batch.last_id else { break };
        after = last;
        report.chunks_checked += batch.checked;
        report.chunk_bytes += batch.bytes;
        damaged_chunks.extend(batch.damaged);
        bar.inc(batch.checked.unsigned_abs());
    }
    let mut after = Uuid::nil();
    bar.set_message("backups");
    loop {
        let batch = scrub::backup_batch(pool, after, BACKUPS_PER_BATCH).await.context("could not read the backups")?;
        let Some(last) = batch.last_id else { break };
        after = last;
        report.backups_checked += batch.checked;
        report.document_bytes += batch.bytes;
        damaged_backups.extend(batch.damaged);
        bar.inc(batch.checked.unsigned_abs());
    }
    bar.finish_and_clear();
    report.damaged_chunks =
        scrub::damaged_chunks(pool, &damaged_chunks).await.context("could not describe the damage")?;
    report.damaged_backups =
        scrub::damaged_backups(pool, &damaged_backups).await.context("could not describe the damage")?;
    Ok(report)
}

fn print_text(report: &Report) -> std::io::Result<()> {
    output::status(&format!(
        "checked {} chunks ({}) and {} backups ({} of documents) in {:.1} s",
        report.chunks_checked,
        output::bytes(report.chunk_bytes),
        report.backups_checked,
        output::bytes(report.document_bytes),
        report.seconds
    ));
    if report.ok {
        output::status("no damage: every chunk hashes to its name, every backup to its SHA-256");
        return Ok(());
    }
    let mut table = output::table(["Damaged", "Id", "User", "Backups", "Can it heal?"]);
    for chunk in &report.damaged_chunks {
        let heal = if chunk.in_latest {
            "yes: the latest backup names it, so the app's next upload sends its bytes again"
        } else {
            "only if the app uploads these bytes again; older backups only"
        };
        table.add_row([
            "chunk".to_owned(),
            chunk.chunk_id.to_string(),
            chunk.user_id.to_string(),
            chunk.backups.to_string(),
            heal.to_owned(),
        ]);
    }
    for backup in &report.damaged_backups {
        let heal = match (backup.bad_chunks, backup.latest) {
            (0, _) => "no: its list of chunks is wrong; delete it, or restore it from a database backup",
            (_, true) => "with its chunks (above); until then a restore of the latest fails",
            (_, false) => "with its chunks (above)",
        };
        let what = if backup.latest { "backup (latest)" } else { "backup" };
        table.add_row([
            what.to_owned(),
            backup.backup_id.to_string(),
            backup.user_id.to_string(),
            "1".to_owned(),
            heal.to_owned(),
        ]);
    }
    output::print_table(&table)
}
