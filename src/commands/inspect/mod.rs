//! `inspect`: read-only views for operators, each one or two database round trips.

mod health;

use anyhow::Context;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::{InspectArgs, InspectView, UserSort};
use crate::commands::{ExitStatus, connect_cli};
use crate::cursor;
use crate::db::backups::After;
use crate::db::inspect::{self, BackupRow, Stats, UserOrder, UserRow};
use crate::encoding::hex;
use crate::output::{self, Fit};

/// Runs `inspect <view>`.
pub async fn run(args: InspectArgs) -> anyhow::Result<ExitStatus> {
    // Health connects itself: a database it cannot reach is a verdict its monitor must hear.
    let view = match args.view {
        InspectView::Health { volume_size, long_transaction, ping } => {
            return health::run(&args.database, args.json, volume_size, long_transaction, ping.as_deref()).await;
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
                page.under(users_table(&users, now), "user", "users")
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
                let list = if backups.is_empty() {
                    "No backups.".to_owned()
                } else {
                    backups_table(&backups, now, false).to_string()
                };
                format!("{}\n{list}", users_table(std::slice::from_ref(&user), now))
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
                page.under(backups_table(&backups, now, true), "backup", "backups")
            })
        }
        InspectView::Stats => {
            let stats = inspect::stats(&pool, 10).await.context("could not read the statistics")?;
            show(args.json, &stats, || stats_text(&stats))
        }
        InspectView::Health { .. } => unreachable!("answered before connecting"),
    }
}

/// JSON for scripts, or the text for people.
fn show(json: bool, value: &impl Serialize, text: impl FnOnce() -> String) -> anyhow::Result<ExitStatus> {
    if json { output::print_json(value) } else { output::write_stdout(&format!("{}\n", text())) }
        .context("could not write the output")?;
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
    /// The page's table with its footer under it; only the footer when the page is empty.
    fn under(&self, table: output::Fitted, one: &str, many: &str) -> String {
        if self.shown == 0 { self.footer(one, many) } else { format!("{table}\n{}", self.footer(one, many)) }
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

fn users_table(users: &[UserRow], now: OffsetDateTime) -> output::Fitted {
    let columns = [
        ("User", Fit::Whole),
        ("Created", Fit::Hide(2)),
        ("Last backup", Fit::Wrap),
        ("Backups", Fit::Wrap),
        ("Size", Fit::Hide(1)),
        ("Stored", Fit::Wrap),
    ];
    let rows = users
        .iter()
        .map(|user| {
            vec![
                user.user_id.to_string(),
                output::ago(user.created_at, now),
                user.last_backup_at.map_or_else(|| "never".to_owned(), |at| output::ago(at, now)),
                user.backup_count.to_string(),
                output::bytes(user.total_bytes),
                output::bytes(user.stored_bytes),
            ]
        })
        .collect();
    output::fitted_table(&columns, rows)
}

fn backups_table(backups: &[BackupRow], now: OffsetDateTime, with_owner: bool) -> output::Fitted {
    let mut columns =
        vec![("Backup", Fit::Whole), ("Created", Fit::Wrap), ("Size", Fit::Wrap), ("SHA-256", Fit::Hide(1))];
    if with_owner {
        columns.insert(1, ("User", Fit::Hide(2)));
    }
    let rows = backups
        .iter()
        .map(|backup| {
            let mut row = vec![
                backup.backup_id.to_string(),
                output::ago(backup.created_at, now),
                output::bytes(backup.size_bytes.into()),
                hex(backup.sha256.get(..6).unwrap_or_default()),
            ];
            if with_owner {
                row.insert(1, backup.user_id.to_string());
            }
            row
        })
        .collect();
    output::fitted_table(&columns, rows)
}

fn stats_text(stats: &Stats) -> String {
    let mut totals = output::table(["Users", "Backups", "Backup bytes", "Stored", "Database size"]);
    totals.add_row([
        stats.users.to_string(),
        stats.backups.to_string(),
        output::bytes(stats.total_bytes),
        output::bytes(stats.stored_bytes),
        output::bytes(stats.database_bytes),
    ]);
    let mut tables = output::table(["Table", "Rows", "Size on disk"]);
    for table in &stats.tables {
        tables.add_row([table.name.clone(), table.rows.to_string(), output::bytes(table.bytes)]);
    }
    let mut largest = output::table(["Largest users", "Backups", "Size", "Stored"]);
    for user in &stats.largest_users {
        largest.add_row([
            user.user_id.to_string(),
            user.backup_count.to_string(),
            output::bytes(user.total_bytes),
            output::bytes(user.stored_bytes),
        ]);
    }
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
    format!("{totals}\n{tables}\n{largest}\n{last}Backups per day (UTC):\n{}", bar_chart(&stats.backups_per_day))
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
