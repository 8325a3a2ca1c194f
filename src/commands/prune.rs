//! `prune`: plan, show, confirm, then delete in small batches with a progress bar.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::PruneArgs;
use crate::commands::{Declined, ExitStatus, UsageError, connect_cli, cutoff, describe_time};
use crate::db::prune::{self, Deleted, Plan, PruneCriteria};
use crate::output::{self, Cell, Printer, Rows};

#[derive(Debug, Serialize)]
struct Summary {
    dry_run: bool,
    users_deleted: i64,
    backups_deleted: i64,
    /// The deleted documents' sizes, together.
    document_bytes: i64,
    /// The storage freed: chunks no backup names any more, as stored (compressed).
    bytes_freed: i64,
    /// Set when Ctrl-C stopped the run between batches.
    interrupted: bool,
    /// In a dry run: what a real run would delete, every id.
    #[serde(skip_serializing_if = "Option::is_none")]
    selected: Option<Selected>,
}

/// The ids a plan selects.
#[derive(Debug, Serialize)]
struct Selected {
    /// Accounts deleted with all their backups.
    users: Vec<uuid::Uuid>,
    /// Backups deleted from accounts that stay.
    backups: Vec<uuid::Uuid>,
}

/// Ids a dry run's table lists of each kind; `--json` has them all.
const LISTED: usize = 10;
/// Above this many accounts, a yes is not enough: the operator types how many (a policy
/// mistyped as `--inactive-users 1d` would take nearly every account).
const ACCOUNTS_NEEDING_THE_COUNT: usize = 10;

/// Runs `prune`.
pub async fn run(args: PruneArgs, printer: Printer) -> anyhow::Result<ExitStatus> {
    let now = OffsetDateTime::now_utc();
    let policy = PruneCriteria {
        older_than: cutoff(args.older_than, now, "--older-than")?,
        keep_last: args.keep_last,
        inactive_since: cutoff(args.inactive_users, now, "--inactive-users")?,
        user: args.user,
    };
    describe_policy(&args, &policy, printer);
    let pool = connect_cli(&args.database).await?;
    let plan = prune::plan(&pool, &policy).await.context("could not work out what the policy selects")?;
    let planned = Summary {
        dry_run: true,
        users_deleted: plan.users.len() as i64,
        backups_deleted: plan.backups.len() as i64 + plan.user_backups,
        document_bytes: plan.logical_bytes,
        bytes_freed: plan.stored_bytes,
        interrupted: false,
        selected: args.dry_run.then(|| Selected { users: plan.users.clone(), backups: plan.backups.clone() }),
    };
    if !args.json || args.dry_run {
        report(&planned, args.json && args.dry_run, "Would delete", printer)?;
    }
    if args.dry_run || (planned.users_deleted == 0 && planned.backups_deleted == 0) {
        return Ok(ExitStatus::Success);
    }
    if !args.yes {
        if !output::interactive() {
            return Err(UsageError("not on a terminal: add --yes to delete (or --dry-run to only look)".into()).into());
        }
        let question = format!(
            "Delete {} users and {} backups ({} of documents, freeing {})?",
            planned.users_deleted,
            planned.backups_deleted,
            output::bytes(planned.document_bytes),
            output::bytes(planned.bytes_freed)
        );
        let many = plan.users.len() > ACCOUNTS_NEEDING_THE_COUNT;
        let agreed = if many {
            let count = plan.users.len().to_string();
            let asked = format!("{question}\nType the number of accounts to delete ({count}) to go on:");
            output::confirm_typing(&asked, &count)
        } else {
            output::confirm(&question)
        };
        if !agreed.context("could not read the answer")? {
            return Err(Declined("nothing deleted".into()).into());
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let stop_on_signal = Arc::clone(&stop);
    let listener = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            printer.status("stopping after the current batch…");
            stop_on_signal.store(true, Ordering::SeqCst);
        }
    });
    let done = delete(&pool, &plan, policy, args.batch_size as usize, &stop, printer).await;
    listener.abort();
    let (deleted, interrupted) = done?;
    let summary = Summary {
        dry_run: false,
        users_deleted: deleted.users,
        backups_deleted: deleted.backups,
        document_bytes: deleted.logical_bytes,
        bytes_freed: deleted.stored_bytes,
        interrupted,
        selected: None,
    };
    report(&summary, args.json, "Deleted", printer)?;
    if interrupted {
        output::failure("interrupted: stopped after a whole batch; what is listed above was deleted");
        return Ok(ExitStatus::Interrupted);
    }
    vacuum(&pool, printer).await;
    Ok(ExitStatus::Success)
}

