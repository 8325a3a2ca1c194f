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
use time::{OffsetDateTime, PrimitiveDateTime};
use tokio::sync::mpsc;

use crate::cli::BackupDbArgs;
use crate::commands::{Interrupted, TableRows, UsageError, connect_cli};
use crate::db::dump::{Snapshot, TABLES};
use crate::dump::writer::DumpWriter;
use crate::dump::{self, FORMAT_VERSION, Header, Trailer};
use crate::encoding::hex;
use crate::output;

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
/// A dump being written is `.NAME.partial` beside its final name.
const PARTIAL_SUFFIX: &str = ".partial";
/// How old an unfinished dump must be before a later run deletes it.
const STALE_PARTIAL_AGE: std::time::Duration = std::time::Duration::from_secs(86_400);

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
    let target = Target::of(&args.output, args.keep, args.force)?;
    let (dir, path) = target.paths(now)?;
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    sweep_stale_partials(&dir, now)?;
    let file_name = path.file_name().context("the output has no file name")?.to_string_lossy().into_owned();
    let partial = dir.join(format!(".{file_name}{PARTIAL_SUFFIX}"));

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
    let streamed = tokio::select! {
        streamed = stream(&mut snapshot, schema, &sender, &bar) => streamed,
        _ = tokio::signal::ctrl_c() => Err(Interrupted(format!(
            "interrupted: removed the unfinished {}; no dump was written", partial.display()
        )).into()),
    };
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
        rotate(&dir, keep as usize, &path)?;
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

/// Where `--output` points.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// A folder of timestamped dumps (created if missing), which `--keep` rotates.
    Folder(PathBuf),
    /// One file.
    File(PathBuf),
}

impl Target {
    /// A folder when it is one, is written with a trailing `/`, or does not exist and has no
    /// dump extension; otherwise a file, which must not exist unless `force`.
    fn of(output: &Path, keep: Option<u32>, force: bool) -> anyhow::Result<Self> {
        let text = output.as_os_str().to_string_lossy();
        let exists = fs::symlink_metadata(output).is_ok();
        let target = if output.is_dir() || text.ends_with('/') || (!exists && !text.ends_with(NAME_SUFFIX)) {
            Self::Folder(output.to_path_buf())
        } else {
            Self::File(output.to_path_buf())
        };
        if let Self::File(file) = &target {
            if keep.is_some() {
                return Err(UsageError(format!(
                    "--keep rotates the dumps of a folder, and {} is a file; give a folder (e.g. backups/)",
                    file.display()
                ))
                .into());
            }
            if exists && !force {
                bail!("{} already exists; add --force to overwrite it, or give a folder", file.display());
            }
        }
        Ok(target)
    }

    /// The folder and the final path of the dump taken at `now`.
    fn paths(&self, now: OffsetDateTime) -> anyhow::Result<(PathBuf, PathBuf)> {
        Ok(match self {
            Self::Folder(dir) => {
                let stamp = now.format(&name_stamp()).context("formatting the dump's name")?;
                (dir.clone(), dir.join(format!("{NAME_PREFIX}{stamp}{NAME_SUFFIX}")))
            }
            Self::File(file) => {
                let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                (dir.to_path_buf(), file.clone())
            }
        })
    }
}

/// The UTC time in a dump's name, to the millisecond so two dumps in one second stay apart.
fn name_stamp() -> Vec<time::format_description::BorrowedFormatItem<'static>> {
    time::format_description::parse_borrowed::<2>("[year][month][day]T[hour][minute][second].[subsecond digits:3]Z")
        .expect("a valid format description")
}

/// When a file name is one this tool gives its timestamped dumps, the time in it.
fn dump_time(name: &str) -> Option<PrimitiveDateTime> {
    let stamp = name.strip_prefix(NAME_PREFIX)?.strip_suffix(NAME_SUFFIX)?;
    PrimitiveDateTime::parse(stamp, &name_stamp()).ok()
}

/// The regular files of `dir` (never folders or links), with their names.
fn files_in(dir: &Path) -> anyhow::Result<Vec<(String, fs::Metadata)>> {
    let entries = fs::read_dir(dir).with_context(|| format!("could not list {}", dir.display()))?;
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|entry| Some((entry.file_name().into_string().ok()?, entry.metadata().ok()?)))
        .filter(|(_, metadata)| metadata.file_type().is_file())
        .collect())
}

/// Deletes the oldest of this tool's timestamped dumps in `dir` so that `keep` remain with
/// `written`, by the time in their names. Nothing else in the folder is touched, and never
/// the dump just written.
fn rotate(dir: &Path, keep: usize, written: &Path) -> anyhow::Result<()> {
    let written = written.file_name().and_then(|n| n.to_str());
    let mut dumps: Vec<(PrimitiveDateTime, String)> = files_in(dir)?
        .into_iter()
        .filter(|(name, _)| Some(name.as_str()) != written)
        .filter_map(|(name, _)| Some((dump_time(&name)?, name)))
        .collect();
    dumps.sort_unstable_by(|a, b| b.cmp(a));
    for (_, old) in dumps.iter().skip(keep.saturating_sub(1)) {
        let old = dir.join(old);
        fs::remove_file(&old).with_context(|| format!("could not delete {}", old.display()))?;
        output::status(&format!("deleted old dump {}", old.display()));
    }
    Ok(())
}

/// Removes what killed runs left in `dir`: unfinished dumps of ours older than a day (one
/// younger may be another run's, still being written).
fn sweep_stale_partials(dir: &Path, now: OffsetDateTime) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    let day_ago = std::time::SystemTime::from(now) - STALE_PARTIAL_AGE;
    for (name, metadata) in files_in(dir)? {
        let ours = name.starts_with('.') && name.ends_with(&format!("{NAME_SUFFIX}{PARTIAL_SUFFIX}"));
        if ours && metadata.modified().is_ok_and(|modified| modified < day_ago) {
            let stale = dir.join(&name);
            fs::remove_file(&stale).with_context(|| format!("could not delete {}", stale.display()))?;
            output::status(&format!("deleted {}, left unfinished by a run more than a day ago", stale.display()));
        }
    }
    Ok(())
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
    let sequences: String = snapshot.sequences().await?.iter().map(|s| s.to_sql() + "\n").collect();
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
