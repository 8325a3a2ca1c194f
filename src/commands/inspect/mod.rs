//! `inspect`: read-only views for operators, each one or two database round trips.

mod health;

use anyhow::Context;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::cli::{InspectArgs, InspectView, UserSort};
use crate::commands::connect_cli;
use crate::cursor;
use crate::db::backups::After;
use crate::db::inspect::{self, BackupRow, Stats, UserOrder, UserRow};
use crate::encoding::hex;
use crate::output;

/// Runs `inspect <view>`.
pub async fn run(args: InspectArgs) -> anyhow::Result<()> {
    let pool = connect_cli(&args.database).await?;
    let now = OffsetDateTime::now_utc();
    match args.view {
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
            let mut rows = inspect::users(&pool, order, limit + 1, offset).await.context("could not list users")?;
            let next_cursor = (rows.len() as i64 > limit).then(|| (offset + limit).to_string());
            rows.truncate(limit as usize);
            let users: Vec<UserJson> = rows.into_iter().map(UserJson::from).collect();
            show(args.json, &UsersJson { users: &users, next_cursor }, || users_table(&users, now))
        }
        InspectView::User { id } => {
            let user = inspect::user(&pool, id)
                .await
                .context("could not read the user")?
                .with_context(|| format!("no user {id}"))?;
            let rows =
                inspect::backups(&pool, Some(id), None, None, 100_000).await.context("could not list the backups")?;
            let user = UserJson::from(user);
            let backups: Vec<BackupJson> = rows.into_iter().map(BackupJson::from).collect();
            show(args.json, &UserDetailJson { user: &user, backups: &backups }, || {
                let mut text = format!("{}\n", users_table(std::slice::from_ref(&user), now));
                text.push_str(&backups_table(&backups, now, false).to_string());
                text
            })
        }
        InspectView::Backups { user, since, limit, cursor } => {
            let before = cursor
                .map(|text| cursor::decode(&text).context("--cursor is not a next_cursor of inspect backups"))
                .transpose()?
                .map(|after| (after.created_at, after.id));
            let since = super::cutoff(since, now, "--since")?;
            let mut rows =
                inspect::backups(&pool, user, since, before, limit + 1).await.context("could not list backups")?;
            let next_cursor = (rows.len() as i64 > limit)
                .then(|| {
                    rows.get(limit as usize - 1)
                        .map(|last| cursor::encode(After { created_at: last.created_at, id: last.backup_id }))
                })
                .flatten();
            rows.truncate(limit as usize);
            let backups: Vec<BackupJson> = rows.into_iter().map(BackupJson::from).collect();
            show(args.json, &BackupsJson { backups: &backups, next_cursor }, || {
                backups_table(&backups, now, true).to_string()
            })
        }
        InspectView::Stats => {
            let stats = inspect::stats(&pool, 10).await.context("could not read the statistics")?;
            show(args.json, &StatsJson::from(&stats), || stats_text(&stats))
        }
        InspectView::Health { volume_size, long_transaction } => {
            health::run(&pool, args.json, volume_size, long_transaction).await
        }
    }
}

/// JSON for scripts, or the text for people.
fn show(json: bool, value: &impl Serialize, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json { output::print_json(value) } else { output::write_stdout(&format!("{}\n", text())) }
        .context("could not write the output")
}

#[derive(Serialize)]
struct UserJson {
    user_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    last_backup_at: Option<OffsetDateTime>,
    backup_count: i64,
    total_bytes: i64,
    stored_bytes: i64,
}

impl From<UserRow> for UserJson {
    fn from(row: UserRow) -> Self {
        let utc = |at: OffsetDateTime| at.to_offset(time::UtcOffset::UTC);
        Self {
            user_id: row.user_id,
            created_at: utc(row.created_at),
            last_backup_at: row.last_backup_at.map(utc),
            backup_count: row.backup_count,
            total_bytes: row.total_bytes,
            stored_bytes: row.stored_bytes,
        }
    }
}

#[derive(Serialize)]
struct UsersJson<'a> {
    users: &'a [UserJson],
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct BackupJson {
    backup_id: Uuid,
    user_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    size_bytes: i64,
    sha256: String,
}

