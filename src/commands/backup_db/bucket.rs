//! `backup-db --to s3://BUCKET/PREFIX`: the dump, encrypted with age unless `--no-encryption`,
//! written into the bucket by `remote::backup`'s protocol, which owns the order (record, send,
//! check, manifest last, retention); this command writes the dump and says what happened.

use super::{Summary, take, write_pieces};
use crate::cli::BackupDbArgs;
use crate::commands::{TableRows, UsageError, connect_cli};
use crate::crypt::Recipients;
use crate::output::{self, Printer};
use crate::remote::backup::{DumpFacts, DumpSink, Event, Failure, Plan};
use crate::remote::catalog::TableCount;
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
    let pool = connect_cli(&args.database).await?;
    let snapshot = super::begin_snapshot(&pool).await?;
    let plan = Plan {
        taken_at: snapshot.taken_at,
        recipients: recipients.as_ref().map(Recipients::public_keys).unwrap_or_default(),
        read_back: !args.no_reread,
        retention: args.retention.policy(),
    };
    let dump = |sink: DumpSink, destination: String| async move {
        let interrupted = format!("interrupted: aborted the upload of {destination}; no backup was written");
        let taken = take(snapshot, interrupted, printer, move |header, pieces, bar| {
            let dumped = match recipients {
                None => {
                    let (trailer, sink) = write_pieces(sink, &header, pieces, &bar)?;
                    (trailer, sink.finish()?)
                }
                Some(recipients) => {
                    let (trailer, encrypted) = write_pieces(recipients.encrypt(sink)?, &header, pieces, &bar)?;
                    (trailer, encrypted.finish()?.finish()?)
                }
            };
            Ok(dumped)
        })
        .await?;
        let facts = DumpFacts {
            server_version: taken.header.server_version.clone(),
            postgres_version: taken.header.postgres_version.clone(),
            schema_version: taken.header.schema_version,
            tables: taken.trailer.tables.iter().map(|t| TableCount { name: t.name.clone(), rows: t.rows }).collect(),
        };
        anyhow::Ok((facts, taken.written))
    };
    let completed =
        bucket.back_up(plan, dump, |event| tell(event, printer)).await.map_err(|failure| match failure {
            // The dump's own error, an interrupt among them, as it is.
            Failure::Dump(error) => error,
            other => anyhow::Error::new(other),
        })?;
    let manifest = completed.manifest;
    Ok(Summary {
        path: completed.location,
        bytes: manifest.bytes,
        sha256: manifest.sha256,
        seconds: 0.0,
        schema_version: manifest.schema_version,
        tables: manifest.tables.into_iter().map(|t| TableRows { name: t.name, rows: t.rows }).collect(),
    })
}

/// Says what the backup did besides the backup.
fn tell(event: Event, printer: Printer) {
    match event {
        Event::AbortedUnfinished(name) => printer.status(&format!("aborted the unfinished upload of {name}")),
        Event::ReadBack { name, bytes } => {
            printer.status(&format!("read {name} back: {bytes} bytes, SHA-256 as sent"));
        }
        Event::Deleted(name) => printer.status(&format!("deleted {name} (retention)")),
        Event::Warning(text) => output::warning(&text),
    }
}
