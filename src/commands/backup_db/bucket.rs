//! `backup-db --to s3://BUCKET/PREFIX`: the dump streams up as a multipart upload (encrypted
//! with age unless `--no-encryption`), is checked once stored, and exists as a backup only once
//! its manifest is written, last.

use anyhow::{Context, bail};

use super::{Summary, take, write_pieces};
use crate::cli::BackupDbArgs;
use crate::commands::{TableRows, UsageError, connect_cli};
use crate::crypt::Recipients;
use crate::encoding::{HashingReader, HashingWriter, hex};
use crate::output::{self, Printer};
use crate::remote::catalog::{MANIFEST_FORMAT, Manifest, Names, TableCount, UploadRecord};
use crate::remote::upload::{Sent, Upload};
use crate::remote::{Bucket, BucketUrl};

/// Dumps into the bucket.
pub async fn run(args: &BackupDbArgs, url: &BucketUrl, printer: Printer) -> anyhow::Result<Summary> {
    if args.keep.is_some() {
        return Err(
            UsageError("--keep rotates a folder; a bucket's retention is --keep-daily and the like".into()).into()
        );
    }
    let recipients = match (args.no_encryption, &args.encrypt_to) {
        (true, _) => None,
        (false, Some(keys)) => Some(Recipients::parse(keys)?),
        (false, None) => {
            return Err(UsageError(
                "refusing to upload an unencrypted dump: set BACKUP_AGE_RECIPIENTS (or --encrypt-to) to age \
                 public keys, or pass --no-encryption"
                    .into(),
            )
            .into());
        }
    };
    let bucket = Bucket::from_env(url)?;
    abort_unfinished(&bucket, printer).await?;
    let pool = connect_cli(&args.database).await?;
    let snapshot = super::begin_snapshot(&pool).await?;
    let (now, started) = (snapshot.taken_at, std::time::Instant::now());
    let encrypted = recipients.is_some();
    let public_keys = recipients.as_ref().map(Recipients::public_keys).unwrap_or_default();
    let names = Names::of(now, encrypted);
    let upload = bucket.start_upload(&names.data).await?;
    let record = UploadRecord { data: names.data.clone(), upload_id: upload.id.clone() };
    let recorded = bucket.record_upload(&names.upload, &record).await;
    let stored = match recorded {
        Ok(()) => send(&bucket, &upload, snapshot, recipients, printer).await,
        Err(error) => Err(error.into()),
    };
    let (taken, bytes, sha256) = match stored {
        Ok(stored) => stored,
        Err(error) => {
            // Nothing of a failed or interrupted upload is kept.
            if let Err(abort) = bucket.abort(&upload).await {
                tracing::warn!(error = %abort, "could not abort the upload; the next run will");
            } else {
                let _ = bucket.delete(&names.upload).await;
            }
            return Err(error);
        }
    };

    check_stored(&bucket, &names.data, bytes, &sha256, args.no_reread, printer).await?;
    let manifest = Manifest {
        format_version: MANIFEST_FORMAT,
        data: names.data.clone(),
        created_at: now,
        server_version: taken.header.server_version.clone(),
        postgres_version: taken.header.postgres_version.clone(),
        schema_version: taken.header.schema_version,
        tables: taken.trailer.tables.iter().map(|t| TableCount { name: t.name.clone(), rows: t.rows }).collect(),
        bytes,
        sha256: hex(&sha256),
        encrypted,
        recipients: public_keys,
    };
    bucket.create_manifest(&names.manifest, &manifest).await.context("the data is stored, but its manifest is not")?;
    // The backup is complete: what follows is housekeeping, which never makes it a failure
    // (the ping still says success, the database still records it): a failure is a warning.
    // An append-only key (one that may put, get and list but not delete) is refused it.
    match bucket.delete(&names.upload).await {
        Err(error) if error.is_denied() => {}
        Err(error) => output::warning(&format!(
            "the backup is complete, but the record of its upload could not be deleted: {error}"
        )),
        Ok(()) => {}
    }
    // Only after a good, checked upload; by the database's clock, as the backups are dated.
    let now = now + time::Duration::seconds_f64(started.elapsed().as_secs_f64());
    match bucket.apply_retention(args.retention.policy(), now).await {
        Ok(deleted) => {
            for name in deleted {
                printer.status(&format!("deleted {} (retention)", bucket.describe(&name)));
            }
        }
        Err(error) if error.is_denied() => output::warning(&format!(
            "retention was not applied: this key may not delete in {} (access denied), so nothing \
             was deleted; grant it s3:DeleteObject and s3:AbortMultipartUpload to prune",
            bucket.url
        )),
        Err(error) => output::warning(&format!(
            "the backup is complete, but applying retention failed (the next run tries again): {error}"
        )),
    }
    Ok(Summary {
        path: bucket.describe(&names.data),
        bytes,
        sha256: hex(&sha256),
        seconds: 0.0,
        schema_version: taken.header.schema_version,
        tables: TableRows::of(&taken.trailer),
    })
}

