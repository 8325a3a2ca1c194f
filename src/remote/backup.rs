//! A database backup to a bucket, in the order that makes it safe. The caller writes the dump
//! and prints what happens; the order is kept here:
//!
//! 1. the uploads that killed runs left are aborted (each was recorded before its first part);
//! 2. the multipart upload is started, and recorded;
//! 3. the dump goes up as it is written, hashed on the way;
//! 4. on any failure or interrupt the upload is aborted: nothing of it is kept;
//! 5. the stored object's size is checked and, unless the caller says not to, it is read back
//!    and its SHA-256 compared with what was sent;
//! 6. the manifest is written, last: only now is there a backup;
//! 7. housekeeping, which never fails the backup: the record goes, retention runs.

use std::future::Future;
use std::io::{self, Write};
use std::time::Instant;

use time::OffsetDateTime;

use super::catalog::{MANIFEST_FORMAT, Manifest, Names, TableCount, UploadRecord};
use super::retention::CalendarRetention;
use super::upload::{PartWriter, Sent, Upload};
use super::{Bucket, RemoteError};
use crate::encoding::{HashingReader, HashingWriter, hex};

/// What the backup is to be.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The snapshot's instant, by the database's clock: it names the backup.
    pub taken_at: OffsetDateTime,
    /// The public keys the dump is encrypted to; none for an unencrypted dump.
    pub recipients: Vec<String>,
    /// Read the stored object back and compare it with what was sent.
    pub read_back: bool,
    /// Calendar retention, applied after a good backup.
    pub retention: CalendarRetention,
}

/// What a manifest records of the dump, from its header and trailer.
#[derive(Debug, Clone)]
pub struct DumpFacts {
    /// The server that took it.
    pub server_version: String,
    /// The PostgreSQL it was taken from.
    pub postgres_version: String,
    /// The schema's version.
    pub schema_version: i64,
    /// Rows per table.
    pub tables: Vec<TableCount>,
}

/// Where the dump is written: the upload's parts, hashed on the way. The writer finishes it
/// on its own thread with [`DumpSink::finish`].
pub struct DumpSink(HashingWriter<PartWriter>);

/// A dump written whole into a [`DumpSink`]: its size and SHA-256.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    bytes: u64,
    sha256: [u8; 32],
}

impl DumpSink {
    /// Hands over the last part; the upload completes once the sender has it.
    pub fn finish(self) -> io::Result<Written> {
        let (parts, bytes, sha256) = self.0.finish();
        parts.finish()?;
        Ok(Written { bytes, sha256 })
    }
}

impl Write for DumpSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// What the backup did besides the backup, for the caller to tell.
#[derive(Debug, Clone)]
pub enum Event {
    /// An upload a killed run left was aborted.
    AbortedUnfinished(String),
    /// The stored object read back as it was sent.
    ReadBack {
        /// The object, described.
        name: String,
        /// Its size.
        bytes: u64,
    },
    /// Retention deleted a backup.
    Deleted(String),
    /// Something of the housekeeping failed; the backup stands.
    Warning(String),
}

/// Why there is no backup. Nothing of the upload was kept.
#[derive(Debug, thiserror::Error)]
pub enum Failure<E> {
    /// Writing the dump failed, or was interrupted.
    #[error("{0}")]
    Dump(E),
    /// The bucket refused or did not answer.
    #[error(transparent)]
    Bucket(#[from] RemoteError),
    /// The dump ended, but the upload never completed.
    #[error("the dump ended, but its upload was left unfinished")]
    Unfinished,
    /// What is stored is not what was sent.
    #[error("{0}")]
    NotAsSent(String),
    /// The data is stored and checked, but the manifest that makes it a backup is not.
    #[error("the data is stored, but its manifest is not: {0}")]
    NoManifest(RemoteError),
    /// A task of the backup panicked.
    #[error("a task of the backup crashed: {0}")]
    Crashed(String),
}

/// A complete backup.
#[derive(Debug, Clone)]
pub struct Completed {
    /// The data object, described (`s3://…`).
    pub location: String,
    /// Its manifest, as written.
    pub manifest: Manifest,
}

impl Bucket {
    /// Backs a database up into this bucket, in the order the module describes. `dump` writes
    /// the dump into the sink it is given (on a thread of its own, finishing the sink) and
    /// returns its facts; it also gets where the data goes, described, for its messages.
    /// `report` hears what happens besides.
    pub async fn back_up<E, D, Dumped>(
        &self,
        plan: Plan,
        dump: D,
        report: impl Fn(Event),
    ) -> Result<Completed, Failure<E>>
    where
        D: FnOnce(DumpSink, String) -> Dumped,
        Dumped: Future<Output = Result<(DumpFacts, Written), E>>,
    {
        let started = Instant::now();
        self.abort_unfinished(&report).await?;
        let encrypted = !plan.recipients.is_empty();
        let names = Names::of(plan.taken_at, encrypted);
        let upload = self.start_upload(&names.data).await?;
        let record = UploadRecord { data: names.data.clone(), upload_id: upload.id.clone() };
        let stored = match self.record_upload(&names.upload, &record).await {
            Ok(()) => self.send(&upload, dump).await,
            Err(error) => Err(error.into()),
        };
        let (facts, sent) = match stored {
            Ok(stored) => stored,
            Err(error) => {
                // Nothing of a failed or interrupted upload is kept.
                if let Err(abort) = self.abort(&upload).await {
                    tracing::warn!(error = %abort, "could not abort the upload; the next run will");
                } else {
                    let _ = self.delete(&names.upload).await;
                }
                return Err(error);
            }
        };
        self.check_stored(&names.data, sent, plan.read_back, &report).await?;
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT,
            data: names.data.clone(),
            created_at: plan.taken_at,
            server_version: facts.server_version,
            postgres_version: facts.postgres_version,
            schema_version: facts.schema_version,
            tables: facts.tables,
            bytes: sent.bytes,
            sha256: hex(&sent.sha256),
            encrypted,
            recipients: plan.recipients,
        };
        self.create_manifest(&names.manifest, &manifest).await.map_err(Failure::NoManifest)?;
        // An append-only key (one that may put, get and list but not delete) is refused this.
        match self.delete(&names.upload).await {
            Err(error) if error.is_denied() => {}
            Err(error) => report(Event::Warning(format!(
                "the backup is complete, but the record of its upload could not be deleted: {error}"
            ))),
            Ok(()) => {}
        }
        // Only after a good, checked upload; by the database's clock, as the backups are dated.
        let now = plan.taken_at + time::Duration::seconds_f64(started.elapsed().as_secs_f64());
        match self.apply_retention(plan.retention, now).await {
            Ok(deleted) => deleted.iter().for_each(|name| report(Event::Deleted(self.describe(name)))),
            Err(error) if error.is_denied() => report(Event::Warning(format!(
                "retention was not applied: this key may not delete in {} (access denied), so nothing was \
                 deleted; grant it s3:DeleteObject and s3:AbortMultipartUpload to prune",
                self.url
            ))),
            Err(error) => report(Event::Warning(format!(
                "the backup is complete, but applying retention failed (the next run tries again): {error}"
            ))),
        }
        Ok(Completed { location: self.describe(&names.data), manifest })
    }

