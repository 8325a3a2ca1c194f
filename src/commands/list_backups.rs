//! `list-backups s3://BUCKET/PREFIX`: the complete backups (those with a manifest), newest first.

use anyhow::Context;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::ListBackupsArgs;
use crate::output::{self, Cell, Fit, Printer, Rows};
use crate::remote::Bucket;
use crate::remote::prune::plan;
use crate::remote::retention::is_ahead;

#[derive(Serialize)]
struct Listing {
    backups: Vec<Entry>,
}

#[derive(Serialize)]
struct Entry {
    key: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    bytes: u64,
    schema_version: i64,
    encrypted: bool,
    /// Why retention keeps it; empty when the next backup would delete it.
    kept_by: Vec<String>,
}

/// Runs `list-backups`.
pub async fn run(args: &ListBackupsArgs, printer: Printer) -> anyhow::Result<()> {
    let bucket = Bucket::from_env(&args.url)?;
    let now = OffsetDateTime::now_utc();
    let backups: Vec<Entry> = plan(bucket.complete().await?, now, args.retention.policy())
        .into_iter()
        .map(|(listed, reasons)| Entry {
            key: bucket.url.key(&listed.manifest.data),
            created_at: listed.manifest.created_at,
            bytes: listed.manifest.bytes,
            schema_version: listed.manifest.schema_version,
            encrypted: listed.manifest.encrypted,
            kept_by: reasons.iter().map(ToString::to_string).collect(),
        })
        .collect();
    for entry in backups.iter().filter(|entry| is_ahead(entry.created_at, now)) {
        output::warning(&format!(
            "{} is dated in the future, {} (a clock that was wrong, or a copy renamed); `latest` does not take it",
            entry.key,
            output::rfc3339(entry.created_at)
        ));
    }
    if args.json {
        return output::print_json(&Listing { backups }).context("could not write the list");
    }
    if backups.is_empty() {
        printer.status(&format!("{} holds no complete backup", args.url));
        return Ok(());
    }
    // The key names a backup to restore: never wrapped; the columns it repeats go first.
    let columns = [
        ("Taken (UTC)", Fit::Hide(3)),
        ("Age", Fit::Wrap),
        ("Size", Fit::Wrap),
        ("Schema", Fit::Hide(1)),
        ("Encrypted", Fit::Hide(2)),
        ("Kept by", Fit::Hide(4)),
        ("Key", Fit::Whole),
    ];
    let mut rows = Rows::new(&columns);
    for entry in &backups {
        rows.push(vec![
            Cell::Time(entry.created_at),
            Cell::Ago(entry.created_at),
            Cell::Bytes(i64::try_from(entry.bytes).unwrap_or(i64::MAX)),
            entry.schema_version.into(),
            if entry.encrypted { "yes" } else { "no" }.into(),
            if entry.kept_by.is_empty() { "(would go)".to_owned() } else { entry.kept_by.join(", ") }.into(),
            entry.key.as_str().into(),
        ]);
    }
    printer.rows(&rows).context("could not write the list")?;
    printer.status(&format!("{} complete backups in {}", backups.len(), args.url));
    Ok(())
}
