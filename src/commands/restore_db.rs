//! `restore-db`: load a dump into an empty database in one transaction, then apply any
//! migrations newer than the dump's.
//!
//! The file is untrusted: no SQL text from it is ever run. The schema comes from this binary's
//! own migrations at the dump's schema version; rows go in only through COPY statements built
//! from that schema, which the file's must match word for word; sequences are set from values
//! parsed out of the file. The file is checked as it loads and the load commits only once every
//! byte has checked out, so a damaged or hostile file can only fail the restore.

use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use indicatif::ProgressBar;
use serde::Serialize;
use sqlx::PgConnection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::cli::RestoreDbArgs;
use crate::commands::dump_source::{self, Located, Opened, Raw};
use crate::commands::{Declined, Interrupted, TableRows, UsageError, connect_to};
use crate::config::DatabaseUrl;
use crate::db::dump::{self as dump_db, Contents, TABLES};
use crate::db::{copy_binary, migrations};
use crate::dump::reader::Event;
use crate::dump::sequences::SequenceValue;
use crate::dump::{self, Trailer};
use crate::output::{self, Printer};

/// Bytes of the file's events in flight between the reader and the database, in KiB: a
/// slow database cannot make the reader run ahead with a file's worth of rows.
const IN_FLIGHT_KIB: u32 = 8 * 1024;

#[derive(Serialize)]
struct Restored {
    ok: bool,
    path: String,
    tables: Vec<TableRows>,
}

/// Runs `restore-db`.
pub async fn run(args: RestoreDbArgs, printer: Printer) -> anyhow::Result<()> {
    let located = Located::find(&args.source).await?;
    let identities = dump_source::identities(args.identity.as_deref())?;
    located.check_identity(identities.as_deref())?;
    let path = located.label();
    // Opened once: the header now, every other byte checked while it loads, and the load
    // commits only if the whole file checked out. The bar counts the bytes read from the start,
    // drawn once the operator has been asked whatever there is to ask.
    let bar = printer.counting_bytes();
    let counted = bar.clone();
    let opened = located
        .open(identities, move |raw| Box::new(counted.wrap_read(raw)))
        .await
        .with_context(|| format!("{path} did not verify; nothing was restored"))?;
    let header = opened.reader.header().clone();
    let known = migrations::latest_known_version();
    if header.schema_version > known {
        bail!(
            "{path} holds schema version {}, newer than this tool's ({known}); restore it with a newer dailyreps-backup-server",
            header.schema_version
        );
    }
    let url = DatabaseUrl::from_setting(args.database.database_url.as_ref())?;
    printer.status(&format!(
        "restoring {path} (schema version {}, taken {}) into {url}",
        header.schema_version, header.created_at
    ));
    if args.create {
        create_database(&url, printer).await?;
    }
    let pool = connect_to(&url).await?;

    let restore = restore(&pool, &args, &url, &located, opened, &bar, printer);
    let (trailer, replaced) = tokio::select! {
        restored = restore => restored?,
        _ = tokio::signal::ctrl_c() => {
            return Err(Interrupted(format!("interrupted: the restore was rolled back; {url} is as it was")).into());
        }
    };
    migrations::apply(&pool).await.context("restored, but applying newer migrations failed; run `migrate`")?;

    if args.json {
        output::print_json(&Restored { ok: true, path: path.clone(), tables: TableRows::of(&trailer) })?;
    } else {
        printer.rows(&TableRows::rows(&TableRows::of(&trailer)))?;
    }
    if let Some(replaced) = replaced {
        printer.status(&format!("replaced what {url} held ({})", describe(&replaced)));
    }
    printer.status(&format!("restored {path} into {url}"));
    Ok(())
}