    /// Writes the dump into the upload's parts while they go up; both must succeed.
    async fn send<E, D, Dumped>(&self, upload: &Upload, dump: D) -> Result<(DumpFacts, Written), Failure<E>>
    where
        D: FnOnce(DumpSink, String) -> Dumped,
        Dumped: Future<Output = Result<(DumpFacts, Written), E>>,
    {
        let (parts, queue) = Bucket::part_writer();
        let sink = DumpSink(HashingWriter::new(parts));
        let writing = dump(sink, self.describe(&upload.name));
        let (sender, sending) = (self.clone(), upload.clone());
        let sending = tokio::spawn(async move { sender.send_parts(&sending, queue).await });
        let written = writing.await;
        let sent = sending.await.map_err(|e| Failure::Crashed(e.to_string()))?;
        // Whichever failed first explains it (a failed part stops the writer).
        match (written, sent) {
            (Ok(written), Ok(Sent::Completed)) => Ok(written),
            (Ok(_), Ok(Sent::Abandoned)) => Err(Failure::Unfinished),
            (Err(error), _) => Err(Failure::Dump(error)),
            (Ok(_), Err(error)) => Err(error.into()),
        }
    }

    /// Checks the stored object's size and, when asked, reads it back and compares its SHA-256
    /// with what was sent.
    async fn check_stored<E>(
        &self,
        name: &str,
        sent: Written,
        read_back: bool,
        report: &impl Fn(Event),
    ) -> Result<(), Failure<E>> {
        let stored = self.size(name).await?;
        if stored != sent.bytes {
            return Err(Failure::NotAsSent(format!(
                "{} holds {stored} bytes where {} were sent",
                self.describe(name),
                sent.bytes
            )));
        }
        if !read_back {
            return Ok(());
        }
        let reader = self.open(name).await?;
        let read = tokio::task::spawn_blocking(move || {
            let (mut hashing, digest) = HashingReader::new(reader);
            io::copy(&mut hashing, &mut io::sink()).map(|_| digest.value())
        })
        .await
        .map_err(|e| Failure::Crashed(e.to_string()))?;
        match read {
            Ok((bytes, sha256)) if bytes == sent.bytes && sha256 == sent.sha256 => {
                report(Event::ReadBack { name: self.describe(name), bytes });
                Ok(())
            }
            Ok(_) => Err(Failure::NotAsSent(format!("{} does not read back as it was sent", self.describe(name)))),
            Err(error) => Err(Failure::NotAsSent(format!("{} could not be read back: {error}", self.describe(name)))),
        }
    }

    /// Aborts the uploads that killed runs left (each recorded its id before its first part).
    async fn abort_unfinished(&self, report: &impl Fn(Event)) -> Result<(), RemoteError> {
        for (record_name, record) in self.unfinished_uploads().await? {
            let upload = Upload { name: record.data, id: record.upload_id };
            match self.abort(&upload).await {
                Ok(()) => report(Event::AbortedUnfinished(self.describe(&upload.name))),
                Err(error) if error.is_denied() => {
                    // The new backup need not wait for the cleanup.
                    report(Event::Warning(format!(
                        "this key may not abort the unfinished upload of {} (access denied): its parts stay \
                         until a key with s3:AbortMultipartUpload or a lifecycle rule removes them",
                        self.describe(&upload.name)
                    )));
                    continue;
                }
                Err(error) => tracing::warn!(error = %error, "could not abort an unfinished upload"),
            }
            self.delete(&record_name).await?;
        }
        Ok(())
    }
}
