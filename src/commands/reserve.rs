//! `reserve`: keeps space in reserve on the database's volume, or releases it when the volume
//! is full (see db::reserve for why a full volume needs it).

use anyhow::Context;
use serde::Serialize;

use crate::cli::ReserveArgs;
use crate::commands::connect_cli;
use crate::db::{self, reserve};
use crate::output;
use crate::output::Printer;

/// Written per statement, so a full volume stops it within one step.
const STEP_BYTES: i64 = 8 * 1024 * 1024;

#[derive(Serialize)]
struct Summary {
    /// What the reserve holds now.
    reserve_bytes: i64,
    /// What this run added (positive) or gave back (negative).
    changed_bytes: i64,
}

/// Runs `reserve`.
pub async fn run(args: ReserveArgs, printer: Printer) -> anyhow::Result<()> {
    let pool = connect_cli(&args.database).await?;
    let before = reserve::size(&pool).await.context("could not read the reserve")?;
    if args.release {
        reserve::release(&pool).await.context("could not release the reserve")?;
        printer.status(&format!(
            "released {} kept in reserve: the volume has that much room again",
            output::bytes(before)
        ));
        // With room, VACUUM can run: rows deleted while the volume was full become reusable.
        db::prune::vacuum(&pool).await.context("released the reserve, but VACUUM failed")?;
        printer.status(
            "vacuumed: what was deleted is reused. Now make room for good: `prune` (it vacuums too), or extend \
             the volume (`fly volumes extend <id> --size <GB>`); then run `reserve` again",
        );
        return report(&args, 0, -before);
    }
    let target = i64::try_from(args.size.0).unwrap_or(i64::MAX);
    let bar = printer.progress(u64::try_from(target).unwrap_or(0), "bytes", false);
    bar.set_position(u64::try_from(before).unwrap_or(0));
    let mut now = before;
    while now < target {
        match reserve::add(&pool, STEP_BYTES.min(target - now)).await {
            Ok(()) => {}
            Err(db::Error::StorageFull(_)) => {
                bar.abandon();
                anyhow::bail!(
                    "the volume has no room for the reserve (it holds {}): extend the volume, or ask for less \
                     with --size",
                    output::bytes(reserve::size(&pool).await.unwrap_or(now))
                );
            }
            Err(error) => return Err(error).context("could not add to the reserve"),
        }
        now = reserve::size(&pool).await.context("could not read the reserve")?;
        bar.set_position(u64::try_from(now).unwrap_or(0));
    }
    bar.finish_and_clear();
    printer.status(&format!(
        "{} kept in reserve; on a full volume, `reserve --release` gives it back at once",
        output::bytes(now)
    ));
    report(&args, now, now - before)
}

fn report(args: &ReserveArgs, reserve_bytes: i64, changed_bytes: i64) -> anyhow::Result<()> {
    if args.json {
        output::print_json(&Summary { reserve_bytes, changed_bytes }).context("could not write the summary")?;
    }
    Ok(())
}