/// The restore's one transaction: make room, build the schema, load, check, commit. Returns
/// the dump's trailer and what was replaced, if anything.
async fn restore(
    pool: &sqlx::PgPool,
    args: &RestoreDbArgs,
    url: &DatabaseUrl,
    located: &Located,
    opened: Opened,
    bar: &ProgressBar,
    printer: Printer,
) -> anyhow::Result<(Trailer, Option<Contents>)> {
    let schema_version = opened.reader.header().schema_version;
    // Asked before the transaction begins: a prompt left unanswered holds no lock and no
    // snapshot. What was named must still be what is replaced.
    let named = dump_db::contents(&mut *pool.acquire().await?).await?;
    if named.tables > 0 {
        confirm_replacing(args, url, &named, printer)?;
    }
    let mut tx = pool.begin().await?;
    let contents = dump_db::contents(&mut tx).await?;
    if contents != named {
        bail!(
            "{url} changed while the restore was being confirmed (it holds {} now); nothing restored",
            describe(&contents)
        );
    }
    let replaced = if contents.tables == 0 {
        None
    } else {
        dump_db::clear(&mut tx).await.context("could not clear the target")?;
        Some(contents)
    };
    let rolled_back = |error: anyhow::Error| error.context(format!("the restore was rolled back; {url} is as it was"));
    dump_db::create_schema(&mut tx, schema_version).await.map_err(|e| rolled_back(e.into()))?;
    // The stored bytes are what is known in advance (the rows are counted in the manifest at
    // the dump's end), so the bar counts them as they are read; the message names the table.
    printer.show_bytes(bar, located.stored_bytes().unwrap_or(0));
    let Opened { reader, digest } = opened;
    let (trailer, loaded) = load(&mut tx, reader, &located.label(), bar).await.map_err(rolled_back)?;
    located.check_stored(&digest).map_err(rolled_back)?;
    bar.finish_and_clear();
    let listed: LoadedRows = trailer.tables.iter().map(|t| (t.name.clone(), t.rows)).collect();
    if loaded != listed {
        return Err(rolled_back(anyhow!("the rows loaded differ from the dump's manifest")));
    }
    if !dump_db::records_match_migrations(&mut tx, schema_version).await? {
        return Err(rolled_back(anyhow!(
            "the migrations the dump records are not this binary's migrations up to version {schema_version}"
        )));
    }
    tx.commit().await.context("could not commit the restore")?;
    Ok((trailer, replaced))
}

/// `--create`: makes the database `url` names on its server unless it is there already.
async fn create_database(url: &DatabaseUrl, printer: Printer) -> anyhow::Result<()> {
    let pool = connect_to(&url.maintenance()).await?;
    let mut conn = pool.acquire().await.context("could not get a database connection")?;
    let name = url.database();
    if crate::db::admin::database_exists(&mut conn, name).await.context("could not list the databases")? {
        printer.status(&format!("database {name} exists on {}; restoring into it", url.endpoint()));
    } else {
        crate::db::admin::create_database(&mut conn, name, None)
            .await
            .with_context(|| format!("could not create database {name} on {}", url.endpoint()))?;
        printer.status(&format!("created database {name} on {}", url.endpoint()));
    }
    Ok(())
}

/// Replacing a database needs `--force`, and a yes as well after naming it: on a terminal
/// asked, elsewhere given as `--yes`.
fn confirm_replacing(
    args: &RestoreDbArgs,
    url: &DatabaseUrl,
    contents: &Contents,
    printer: Printer,
) -> anyhow::Result<()> {
    let holds = format!("{url} is not empty: it holds {}", describe(contents));
    if !args.force {
        bail!("{holds}; restore into an empty database, or add --force to replace everything in it");
    }
    if !output::interactive() && !args.yes {
        return Err(UsageError(format!(
            "{holds}; off a terminal nobody can be asked: add --yes to --force to replace everything in it"
        ))
        .into());
    }
    if output::interactive() && !args.yes {
        printer.status(&holds);
        if !output::confirm(&format!("Replace everything in {url} with the dump?"))
            .context("could not read the answer")?
        {
            return Err(Declined(format!("nothing restored; {url} is as it was")).into());
        }
    }
    Ok(())
}

fn describe(contents: &Contents) -> String {
    let count = |n: Option<i64>, what: &str| n.map(|n| format!("{n} {what}, "));
    format!(
        "{}{}{} tables",
        count(contents.users, "users").unwrap_or_default(),
        count(contents.backups, "backups").unwrap_or_default(),
        contents.tables
    )
}

/// Rows each table's COPY loaded, as PostgreSQL counted them.
type LoadedRows = Vec<(String, u64)>;

