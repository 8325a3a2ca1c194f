//! `inspect`: read-only views for operators, each one or two database round trips.

mod database_health;

use anyhow::Context;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::{InspectArgs, InspectView, UserSort};
use crate::commands::{ExitStatus, connect_cli};
use crate::cursor;
use crate::db::backups::After;
use crate::db::inspect::{self, BackupRow, Stats, UserOrder, UserRow};
use crate::encoding::hex;
use crate::output::{self, Cell, Fit, Printer, Rows};

/// Runs `inspect <view>`.
pub async fn run(args: InspectArgs, printer: Printer) -> anyhow::Result<ExitStatus> {
    // Health connects itself: a database it cannot reach is a verdict its monitor must hear.
    let view = match args.view {
        InspectView::Health { volume_size, long_transaction, ping } => {
            return database_health::run(
                &args.database,
                args.json,
                volume_size,
                long_transaction,
                ping.as_deref(),
                printer,
            )
            .await;
        }
        view => view,
    };
    let pool = connect_cli(&args.database).await?;
    let now = OffsetDateTime::now_utc();
    match view {
        InspectView::Users { sort, limit, offset, cursor } => {
            let offset = match cursor {
                Some(cursor) => cursor
                    .parse()
                    .ok()
                    .filter(|o: &i64| *o >= 0)
                    .context("--cursor is not a next_cursor of inspect users")?,
                None => offset,
            };
            let order = match sort {
                UserSort::Created => UserOrder::Created,
                UserSort::LastBackup => UserOrder::LastBackup,
                UserSort::Size => UserOrder::Size,
                UserSort::Count => UserOrder::Count,
            };
            let (mut users, total) =
                inspect::users(&pool, order, limit + 1, offset).await.context("could not list users")?;
            let next_cursor = (users.len() as i64 > limit).then(|| (offset + limit).to_string());
            users.truncate(limit as usize);
            let page = Page { shown: users.len(), skipped: offset, total, next_cursor: next_cursor.as_deref() };
            show(args.json, &UsersJson { users: &users, total, next_cursor: page.next_cursor }, || {
                page.under(&users_rows(&users), "user", "users", printer)
            })
        }
        InspectView::User { id } => {
            let user = inspect::user(&pool, id)
                .await
                .context("could not read the user")?
                .with_context(|| format!("no user {id}"))?;
            let (backups, _) =
                inspect::backups(&pool, Some(id), None, None, 100_000).await.context("could not list the backups")?;
            show(args.json, &UserDetailJson { user: &user, backups: &backups }, || {
                // A script gets the backups' rows; people, the account above them.
                if printer.for_people() {
                    printer.rows(&users_rows(std::slice::from_ref(&user)))?;
                }
                if backups.is_empty() {
                    printer.aside("No backups.")
                } else {
                    printer.rows(&backups_rows(&backups, false))
                }
            })
        }
        InspectView::Backups { user, since, limit, cursor } => {
            let before = cursor
                .map(|text| cursor::decode(&text).context("--cursor is not a next_cursor of inspect backups"))
                .transpose()?
                .map(|after| (after.created_at, after.id));
            let since = super::cutoff(since, now, "--since")?;
            let (mut backups, total) =
                inspect::backups(&pool, user, since, before, limit + 1).await.context("could not list backups")?;
            let next_cursor = (backups.len() as i64 > limit)
                .then(|| {
                    backups
                        .get(limit as usize - 1)
                        .map(|last| cursor::encode(After { created_at: last.created_at, id: last.backup_id }))
                })
                .flatten();
            backups.truncate(limit as usize);
            let page = Page { shown: backups.len(), skipped: 0, total, next_cursor: next_cursor.as_deref() };
            show(args.json, &BackupsJson { backups: &backups, total, next_cursor: page.next_cursor }, || {
                page.under(&backups_rows(&backups, true), "backup", "backups", printer)
            })
        }
        InspectView::Stats => {
            let stats = inspect::stats(&pool, 10).await.context("could not read the statistics")?;
            show(args.json, &stats, || print_stats(&stats, printer))
        }
        InspectView::Health { .. } => unreachable!("answered before connecting"),
    }
}

/// JSON, or what `print` prints.
fn show(json: bool, value: &impl Serialize, print: impl FnOnce() -> std::io::Result<()>) -> anyhow::Result<ExitStatus> {
    if json { output::print_json(value) } else { print() }.context("could not write the output")?;
    Ok(ExitStatus::Success)
}

/// Where a page of a list stands, for the line under its table.
struct Page<'a> {
    shown: usize,
    skipped: i64,
    total: i64,
    next_cursor: Option<&'a str>,
}

impl Page<'_> {
    /// The page's rows with its footer beside them; only the footer when the page is empty.
    fn under(&self, rows: &Rows, one: &str, many: &str, printer: Printer) -> std::io::Result<()> {
        if self.shown > 0 {
            printer.rows(rows)?;
        }
        printer.aside(&self.footer(one, many))
    }

    /// "Showing 50 of 312 users; next page: --cursor 50", or what an empty page means.
    fn footer(&self, one: &str, many: &str) -> String {
        let noun = |n: i64| if n == 1 { one } else { many };
        if self.total == 0 {
            return format!("No {many}.");
        }
        if self.shown == 0 {
            return format!("No {many} on this page ({} in all).", self.total);
        }
        let first = self.skipped + 1;
        let last = self.skipped + self.shown as i64;
        let range = if first == 1 { last.to_string() } else { format!("{first}-{last}") };
        let mut line = format!("Showing {range} of {} {}", self.total, noun(self.total));
        if let Some(cursor) = self.next_cursor {
            line.push_str(&format!("; next page: --cursor {cursor}"));
        }
        line
    }
}

