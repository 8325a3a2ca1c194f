//! `backup-db`: a consistent snapshot, streamed through zstd to a temporary file that is
//! fsynced and renamed, so no half-written dump ever sits under a final name.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use indicatif::ProgressBar;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::cli::BackupDbArgs;
use crate::commands::{TableRows, connect_cli};
use crate::db::dump::{Snapshot, TABLES};
use crate::dump::writer::DumpWriter;
use crate::dump::{self, FORMAT_VERSION, Header, Trailer};
use crate::output;
use crate::signature::hex;

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
/// Dumps this tool names, and `--keep` rotates.
const NAME_PREFIX: &str = "dailyreps-";
const NAME_SUFFIX: &str = ".sql.zst";

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
pub async fn run(args: BackupDbArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let now = OffsetDateTime::now_utc();
    let (dir, path) = output_path(&args.output, now);
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let file_name = path.file_name().context("the output has no file name")?.to_string_lossy().into_owned();
    let partial = dir.join(format!(".{file_name}.partial"));

    let pool = connect_cli(&args.database).await?;
    let mut snapshot = Snapshot::begin(&pool).await.context("could not start the snapshot")?;
    let schema_version =
        snapshot.schema_version().await.context("could not read the schema version (is the database migrated?)")?;
    let schema = Snapshot::schema_sql(schema_version)?;
    let header = Header {
        format_version: FORMAT_VERSION,
        created_at: output::rfc3339(now),
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
        postgres_version: snapshot.postgres_version().await?,
        schema_version,
    };
    let estimated = snapshot.estimated_rows().await?;

    let file = File::create(&partial).with_context(|| format!("could not create {}", partial.display()))?;
    let (sender, receiver) = mpsc::channel(PIECES_IN_FLIGHT);
    let bar = output::progress(u64::try_from(estimated).unwrap_or(0).max(1), "rows");
    let writer_bar = bar.clone();
    let writer = std::thread::spawn(move || write_dump(file, &header, receiver, &writer_bar));
    let streamed = stream(&mut snapshot, schema, &sender, &bar).await;
    drop(sender);
    let written = writer.join().map_err(|_| anyhow::anyhow!("the dump writer crashed"))?;
    bar.finish_and_clear();
    let (trailer, bytes, sha256) = match streamed.and_then(|()| written.context("could not write the dump")) {
        Ok(done) => done,
        Err(error) => {
            let _ = fs::remove_file(&partial);
            return Err(error);
        }
    };
    snapshot.finish().await?;

    fs::rename(&partial, &path).with_context(|| format!("could not move the dump to {}", path.display()))?;
    File::open(&dir).and_then(|d| d.sync_all()).with_context(|| format!("could not sync {}", dir.display()))?;
    if let Some(keep) = args.keep {
        rotate(&dir, keep as usize)?;
    }

    let summary = Summary {
        path: path.display().to_string(),
        bytes,
        sha256,
        seconds: started.elapsed().as_secs_f64(),
        schema_version,
        tables: TableRows::of(&trailer),
    };
    if args.json {
        return output::print_json(&summary).context("could not write the summary");
    }
    output::print_table(&TableRows::table(&summary.tables)).context("could not write the summary")?;
    output::status(&format!(
        "wrote {} ({}) in {:.1} s; schema version {schema_version}; check it with `verify-backup`",
        summary.path,
        output::bytes(i64::try_from(bytes).unwrap_or(i64::MAX)),
        summary.seconds
    ));
    Ok(())
}

/// The folder and final path: a folder (existing, or written with a trailing `/`) gets a
/// UTC-timestamped name.
fn output_path(output: &Path, now: OffsetDateTime) -> (PathBuf, PathBuf) {
    let is_dir = output.is_dir() || output.as_os_str().to_string_lossy().ends_with('/');
    if is_dir {
        // Milliseconds keep two dumps in one second apart; the names sort by age.
        let name = format!(
            "{NAME_PREFIX}{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z{NAME_SUFFIX}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.millisecond()
        );
        (output.to_path_buf(), output.join(name))
    } else {
        let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        (dir.to_path_buf(), output.to_path_buf())
    }
}

/// Sends the schema, every table's COPY data and the sequences to the writer.
async fn stream(
    snapshot: &mut Snapshot,
    schema: String,
    sender: &mpsc::Sender<Piece>,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let closed = || anyhow::anyhow!("the dump writer stopped");
    sender.send(Piece::Section("schema", schema)).await.map_err(|_| closed())?;
    let mut bytes = 0u64;
    for table in TABLES {
        let columns = snapshot.columns(table).await?;
        sender.send(Piece::Begin((*table).to_owned(), columns.clone())).await.map_err(|_| closed())?;
        bar.set_message(format!("{table}, {}", output::bytes(i64::try_from(bytes).unwrap_or(i64::MAX))));
        let mut data = snapshot.copy_out(table, &columns).await.with_context(|| format!("could not read {table}"))?;
        let (mut batch, mut batch_bytes) = (Vec::new(), 0);
        while let Some(chunk) = data.next().await {
            let chunk = chunk.with_context(|| format!("reading {table} failed"))?;
            bytes += chunk.len() as u64;
            batch_bytes += chunk.len();
            batch.push(chunk);
            if batch_bytes >= BATCH_BYTES {
                batch_bytes = 0;
                sender.send(Piece::Data(std::mem::take(&mut batch))).await.map_err(|_| closed())?;
            }
        }
        drop(data);
        if !batch.is_empty() {
            sender.send(Piece::Data(batch)).await.map_err(|_| closed())?;
        }
        sender.send(Piece::End).await.map_err(|_| closed())?;
    }
    let sequences = snapshot.sequences_sql().await?;
    sender.send(Piece::Section("sequences", sequences)).await.map_err(|_| closed())?;
    sender.send(Piece::Complete).await.map_err(|_| closed())?;
    Ok(())
}

/// The writer thread: compresses and writes while the database side reads.
fn write_dump(
    file: File,
    header: &Header,
    mut pieces: mpsc::Receiver<Piece>,
    bar: &ProgressBar,
) -> anyhow::Result<(Trailer, u64, String)> {
    let hashing = HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), bytes: 0, hash: Sha256::new() };
    let mut writer = DumpWriter::new(dump::compress(hashing)?, header)?;
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
            }
            Piece::End => drop(writer.end_table()?),
            Piece::Complete => complete = true,
        }
    }
    if !complete {
        bail!("the dump was abandoned before the end");
    }
    let (encoder, trailer) = writer.finish()?;
    let hashing = encoder.finish()?;
    let file = hashing.inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((trailer, hashing.bytes, hex(&hashing.hash.finalize())))
}

/// Counts and hashes what goes to the file.
struct HashingWriter<W: Write> {
    inner: W,
    bytes: u64,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Deletes the oldest dumps this tool named in `dir`, beyond the newest `keep`.
fn rotate(dir: &Path, keep: usize) -> anyhow::Result<()> {
    let mut dumps: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("could not list {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(NAME_PREFIX) && n.ends_with(NAME_SUFFIX))
        })
        .collect();
    // The names carry UTC timestamps, so name order is age order.
    dumps.sort();
    let excess = dumps.len().saturating_sub(keep);
    for old in &dumps[..excess] {
        fs::remove_file(old).with_context(|| format!("could not delete {}", old.display()))?;
        output::status(&format!("deleted old dump {}", old.display()));
    }
    Ok(())
}