impl From<BackupRow> for BackupJson {
    fn from(row: BackupRow) -> Self {
        Self {
            backup_id: row.backup_id,
            user_id: row.user_id,
            created_at: row.created_at.to_offset(time::UtcOffset::UTC),
            size_bytes: row.size_bytes.into(),
            sha256: hex(&row.sha256),
        }
    }
}

#[derive(Serialize)]
struct BackupsJson<'a> {
    backups: &'a [BackupJson],
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct UserDetailJson<'a> {
    user: &'a UserJson,
    backups: &'a [BackupJson],
}

#[derive(Serialize)]
struct StatsJson<'a> {
    users: i64,
    backups: i64,
    total_bytes: i64,
    stored_bytes: i64,
    database_bytes: i64,
    tables: Vec<TableJson<'a>>,
    largest_users: Vec<LargeUserJson>,
    backups_per_day: Vec<DayJson<'a>>,
    last_database_backup: Option<LastBackupJson<'a>>,
}

#[derive(Serialize)]
struct LastBackupJson<'a> {
    #[serde(with = "time::serde::rfc3339")]
    finished_at: OffsetDateTime,
    location: &'a str,
    bytes: i64,
    age_seconds: i64,
}

/// Past this, the last database backup is old enough to warn about (a daily schedule's
/// run plus two hours of slack).
const BACKUP_WARNING_AGE: time::Duration = time::Duration::hours(26);

#[derive(Serialize)]
struct TableJson<'a> {
    name: &'a str,
    rows: i64,
    bytes: i64,
}

#[derive(Serialize)]
struct LargeUserJson {
    user_id: Uuid,
    total_bytes: i64,
    stored_bytes: i64,
    backup_count: i64,
}

#[derive(Serialize)]
struct DayJson<'a> {
    date: &'a str,
    backups: i64,
}

impl<'a> From<&'a Stats> for StatsJson<'a> {
    fn from(stats: &'a Stats) -> Self {
        Self {
            users: stats.users,
            backups: stats.backups,
            total_bytes: stats.total_bytes,
            stored_bytes: stats.stored_bytes,
            database_bytes: stats.database_bytes,
            tables: stats.tables.iter().map(|t| TableJson { name: &t.name, rows: t.rows, bytes: t.bytes }).collect(),
            largest_users: stats
                .largest_users
                .iter()
                .map(|u| LargeUserJson {
                    user_id: u.user_id,
                    total_bytes: u.total_bytes,
                    stored_bytes: u.stored_bytes,
                    backup_count: u.backup_count,
                })
                .collect(),
            backups_per_day: stats
                .backups_per_day
                .iter()
                .map(|d| DayJson { date: &d.date, backups: d.backups })
                .collect(),
            last_database_backup: stats.last_database_backup.as_ref().map(|last| LastBackupJson {
                finished_at: last.finished_at,
                location: &last.location,
                bytes: last.bytes,
                age_seconds: (OffsetDateTime::now_utc() - last.finished_at).whole_seconds(),
            }),
        }
    }
}

fn users_table(users: &[UserJson], now: OffsetDateTime) -> String {
    let mut table = output::table(["User", "Created", "Last backup", "Backups", "Size", "Stored"]);
    for user in users {
        table.add_row([
            user.user_id.to_string(),
            output::ago(user.created_at, now),
            user.last_backup_at.map_or_else(|| "never".to_owned(), |at| output::ago(at, now)),
            user.backup_count.to_string(),
            output::bytes(user.total_bytes),
            output::bytes(user.stored_bytes),
        ]);
    }
    table.to_string()
}

fn backups_table(backups: &[BackupJson], now: OffsetDateTime, with_owner: bool) -> comfy_table::Table {
    let mut headers = vec!["Backup", "Created", "Size", "SHA-256"];
    if with_owner {
        headers.insert(1, "User");
    }
    let mut table = output::table(headers);
    for backup in backups {
        let mut row = vec![
            backup.backup_id.to_string(),
            output::ago(backup.created_at, now),
            output::bytes(backup.size_bytes),
            backup.sha256[..12].to_owned(),
        ];
        if with_owner {
            row.insert(1, backup.user_id.to_string());
        }
        table.add_row(row);
    }
    table
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
