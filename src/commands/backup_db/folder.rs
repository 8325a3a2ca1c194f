//! `backup-db` into a folder: a temporary file that is fsynced and renamed, and `--keep`.

use std::fs::{self, File};
use std::io::BufWriter;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use time::{OffsetDateTime, PrimitiveDateTime};

use super::{Summary, take, write_pieces};
use crate::cli::BackupDbArgs;
use crate::commands::{TableRows, UsageError, connect_cli};
use crate::dump::naming;
use crate::encoding::{HashingWriter, hex};
use crate::output::Printer;

/// A dump being written is `.NAME.partial` beside its final name.
const PARTIAL_SUFFIX: &str = ".partial";
/// How old an unfinished dump must be before a later run deletes it.
const STALE_PARTIAL_AGE: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Dumps into the folder or file `--output` names.
pub async fn run(args: &BackupDbArgs, printer: Printer) -> anyhow::Result<Summary> {
    if args.retention.given() {
        return Err(UsageError(
            "--keep-daily, --keep-weekly, --keep-monthly and --keep-min are a bucket's retention (with --to); \
             a folder keeps its newest N dumps with --keep N"
                .into(),
        )
        .into());
    }
    let target = Target::of(&args.output, args.keep, args.force)?;
    let pool = connect_cli(&args.database).await?;
    let snapshot = super::begin_snapshot(&pool).await?;
    let (dir, path) = target.paths(snapshot.taken_at);
    // A dump holds every user's documents and token hashes: only its owner may read it.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("could not create {}", dir.display()))?;
    // Files' ages are by this machine's clock, as their modification times are.
    sweep_stale_partials(&dir, OffsetDateTime::now_utc(), printer)?;
    let file_name = path.file_name().context("the output has no file name")?.to_string_lossy().into_owned();
    let partial = dir.join(format!(".{file_name}{PARTIAL_SUFFIX}"));

    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("could not create {}", partial.display()))?;
    let interrupted = format!("interrupted: removed the unfinished {}; no dump was written", partial.display());
    let writing = partial.display().to_string();
    let taken = take(snapshot, interrupted, printer, move |header, pieces, bar| {
        let written = (|| {
            let sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
            let (trailer, sink) = write_pieces(sink, &header, pieces, &bar)?;
            let (buffered, bytes, sha256) = sink.finish();
            buffered.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            anyhow::Ok((trailer, (bytes, sha256)))
        })();
        written.with_context(|| format!("could not write {writing}"))
    })
    .await;
    let taken = match taken {
        Ok(taken) => taken,
        Err(error) => {
            let _ = fs::remove_file(&partial);
            return Err(error);
        }
    };

    fs::rename(&partial, &path).with_context(|| format!("could not move the dump to {}", path.display()))?;
    File::open(&dir).and_then(|d| d.sync_all()).with_context(|| format!("could not sync {}", dir.display()))?;
    if let Some(keep) = args.keep {
        rotate(&dir, keep as usize, &path, printer)?;
    }
    let (bytes, sha256) = taken.written;
    Ok(Summary {
        path: path.display().to_string(),
        bytes,
        sha256: hex(&sha256),
        seconds: 0.0,
        schema_version: taken.header.schema_version,
        tables: TableRows::of(&taken.trailer),
    })
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
        let target = if output.is_dir() || text.ends_with('/') || (!exists && !text.ends_with(naming::SUFFIX)) {
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
    fn paths(&self, now: OffsetDateTime) -> (PathBuf, PathBuf) {
        match self {
            Self::Folder(dir) => (dir.clone(), dir.join(format!("{}{}", naming::stem(now), naming::SUFFIX))),
            Self::File(file) => {
                let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                (dir.to_path_buf(), file.clone())
            }
        }
    }
}

/// When a file name is one this tool gives its timestamped dumps, the time in it.
fn dump_time(name: &str) -> Option<PrimitiveDateTime> {
    naming::parse_stem(name).filter(|(_, rest)| *rest == naming::SUFFIX).map(|(at, _)| at)
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
fn rotate(dir: &Path, keep: usize, written: &Path, printer: Printer) -> anyhow::Result<()> {
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
        printer.status(&format!("deleted old dump {}", old.display()));
    }
    Ok(())
}

/// Removes what killed runs left in `dir`: unfinished dumps of ours older than a day (one
/// younger may be another run's, still being written).
fn sweep_stale_partials(dir: &Path, now: OffsetDateTime, printer: Printer) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    let day_ago = std::time::SystemTime::from(now) - STALE_PARTIAL_AGE;
    for (name, metadata) in files_in(dir)? {
        let ours = name.starts_with('.') && name.ends_with(&format!("{}{PARTIAL_SUFFIX}", naming::SUFFIX));
        if ours && metadata.modified().is_ok_and(|modified| modified < day_ago) {
            let stale = dir.join(&name);
            fs::remove_file(&stale).with_context(|| format!("could not delete {}", stale.display()))?;
            printer.status(&format!("deleted {}, left unfinished by a run more than a day ago", stale.display()));
        }
    }
    Ok(())
}
