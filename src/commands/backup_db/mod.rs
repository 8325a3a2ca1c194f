//! `backup-db`: a consistent snapshot of the database, streamed through zstd into a folder
//! (`folder`) or up to a bucket (`bucket`). Either way no half-written dump ever sits under
//! a final name, and memory stays flat whatever the database's size.

mod bucket;
mod folder;

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use indicatif::ProgressBar;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::cli::BackupDbArgs;
use crate::commands::{Interrupted, TableRows, connect_cli};
use crate::db;
use crate::db::dump::{Snapshot, TABLES};
use crate::dump::writer::DumpWriter;
use crate::dump::{self, FORMAT_VERSION, Header, Trailer};
use crate::output::{self, Printer};
use crate::ping::Ping;

/// What the database side hands the writer thread.
enum Piece {
    Section(&'static str, String),
    Begin(String, Vec<String>),
    /// COPY messages (a row each) gathered up to [`BATCH_BYTES`]: one hand-over per batch,
    /// not per row, keeps the threads from waking each other 200,000 times.
    Data(Vec<Bytes>),
    End,
    /// Everything was sent; without it the dump is abandoned.
    Complete,
}

/// Batches in flight between the database and the compressor: with [`BATCH_BYTES`], what
/// bounds memory (about 2 MiB).
const PIECES_IN_FLIGHT: usize = 16;
/// Bytes of COPY data gathered before handing them to the compressor.
const BATCH_BYTES: usize = 128 * 1024;
/// What a finished dump reports (`--json` prints it).
#[derive(Serialize)]
struct Summary {
    path: String,
    bytes: u64,
    sha256: String,
    seconds: f64,
    schema_version: i64,
    tables: Vec<TableRows>,
}

/// Runs `backup-db`.
pub async fn run(args: BackupDbArgs, printer: Printer) -> anyhow::Result<()> {
    let started = Instant::now();
    let ping = args.ping.as_deref().and_then(Ping::new);
    if let Some(ping) = &ping {
        ping.start().await;
    }
    let taken = match &args.to {
        Some(url) => bucket::run(&args, url, printer).await,
        None => folder::run(&args, printer).await,
    };
    let summary = match taken {
        Ok(summary) => Summary { seconds: started.elapsed().as_secs_f64(), ..summary },
        Err(error) => {
            if let Some(ping) = &ping {
                ping.fail(&format!("{error:#}")).await;
            }
            return Err(error);
        }
    };
    record(&args, &summary).await;
    if let Some(ping) = &ping {
        ping.success(format!("{} ({} bytes) in {:.1} s", summary.path, summary.bytes, summary.seconds)).await;
    }
    if args.json {
        return output::print_json(&summary).context("could not write the summary");
    }
    printer.rows(&TableRows::rows(&summary.tables)).context("could not write the summary")?;
    printer.status(&format!(
        "wrote {} ({}) in {:.1} s; schema version {}; check it with `verify-backup`",
        summary.path,
        output::bytes(i64::try_from(summary.bytes).unwrap_or(i64::MAX)),
        summary.seconds,
        summary.schema_version
    ));
    Ok(())
}

/// Records the completed backup in the database (its own short transaction), for `serve`'s
/// gauge. The backup is complete either way: a failure here is only reported.
async fn record(args: &BackupDbArgs, summary: &Summary) {
    let recorded = async {
        let pool = connect_cli(&args.database).await?;
        db::database_backups::record(&pool, &summary.path, summary.bytes, summary.seconds).await?;
        anyhow::Ok(())
    };
    if let Err(error) = recorded.await {
        output::warning(&format!("the backup is complete, but recording it in the database failed: {error:#}"));
    }
}

/// The writer's end of the queue closed: it failed, and its own error says why.
#[derive(Debug, thiserror::Error)]
#[error("the dump writer stopped")]
struct WriterStopped;

/// A dump taken: its manifest, and what its sink reported.
struct Taken<T> {
    header: Header,
    trailer: Trailer,
    written: T,
}

/// Starts the one consistent snapshot a dump is taken from; its time names the dump.
async fn begin_snapshot(pool: &PgPool) -> anyhow::Result<Snapshot> {
    Snapshot::begin(pool).await.context("could not start the snapshot")
}

/// Writes `snapshot` as a dump through `write`, which runs on a thread of its own with the
/// dump's compressed bytes to put somewhere (and returns what it made of them). Ctrl-C abandons
/// the dump: `write` then fails, and its error is the one returned, with `interrupted` as the
/// message.
async fn take<T: Send + 'static>(
    mut snapshot: Snapshot,
    interrupted: String,
    printer: Printer,
    write: impl FnOnce(Header, mpsc::Receiver<Piece>, ProgressBar) -> anyhow::Result<(Trailer, T)> + Send + 'static,
) -> anyhow::Result<Taken<T>> {
    let now = snapshot.taken_at;
    let schema_version = snapshot.schema_version().await.context("could not read the schema version")?;
    let schema = Snapshot::schema_sql(schema_version)?;
    let header = Header {
        format_version: FORMAT_VERSION,
        created_at: output::rfc3339(now),
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
        postgres_version: snapshot.postgres_version().await?,
        schema_version,
    };
    let estimated = snapshot.estimated_rows().await?;
    let (sender, receiver) = mpsc::channel(PIECES_IN_FLIGHT);
    let bar = printer.progress(u64::try_from(estimated).unwrap_or(0).max(1), "rows", true);
    let (writer_header, writer_bar) = (header.clone(), bar.clone());
    // A blocking thread, awaited rather than joined: the task waiting for it may also be the
    // one draining what it writes (a bucket's parts).
    let writer = tokio::task::spawn_blocking(move || write(writer_header, receiver, writer_bar));
    let streamed = tokio::select! {
        streamed = stream(&mut snapshot, schema, &sender, &bar) => streamed,
        _ = tokio::signal::ctrl_c() => Err(Interrupted(interrupted).into()),
    };
    drop(sender);
    let written = writer.await.map_err(|_| anyhow::anyhow!("the dump writer crashed"))?;
    bar.finish_and_clear();
    let (trailer, written) = match (streamed, written) {
        (Ok(()), written) => written.context("could not write the dump")?,
        // The writer stopped first (a full disk, a file size limit, a refused part): its error
        // is the cause; the reader's says only that it was stopped.
        (Err(error), Err(cause)) if error.is::<WriterStopped>() => return Err(cause),
        (Err(error), _) => return Err(error),
    };
    snapshot.finish().await?;
    Ok(Taken { header, trailer, written })
}

