//! `restore-db`: verify the dump, then load it into an empty database in one transaction,
//! then apply any migrations newer than the dump's.

use std::fs::File;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use sqlx::PgConnection;
use tokio::sync::mpsc;

use crate::cli::RestoreDbArgs;
use crate::commands::{TableRows, connect_cli};
use crate::db::{copy_binary, dump as dump_db, migrations};
use crate::dump::reader::Event;
use crate::dump::{self, DumpError, Trailer};
use crate::output;

#[derive(Serialize)]
struct Restored {
    ok: bool,
    path: String,
    tables: Vec<TableRows>,
}

/// Runs `restore-db`.
pub async fn run(args: RestoreDbArgs) -> anyhow::Result<()> {
    let path = args.file.display().to_string();
    // The header now; every other byte is checked while it loads, and the load commits only if
    // the whole file checked out (one pass over the file instead of two).
    let header = File::open(&args.file)
        .map_err(DumpError::from)
        .and_then(dump::open)
        .map(|reader| reader.header().clone())
        .with_context(|| format!("{path} did not verify; nothing was restored"))?;
    output::status(&format!("{path}: schema version {}, taken {}", header.schema_version, header.created_at));

    let pool = connect_cli(&args.database).await?;
    let mut tx = pool.begin().await?;
    if !dump_db::is_empty(&mut tx).await? {
        if !args.force {
            bail!(
                "the target database is not empty; restore into an empty database, or add --force to replace what it holds"
            );
        }
        dump_db::clear(&mut tx).await.context("could not clear the target")?;
    }
    let bar = output::progress(0, "rows");
    let (trailer, counts) = load(&mut tx, args.file.clone(), &bar)
        .await
        .map_err(|error| error.context("the restore was rolled back; the target is as it was"))?;
    tx.commit().await.context("could not commit the restore")?;
    bar.finish_and_clear();
    migrations::apply(&pool).await.context("restored, but applying newer migrations failed; run `migrate`")?;

    let mut table = output::table(["Table", "In the dump", "Restored"]);
    let mut mismatch = false;
    for listed in &trailer.tables {
        let restored = counts.iter().find(|(name, _)| *name == listed.name).map_or(0, |(_, n)| *n);
        mismatch |= restored != listed.rows;
        table.add_row([listed.name.clone(), listed.rows.to_string(), restored.to_string()]);
    }
    if args.json {
        output::print_json(&Restored { ok: !mismatch, path: path.clone(), tables: TableRows::of(&trailer) })?;
    } else {
        output::print_table(&table)?;
    }
    if mismatch {
        bail!("restored row counts differ from the dump's manifest");
    }
    output::status(&format!("restored {path}"));
    Ok(())
}

/// Rows each table's COPY loaded, as PostgreSQL counted them.
type LoadedRows = Vec<(String, u64)>;

/// Streams the dump's statements and COPY data into the transaction; returns the manifest's
/// trailer once the whole file has verified, and the rows loaded.
async fn load(
    conn: &mut PgConnection,
    file: PathBuf,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(Trailer, LoadedRows)> {
    let path = file.display().to_string();
    let (sender, mut events) = mpsc::channel::<Event>(32);
    let progress = bar.clone();
    let reader = tokio::task::spawn_blocking(move || -> Result<Option<Trailer>, DumpError> {
        let mut reader = dump::open(File::open(file)?)?;
        while let Some(event) = reader.next_event()? {
            // The reader counts rows as it checks them; no need to count them again.
            progress.set_position(reader.rows_read());
            if sender.blocking_send(event).is_err() {
                return Ok(None);
            }
        }
        Ok(reader.trailer().cloned())
    });
    let loaded = apply(conn, &mut events, bar).await;
    drop(events);
    let verified = reader.await.map_err(|e| anyhow!("the dump reader crashed: {e}"))?;
    // A damaged file explains a failed load better than the load's own error does.
    let trailer = verified.with_context(|| format!("{path} did not verify"))?;
    let loaded = loaded?;
    Ok((trailer.ok_or_else(|| anyhow!("the dump ended early"))?, loaded))
}

/// Runs the dump's events against the database.
async fn apply(
    conn: &mut PgConnection,
    events: &mut mpsc::Receiver<Event>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<LoadedRows> {
    let mut loaded = Vec::new();
    let mut deferred = None;
    while let Some(event) = events.recv().await {
        if matches!(event, Event::Table { .. }) && deferred.is_none() {
            deferred = Some(dump_db::defer_indexes_and_foreign_keys(conn).await.context("setting indexes aside")?);
        }
        match event {
            Event::Section { kind, sql } => {
                dump_db::run_sql(conn, sql).await.with_context(|| format!("running the {kind} section"))?
            }
            Event::Table { name, copy } => {
                bar.set_message(name.clone());
                let rows = load_table(conn, &name, &copy, events).await.with_context(|| format!("loading {name}"))?;
                loaded.push((name, rows));
            }
            Event::Data(_) | Event::TableEnd => bail!("table data outside a table"),
        }
    }
    if let Some(deferred) = deferred {
        bar.set_message("indexes and foreign keys");
        dump_db::restore_deferred(conn, deferred).await.context("rebuilding indexes and checking foreign keys")?;
    }
    Ok(loaded)
}

/// Loads one table's rows from the events up to its end; returns the rows PostgreSQL counted.
/// Rows go in COPY's binary format where the table's types allow (PostgreSQL parses text
/// slowly, see `db::copy_binary`), else as the dump's text.
async fn load_table(
    conn: &mut PgConnection,
    name: &str,
    copy: &str,
    events: &mut mpsc::Receiver<Event>,
) -> anyhow::Result<u64> {
    let binary = dump_db::binary_load(conn, name, copy).await?;
    let statement = binary.as_ref().map_or(copy, |load| load.statement.as_str());
    let mut copy_in = dump_db::copy_in(conn, statement).await?;
    if binary.is_some() {
        copy_in.send(copy_binary::HEADER).await?;
    }
    let mut converted = Vec::new();
    loop {
        match (events.recv().await, &binary) {
            (Some(Event::Data(chunk)), None) => {
                copy_in.send(chunk).await?;
            }
            (Some(Event::Data(chunk)), Some(load)) => {
                converted.clear();
                if let Err(error) = copy_binary::convert_rows(&load.columns, &chunk, &mut converted) {
                    copy_in.abort("a row did not convert").await.ok();
                    return Err(error.into());
                }
                copy_in.send(converted.as_slice()).await?;
            }
            (Some(Event::TableEnd), _) => break,
            _ => {
                copy_in.abort("the dump ended inside a table").await.ok();
                bail!("the dump ended inside the table");
            }
        }
    }
    if binary.is_some() {
        copy_in.send(copy_binary::TRAILER).await?;
    }
    Ok(copy_in.finish().await?)
}