#[derive(Serialize)]
struct UsersJson<'a> {
    users: &'a [UserRow],
    total: i64,
    next_cursor: Option<&'a str>,
}

#[derive(Serialize)]
struct BackupsJson<'a> {
    backups: &'a [BackupRow],
    total: i64,
    next_cursor: Option<&'a str>,
}

#[derive(Serialize)]
struct UserDetailJson<'a> {
    user: &'a UserRow,
    backups: &'a [BackupRow],
}

/// Past this, the last database backup is old enough to warn about (a daily schedule's
/// run plus two hours of slack).
const BACKUP_WARNING_AGE: time::Duration = time::Duration::hours(26);

fn users_rows(users: &[UserRow]) -> Rows {
    let mut rows = Rows::new(&[
        ("User", Fit::Whole),
        ("Created", Fit::Hide(2)),
        ("Last backup", Fit::Wrap),
        ("Backups", Fit::Wrap),
        ("Size", Fit::Hide(1)),
        ("Stored", Fit::Wrap),
    ]);
    for user in users {
        rows.push(vec![
            user.user_id.to_string().into(),
            Cell::Ago(user.created_at),
            user.last_backup_at.into(),
            user.backup_count.into(),
            Cell::Bytes(user.total_bytes),
            Cell::Bytes(user.stored_bytes),
        ]);
    }
    rows
}

fn backups_rows(backups: &[BackupRow], with_owner: bool) -> Rows {
    let mut columns =
        vec![("Backup", Fit::Whole), ("Created", Fit::Wrap), ("Size", Fit::Wrap), ("SHA-256", Fit::Hide(1))];
    if with_owner {
        columns.insert(1, ("User", Fit::Hide(2)));
    }
    let mut rows = Rows::new(&columns);
    for backup in backups {
        let mut row = vec![
            backup.backup_id.to_string().into(),
            Cell::Ago(backup.created_at),
            Cell::Bytes(backup.size_bytes.into()),
            Cell::Hash(hex(&backup.sha256)),
        ];
        if with_owner {
            row.insert(1, backup.user_id.to_string().into());
        }
        rows.push(row);
    }
    rows
}

/// The totals for a script; for people, the tables' sizes, the largest users, the last
/// database backup and a chart of backups a day beside them.
fn print_stats(stats: &Stats, printer: Printer) -> std::io::Result<()> {
    let mut totals = Rows::plain(&["Users", "Backups", "Backup bytes", "Stored", "Database size"]);
    totals.push(vec![
        stats.users.into(),
        stats.backups.into(),
        Cell::Bytes(stats.total_bytes),
        Cell::Bytes(stats.stored_bytes),
        Cell::Bytes(stats.database_bytes),
    ]);
    printer.rows(&totals)?;
    if !printer.for_people() {
        return Ok(());
    }
    let mut tables = Rows::plain(&["Table", "Rows", "Size on disk"]);
    for table in &stats.tables {
        tables.push(vec![table.name.as_str().into(), table.rows.into(), Cell::Bytes(table.bytes)]);
    }
    printer.rows(&tables)?;
    let mut largest = Rows::plain(&["Largest users", "Backups", "Size", "Stored"]);
    for user in &stats.largest_users {
        largest.push(vec![
            user.user_id.to_string().into(),
            user.backup_count.into(),
            Cell::Bytes(user.total_bytes),
            Cell::Bytes(user.stored_bytes),
        ]);
    }
    printer.rows(&largest)?;
    let now = OffsetDateTime::now_utc();
    let last = match &stats.last_database_backup {
        None => {
            "Last database backup: none recorded\n  warning: run `backup-db` on a schedule (README: off-site backups)\n"
                .to_owned()
        }
        Some(last) => {
            let mut line = format!(
                "Last database backup: {}, {} ({})\n",
                last.location,
                output::ago(last.finished_at, now),
                output::bytes(last.bytes)
            );
            if now - last.finished_at > BACKUP_WARNING_AGE {
                line.push_str("  warning: older than 26 hours; are the scheduled backups running?\n");
            }
            line
        }
    };
    output::write_stdout(&format!("{last}Backups per day (UTC):\n{}", bar_chart(&stats.backups_per_day)))
}

/// One line a day: the date, a bar scaled to the busiest day, the count.
fn bar_chart(days: &[inspect::DayCount]) -> String {
    const WIDTH: i64 = 40;
    let busiest = days.iter().map(|d| d.backups).max().unwrap_or(0).max(1);
    days.iter()
        .map(|day| {
            let length = usize::try_from(day.backups * WIDTH / busiest).unwrap_or(0);
            let bar = if day.backups > 0 && length == 0 { "▏".to_owned() } else { "█".repeat(length) };
            format!("  {} {bar:<40} {}\n", day.date, day.backups)
        })
        .collect()
}