/// Sends the schema, every table's COPY data and the sequences to the writer.
async fn stream(
    snapshot: &mut Snapshot,
    schema: String,
    sender: &mpsc::Sender<Piece>,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let closed = || anyhow::Error::new(WriterStopped);
    sender.send(Piece::Section("schema", schema)).await.map_err(|_| closed())?;
    let mut bytes = 0u64;
    for table in TABLES {
        let columns = snapshot.columns(table).await?;
        if columns.is_empty() {
            continue; // Not in this (older) schema.
        }
        sender.send(Piece::Begin((*table).to_owned(), columns.clone())).await.map_err(|_| closed())?;
        bar.set_message(format!("{table}, {} read", indicatif::HumanBytes(bytes)));
        let mut data = snapshot.copy_out(table, &columns).await.with_context(|| format!("could not read {table}"))?;
        let (mut batch, mut batch_bytes) = (Vec::new(), 0);
        while let Some(chunk) = data.next().await {
            let chunk = chunk.with_context(|| format!("reading {table} failed"))?;
            bytes += chunk.len() as u64;
            batch_bytes += chunk.len();
            batch.push(chunk);
            if batch_bytes >= BATCH_BYTES {
                batch_bytes = 0;
                bar.set_message(format!("{table}, {} read", indicatif::HumanBytes(bytes)));
                sender.send(Piece::Data(std::mem::take(&mut batch))).await.map_err(|_| closed())?;
            }
        }
        drop(data);
        if !batch.is_empty() {
            sender.send(Piece::Data(batch)).await.map_err(|_| closed())?;
        }
        sender.send(Piece::End).await.map_err(|_| closed())?;
    }
    let sequences: String = snapshot.sequences().await?.iter().map(|s| s.to_sql() + "\n").collect();
    sender.send(Piece::Section("sequences", sequences)).await.map_err(|_| closed())?;
    sender.send(Piece::Complete).await.map_err(|_| closed())?;
    Ok(())
}

/// Writes the pieces as a dump into `sink` (compressed); returns the trailer and the sink.
fn write_pieces<W: Write>(
    sink: W,
    header: &Header,
    mut pieces: mpsc::Receiver<Piece>,
    bar: &ProgressBar,
) -> anyhow::Result<(Trailer, W)> {
    let mut writer = DumpWriter::new(dump::compress(sink)?, header)?;
    let mut complete = false;
    while let Some(piece) = pieces.blocking_recv() {
        match piece {
            Piece::Section(kind, sql) => writer.section(kind, &sql)?,
            Piece::Begin(name, columns) => writer.begin_table(&name, &columns)?,
            // The writer counts rows anyway; the progress bar takes its count.
            Piece::Data(chunks) => {
                for chunk in chunks {
                    bar.inc(writer.table_data(&chunk)?);
                }
                // The total is the planner's estimate: past it, the bar grows rather than lie.
                if bar.length().is_some_and(|length| bar.position() > length) {
                    bar.set_length(bar.position());
                }
            }
            Piece::End => drop(writer.end_table()?),
            Piece::Complete => complete = true,
        }
    }
    if !complete {
        bail!("the dump was abandoned before the end");
    }
    let (encoder, trailer) = writer.finish()?;
    Ok((trailer, encoder.finish()?))
}