/// Vacuums what prune deletes from, so the space it freed is reused now rather than when
/// autovacuum comes by. On a full volume VACUUM needs room it lacks: that is a warning, with
/// the way out.
async fn vacuum(pool: &sqlx::PgPool, printer: Printer) {
    printer.status("vacuuming, so the space freed is reused now");
    match prune::vacuum(pool).await {
        Ok(()) => {}
        Err(crate::db::Error::StorageFull(_)) => output::warning(
            "the volume is full, and VACUUM needs room: run `reserve --release`, which gives room \
             back and vacuums; until then the space deleted is not reused",
        ),
        Err(error) => output::warning(&format!("VACUUM failed; autovacuum will come by: {error}")),
    }
}

/// Deletes the plan batch by batch; stops between batches when `stop` is set.
async fn delete(
    pool: &sqlx::PgPool,
    plan: &Plan,
    policy: PruneCriteria,
    batch_size: usize,
    stop: &AtomicBool,
    printer: Printer,
) -> anyhow::Result<(Deleted, bool)> {
    let bar = printer.progress((plan.users.len() + plan.backups.len()) as u64, "rows", false);
    let mut total = Deleted::default();
    let batches = plan
        .users
        .chunks(batch_size)
        .map(|ids| (true, ids))
        .chain(plan.backups.chunks(batch_size).map(|ids| (false, ids)));
    for (users, ids) in batches {
        if stop.load(Ordering::SeqCst) {
            bar.abandon();
            return Ok((total, true));
        }
        let deleted = match (users, policy.inactive_since) {
            (true, Some(cutoff)) => prune::delete_inactive_users(pool, ids, cutoff).await,
            _ => prune::delete_backups(pool, ids).await,
        }
        .context("a batch failed; the batches before it are deleted")?;
        total.users += deleted.users;
        total.backups += deleted.backups;
        total.logical_bytes += deleted.logical_bytes;
        total.stored_bytes += deleted.stored_bytes;
        bar.inc(ids.len() as u64);
        bar.set_message(format!("{} freed", output::bytes(total.stored_bytes)));
    }
    bar.finish_and_clear();
    Ok((total, false))
}

/// Says what the policy selects, with the cutoffs it computed, before anything else.
fn describe_policy(args: &PruneArgs, policy: &PruneCriteria, printer: Printer) {
    if let (Some(duration), Some(at)) = (args.older_than, policy.older_than) {
        printer.status(&format!("selecting backups older than {} ({duration})", describe_time(at)));
    }
    if let Some(keep) = policy.keep_last {
        printer.status(&format!("selecting backups beyond each user's newest {keep}"));
    }
    if let (Some(duration), Some(at)) = (args.inactive_users, policy.inactive_since) {
        printer.status(&format!(
            "selecting accounts with no backup since {} ({duration}), with all their data",
            describe_time(at)
        ));
    }
    if let Some(user) = policy.user {
        printer.status(&format!("only account {user}"));
    }
}

fn report(summary: &Summary, json: bool, verb: &'static str, printer: Printer) -> anyhow::Result<()> {
    if json {
        return output::print_json(summary).context("could not write the output");
    }
    let mut rows = Rows::plain(&[verb, "Count"]);
    rows.push(vec!["users (with their data)".into(), summary.users_deleted.into()]);
    rows.push(vec!["backups".into(), summary.backups_deleted.into()]);
    rows.push(vec!["documents".into(), Cell::Bytes(summary.document_bytes)]);
    rows.push(vec!["storage freed".into(), Cell::Bytes(summary.bytes_freed)]);
    printer.rows(&rows).context("could not write the output")?;
    if let Some(selected) = &summary.selected {
        for (what, ids) in [("accounts", &selected.users), ("backups of accounts that stay", &selected.backups)] {
            if !ids.is_empty() {
                printer.aside(&listed(what, ids)).context("could not write the output")?;
            }
        }
    }
    Ok(())
}

/// `WHAT: id, id, …` with the first [`LISTED`] ids, saying how many more `--json` lists.
fn listed(what: &str, ids: &[uuid::Uuid]) -> String {
    let shown: Vec<String> = ids.iter().take(LISTED).map(ToString::to_string).collect();
    let more = match ids.len().saturating_sub(LISTED) {
        0 => String::new(),
        more => format!(" … and {more} more (--json lists every one)"),
    };
    format!("{what}: {}{more}", shown.join(", "))
}