/// Streams the dump's rows into the transaction; returns the trailer once the whole file has
/// verified and every table of the schema has loaded, and the rows loaded.
async fn load(
    conn: &mut PgConnection,
    mut reader: dump::CompressedReader<Raw>,
    path: &str,
    bar: &ProgressBar,
) -> anyhow::Result<(Trailer, LoadedRows)> {
    let (sender, mut events) = mpsc::channel::<(Event, OwnedSemaphorePermit)>(32);
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_KIB as usize));
    let runtime = tokio::runtime::Handle::current();
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<Trailer>> {
        while let Some(event) = reader.next_event()? {
            let kib = match &event {
                Event::Data(chunk) => u32::try_from(chunk.len() / 1024).unwrap_or(u32::MAX).clamp(1, IN_FLIGHT_KIB),
                _ => 1,
            };
            let Ok(permit) = runtime.block_on(Arc::clone(&in_flight).acquire_many_owned(kib)) else { break };
            if sender.blocking_send((event, permit)).is_err() {
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

/// Loads the dump's events: every table of the schema in order, through our own COPY
/// statements, and the sequences from their parsed values.
async fn apply(
    conn: &mut PgConnection,
    events: &mut mpsc::Receiver<(Event, OwnedSemaphorePermit)>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<LoadedRows> {
    // The tables of the schema at the dump's version (an older one has fewer), in our order.
    let mut present = Vec::new();
    for table in TABLES {
        if dump_db::load_plan(conn, table).await?.is_some() {
            present.push(*table);
        }
    }
    let mut expected = present.iter();
    let mut loaded = Vec::new();
    let mut deferred = None;
    while let Some((event, _permit)) = events.recv().await {
        match event {
            // The schema was built from the binary's migrations; the file's copy of them is
            // for psql alone.
            Event::Section { kind, .. } if kind == "schema" => {}
            Event::Section { kind, sql } if kind == "sequences" => {
                for sequence in SequenceValue::parse_section(&sql)? {
                    if !dump_db::set_sequence(conn, &sequence).await? {
                        bail!("the dump sets sequence {}, which the schema does not have", sequence.name);
                    }
                }
            }
            Event::Section { kind, .. } => bail!("the dump has a section this tool does not write: {kind}"),
            Event::Table { name, copy } => {
                let Some(next) = expected.next().filter(|next| **next == name) else {
                    bail!("the dump has table {name} where this tool writes {:?}", expected.as_slice());
                };
                let plan = dump_db::load_plan(conn, next).await?.filter(|plan| plan.copy == copy).ok_or_else(|| {
                    anyhow!("the dump's columns of {name} are not the schema's; refusing to load them")
                })?;
                if deferred.is_none() {
                    deferred =
                        Some(dump_db::defer_indexes_and_foreign_keys(conn).await.context("setting indexes aside")?);
                }
                bar.set_message(name.clone());
                let rows = load_table(conn, &plan, events).await.with_context(|| format!("loading {name}"))?;
                loaded.push((name, rows));
            }
            Event::Data(_) | Event::TableEnd => bail!("table data outside a table"),
        }
    }
    if let Some(missing) = expected.next() {
        bail!("the dump has no data for table {missing}");
    }
    if let Some(deferred) = deferred {
        bar.set_message("indexes and foreign keys");
        dump_db::restore_deferred(conn, deferred).await.context("rebuilding indexes and checking foreign keys")?;
    }
    Ok(loaded)
}

/// Loads one table's rows from the events up to its end. Rows go in COPY's binary format where
/// the table's types allow (PostgreSQL parses text slowly, see `db::copy_binary`), else as the
/// dump's text; either way through the plan's statement, never the file's.
async fn load_table(
    conn: &mut PgConnection,
    plan: &dump_db::LoadPlan,
    events: &mut mpsc::Receiver<(Event, OwnedSemaphorePermit)>,
) -> anyhow::Result<u64> {
    let statement = plan.binary.as_ref().map_or(plan.copy.as_str(), |load| load.statement.as_str());
    let mut copy_in = dump_db::copy_in(conn, statement).await?;
    if plan.binary.is_some() {
        copy_in.send(copy_binary::HEADER).await?;
    }
    let mut converted = Vec::new();
    loop {
        match (events.recv().await.map(|(event, _permit)| event), &plan.binary) {
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
    if plan.binary.is_some() {
        copy_in.send(copy_binary::TRAILER).await?;
    }
    Ok(copy_in.finish().await?)
}
