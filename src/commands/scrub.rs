//! `scrub`: re-reads every stored chunk and backup and names the damaged ones, as restic's
//! `check --read-data` and ZFS's scrub do. Read-only; exit 3 when anything is damaged.

use std::time::Instant;

use anyhow::Context;
use indicatif::ProgressBar;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cli::ScrubArgs;
use crate::commands::{ExitStatus, Interrupted, connect_cli};
use crate::db::scrub::{self, Batch, DamagedBackup, DamagedChunk};
use crate::output::{self, Fit, Printer, Rows};

/// Chunks per statement: about 8 KiB each, so some 8 MiB re-hashed per round trip.
const CHUNKS_PER_BATCH: i64 = 1000;
/// Backups per statement: each is reassembled whole inside PostgreSQL, one at a time.
const BACKUPS_PER_BATCH: i64 = 100;

/// What the scrub found.
#[derive(Debug, Serialize)]
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
pub async fn run(args: ScrubArgs, printer: Printer) -> anyhow::Result<ExitStatus> {
    let pool = connect_cli(&args.database).await?;
    let started = Instant::now();
    let mut report = tokio::select! {
        report = scrub(&pool, printer) => report?,
        _ = tokio::signal::ctrl_c() => {
            return Err(Interrupted("interrupted: the scrub only reads, so nothing was changed".into()).into());
        }
    };
    report.seconds = started.elapsed().as_secs_f64();
    report.ok = report.damaged_chunks.is_empty() && report.damaged_backups.is_empty();
    if args.json { output::print_json(&report) } else { print_text(&report, printer) }
        .context("could not write the output")?;
    if report.ok {
        return Ok(ExitStatus::Success);
    }
    output::warning(&format!(
        "{} damaged chunks and {} damaged backups",
        report.damaged_chunks.len(),
        report.damaged_backups.len()
    ));
    Ok(ExitStatus::Warned)
}

async fn scrub(pool: &PgPool, printer: Printer) -> anyhow::Result<Report> {
    let (chunks, backups) = scrub::totals(pool).await.context("could not count the chunks and backups")?;
    let bar = printer.progress(u64::try_from(chunks + backups).unwrap_or(0).max(1), "rows", false);
    bar.set_message("chunks");
    let chunks = pass(0, &bar, |after| scrub::chunk_batch(pool, after, CHUNKS_PER_BATCH))
        .await
        .context("could not read the chunks")?;
    bar.set_message("backups");
    let backups = pass(Uuid::nil(), &bar, |after| scrub::backup_batch(pool, after, BACKUPS_PER_BATCH))
        .await
        .context("could not read the backups")?;
    bar.finish_and_clear();
    Ok(Report {
        ok: false,
        chunks_checked: chunks.checked,
        chunk_bytes: chunks.bytes,
        backups_checked: backups.checked,
        document_bytes: backups.bytes,
        seconds: 0.0,
        damaged_chunks: scrub::damaged_chunks(pool, &chunks.damaged).await.context("could not describe the damage")?,
        damaged_backups: scrub::damaged_backups(pool, &backups.damaged)
            .await
            .context("could not describe the damage")?,
    })
}

/// Every batch of one pass, from the start to the end, added up.
async fn pass<Id: Copy, Fetched>(
    mut after: Id,
    bar: &ProgressBar,
    mut batch: impl FnMut(Id) -> Fetched,
) -> Result<Batch<Id>, crate::db::Error>
where
    Fetched: Future<Output = Result<Batch<Id>, crate::db::Error>>,
{
    let mut total = Batch { last_id: None, checked: 0, bytes: 0, damaged: Vec::new() };
    loop {
        let next = batch(after).await?;
        total.checked += next.checked;
        total.bytes += next.bytes;
        total.damaged.extend(next.damaged);
        bar.inc(next.checked.unsigned_abs());
        match next.last_id {
            Some(last) => after = last,
            None => return Ok(total),
        }
    }
}

fn print_text(report: &Report, printer: Printer) -> std::io::Result<()> {
    printer.status(&format!(
        "checked {} chunks ({}) and {} backups ({} of documents) in {:.1} s",
        report.chunks_checked,
        output::bytes(report.chunk_bytes),
        report.backups_checked,
        output::bytes(report.document_bytes),
        report.seconds
    ));
    if report.ok {
        printer.status("no damage: every chunk hashes to its name, every backup to its SHA-256");
        return Ok(());
    }
    let mut rows = Rows::new(&[
        ("Damaged", Fit::Wrap),
        ("Id", Fit::Whole),
        ("User", Fit::Whole),
        ("Backups", Fit::Wrap),
        ("Can it heal?", Fit::Wrap),
    ]);
    for chunk in &report.damaged_chunks {
        let heal = if chunk.in_latest {
            "yes: the latest backup names it, so the app's next upload sends its bytes again"
        } else {
            "only if the app uploads these bytes again; older backups only"
        };
        rows.push(vec![
            "chunk".into(),
            chunk.chunk_id.to_string().into(),
            chunk.user_id.to_string().into(),
            chunk.backups.into(),
            heal.into(),
        ]);
    }
    for backup in &report.damaged_backups {
        let heal = match (backup.bad_chunks, backup.latest) {
            (0, _) => "no: its list of chunks is wrong; delete it, or restore it from a database backup",
            (_, true) => "with its chunks (above); until then a restore of the latest fails",
            (_, false) => "with its chunks (above)",
        };
        let what = if backup.latest { "backup (latest)" } else { "backup" };
        rows.push(vec![
            what.into(),
            backup.backup_id.to_string().into(),
            backup.user_id.to_string().into(),
            1.into(),
            heal.into(),
        ]);
    }
    printer.rows(&rows)
}