type Stored = (super::Taken<()>, u64, [u8; 32]);

/// Takes the dump and sends it up; returns it with the stored bytes' count and SHA-256.
async fn send(
    bucket: &Bucket,
    upload: &Upload,
    snapshot: crate::db::dump::Snapshot,
    recipients: Option<Recipients>,
    printer: Printer,
) -> anyhow::Result<Stored> {
    let (parts, queue) = Bucket::part_writer();
    let interrupted =
        format!("interrupted: aborted the upload of {}; no backup was written", bucket.describe(&upload.name));
    let dump = take(snapshot, interrupted, printer, move |header, pieces, bar| {
        let sink = HashingWriter::new(parts);
        let (trailer, sink) = match recipients {
            None => write_pieces(sink, &header, pieces, &bar)?,
            Some(recipients) => {
                let (trailer, encrypted) = write_pieces(recipients.encrypt(sink)?, &header, pieces, &bar)?;
                (trailer, encrypted.finish()?)
            }
        };
        let (parts, bytes, sha256) = sink.finish();
        parts.finish()?;
        Ok((trailer, (bytes, sha256)))
    });
    let (sender, sending) = (bucket.clone(), upload.clone());
    let sending = tokio::spawn(async move { sender.send_parts(&sending, queue).await });
    // Both must succeed; whichever fails first explains it (a failed part stops the writer).
    let taken = dump.await;
    let sent = sending.await.map_err(|e| anyhow::anyhow!("the upload task crashed: {e}"))?;
    let taken = match (taken, sent) {
        (Ok(taken), Ok(Sent::Completed)) => taken,
        (Ok(_), Ok(Sent::Abandoned)) => bail!("the dump ended, but its upload was left unfinished"),
        (Err(error), _) if error.is::<crate::commands::Interrupted>() => return Err(error),
        (_, Err(error)) => return Err(error.into()),
        // The dump failed first; its upload was not completed.
        (Err(error), Ok(_)) => return Err(error),
    };
    let (bytes, sha256) = taken.written;
    Ok((super::Taken { header: taken.header, trailer: taken.trailer, written: () }, bytes, sha256))
}

/// Checks the stored object's size and, unless told not to, reads it back and compares its
/// SHA-256 with what was sent.
async fn check_stored(
    bucket: &Bucket,
    name: &str,
    bytes: u64,
    sha256: &[u8; 32],
    no_reread: bool,
    printer: Printer,
) -> anyhow::Result<()> {
    let stored = bucket.size(name).await?;
    if stored != bytes {
        bail!("{} holds {stored} bytes where {bytes} were sent", bucket.describe(name));
    }
    if no_reread {
        return Ok(());
    }
    let reader = bucket.open(name).await?;
    let (read, digest) = tokio::task::spawn_blocking(move || {
        let (mut hashing, digest) = HashingReader::new(reader);
        std::io::copy(&mut hashing, &mut std::io::sink()).map(|_| digest.value())
    })
    .await??;
    if read != bytes || &digest != sha256 {
        bail!("{} does not read back as it was sent", bucket.describe(name));
    }
    printer.status(&format!("read {} back: {bytes} bytes, SHA-256 as sent", bucket.describe(name)));
    Ok(())
}

/// Aborts the uploads that killed runs left (each recorded its id before its first part).
async fn abort_unfinished(bucket: &Bucket, printer: Printer) -> anyhow::Result<()> {
    for (record_name, record) in bucket.unfinished_uploads().await? {
        let upload = Upload { name: record.data, id: record.upload_id };
        match bucket.abort(&upload).await {
            Ok(()) => printer.status(&format!("aborted the unfinished upload of {}", bucket.describe(&upload.name))),
            Err(error) if error.is_denied() => {
                // The new backup need not wait for the cleanup.
                output::warning(&format!(
                    "this key may not abort the unfinished upload of {} (access denied): its parts \
                     stay until a key with s3:AbortMultipartUpload or a lifecycle rule removes them",
                    bucket.describe(&upload.name)
                ));
                continue;
            }
            Err(error) => tracing::warn!(error = %error, "could not abort an unfinished upload"),
        }
        bucket.delete(&record_name).await?;
    }
    Ok(())
}
