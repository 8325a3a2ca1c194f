//! Whether the database is healthy, from the facts `db::database_health` reads: each check ok or warn,
//! with a one-line reason and what to do. No I/O here, so every rule is tested directly.

use serde::Serialize;
use time::{Date, Month, OffsetDateTime};

use crate::db::database_health::{Facts, SizeSample};
use crate::output::{bytes, when};

/// How `inspect health` was asked to judge.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// The volume the cluster lives on, when known.
    pub volume_bytes: Option<u64>,
    /// A transaction open (or a statement running) longer than this warns.
    pub session_seconds: f64,
}

/// Every check's verdict, and how many warn (what `inspect health` prints and exits by).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every check is ok.
    pub ok: bool,
    /// This database's size.
    pub database_bytes: i64,
    /// How fast it grows.
    pub growth_bytes_per_day: Growth,
    /// When the volume is full at the faster of the two rates: `None` without a volume size,
    /// or when the database is not growing.
    pub days_until_full: Option<u64>,
    /// Each check.
    pub checks: Vec<Check>,
}

/// Bytes a day, over each window; `None` until a sample that old exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Growth {
    /// Over the last 7 days.
    pub last_7_days: Option<f64>,
    /// Over the last 30 days.
    pub last_30_days: Option<f64>,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The check's name, as `--json` and the table show it (`disk`, `vacuum`, …).
    pub name: &'static str,
    /// Whether all is well.
    pub ok: bool,
    /// Why, and (when not ok) what to do.
    pub detail: String,
}

impl Check {
    /// A check that passed.
    pub fn ok(name: &'static str, detail: String) -> Self {
        Self { name, ok: true, detail }
    }

    /// A check that warns; `detail` says what to do.
    pub fn warn(name: &'static str, detail: String) -> Self {
        Self { name, ok: false, detail }
    }
}

/// Warn when the volume is full within this many days…
const FULL_WITHIN_DAYS: u64 = 30;
/// … or more than this share of it is used.
const USED_SHARE: f64 = 0.8;
/// Warn of a table whose dead rows are more than this share of its rows…
const DEAD_SHARE: f64 = 0.2;
/// … and at least this many (autovacuum's own threshold is 50 + 20 %).
const DEAD_ROWS: i64 = 1000;
/// Warn when more than this share of the usable connections is in use.
const CONNECTIONS_SHARE: f64 = 0.8;
/// Warn when the WAL takes more than this share of the volume.
const WAL_SHARE: f64 = 0.25;
/// Warn when the newest database backup is older than this: a daily schedule, two hours late.
const BACKUP_MAX_AGE: time::Duration = time::Duration::hours(26);

/// End of community support of each PostgreSQL major (postgresql.org/support/versioning).
const END_OF_LIFE: [(i64, Date); 6] = [
    (13, date(2025, Month::November, 13)),
    (14, date(2026, Month::November, 12)),
    (15, date(2027, Month::November, 11)),
    (16, date(2028, Month::November, 9)),
    (17, date(2029, Month::November, 8)),
    (18, date(2030, Month::November, 14)),
];

const fn date(year: i32, month: Month, day: u8) -> Date {
    match Date::from_calendar_date(year, month, day) {
        Ok(date) => date,
        Err(_) => panic!("a valid date"),
    }
}

/// Judges `facts` (with the WAL directory's size, when the role may see it).
pub fn judge(facts: &Facts, wal_bytes: Option<i64>, limits: Thresholds, now: OffsetDateTime) -> Report {
    let growth = Growth {
        last_7_days: rate(facts.database_bytes, &facts.sizes, 7, now),
        last_30_days: rate(facts.database_bytes, &facts.sizes, 30, now),
    };
    let used = facts.cluster_bytes.max(facts.database_bytes) + wal_bytes.unwrap_or(0);
    let days_until_full = limits.volume_bytes.and_then(|volume| days_until_full(used, volume, growth));
    let checks = vec![
        disk(facts, used, limits.volume_bytes, growth, days_until_full),
        vacuum(facts),
        sessions(facts, limits.session_seconds),
        connections(facts),
        slots(facts),
        wal(wal_bytes, limits.volume_bytes),
        version(facts, now.date()),
        reserve(facts),
        backup(facts, now),
        archiving(facts, now),
    ];
    Report {
        ok: checks.iter().all(|check| check.ok),
        database_bytes: facts.database_bytes,
        growth_bytes_per_day: growth,
        days_until_full,
        checks,
    }
}

/// Bytes a day since the oldest sample within the last `days` that is at least a day old.
fn rate(now_bytes: i64, samples: &[SizeSample], days: i64, now: OffsetDateTime) -> Option<f64> {
    let window = now - time::Duration::days(days);
    let oldest = samples
        .iter()
        .filter(|sample| sample.taken_at >= window && now - sample.taken_at >= time::Duration::days(1))
        .min_by_key(|sample| sample.taken_at)?;
    let elapsed_days = (now - oldest.taken_at).as_seconds_f64() / 86_400.0;
    Some((now_bytes - oldest.bytes) as f64 / elapsed_days)
}

/// The faster of the two rates, or `None` when neither is known or the database shrinks.
fn fastest(growth: Growth) -> Option<f64> {
    [growth.last_7_days, growth.last_30_days].into_iter().flatten().reduce(f64::max).filter(|rate| *rate > 0.0)
}

fn days_until_full(used: i64, volume: u64, growth: Growth) -> Option<u64> {
    let free = i128::from(volume) - i128::from(used);
    if free <= 0 {
        return Some(0);
    }
    fastest(growth).map(|rate| (free as f64 / rate).floor() as u64)
}

fn per_day(rate: f64) -> String {
    format!("{}/day", bytes(rate.round() as i64))
}

fn disk(facts: &Facts, used: i64, volume: Option<u64>, growth: Growth, days: Option<u64>) -> Check {
    let Some(volume) = volume else {
        return Check::ok(
            "disk",
            format!(
                "database {} ({} with the server's other databases and WAL); pass --volume-size (or set \
                 DATABASE_VOLUME_SIZE) to know when the volume is full",
                bytes(facts.database_bytes),
                bytes(used)
            ),
        );
    };
    let share = used as f64 / volume as f64;
    let usage = format!("{} of the {} volume used ({:.0}%)", bytes(used), decimal_size(volume), share * 100.0);
    let rate = match fastest(growth) {
        Some(rate) => per_day(rate),
        None if growth == Growth::default() => "growth not known yet (`serve` samples the size daily)".to_owned(),
        None => "not growing".to_owned(),
    };
    let fix = "extend the volume (`fly volumes extend <id> --size <GB>`) or delete backups (`prune`, which \
               vacuums so the space is reused)";
    match days {
        // Tested on a full volume: deleting gives nothing back until VACUUM runs, and VACUUM
        // itself needs room, so prune alone cannot help.
        Some(0) => Check::warn(
            "disk",
            format!(
                "{usage}: the volume is full, so deleting frees nothing until VACUUM runs, and VACUUM needs \
                 room: run `reserve --release` (room at once, and it vacuums), then `prune` or extend the \
                 volume (`fly volumes extend <id> --size <GB>`), then `reserve` again"
            ),
        ),
        Some(days) if days < FULL_WITHIN_DAYS => {
            Check::warn("disk", format!("{usage}: full in about {days} days at {rate}; {fix}"))
        }
        _ if share > USED_SHARE => Check::warn("disk", format!("{usage}, {rate}; {fix}")),
        Some(days) => Check::ok("disk", format!("{usage}: full in about {days} days at {rate}")),
        None => Check::ok("disk", format!("{usage}; {rate}")),
    }
}

/// Whether space is kept in reserve, for the day the volume fills.
fn reserve(facts: &Facts) -> Check {
    if facts.reserve_bytes > 0 {
        Check::ok(
            "reserve",
            format!(
                "{} kept in reserve; `reserve --release` gives it back on a full volume",
                bytes(facts.reserve_bytes)
            ),
        )
    } else {
        Check::warn(
            "reserve",
            "no space is kept in reserve: on a full volume deleting frees nothing and VACUUM cannot run; run \
             `reserve` once (64 MiB)"
                .to_owned(),
        )
    }
}

fn backup(facts: &Facts, now: OffsetDateTime) -> Check {
    match &facts.newest_backup {
        None => Check::warn(
            "backup",
            "no database backup was ever recorded: schedule `backup-db --to s3://BUCKET/db` \
             (README: Automatic database backups)"
                .to_owned(),
        ),
        Some(newest) if now - newest.finished_at > BACKUP_MAX_AGE => Check::warn(
            "backup",
            format!(
                "the newest database backup finished {}, to {}: check the scheduled Machine's logs \
                 and run `backup-status {}`",
                when(newest.finished_at, now),
                newest.location,
                newest.location
            ),
        ),
        Some(newest) => Check::ok(
            "backup",
            format!("the newest database backup finished {}, to {}", when(newest.finished_at, now), newest.location),
        ),
    }
}

/// Off is no warning: the logical backups are the baseline. On, archiving must keep up: a
/// failure since the last segment archived warns.
fn archiving(facts: &Facts, now: OffsetDateTime) -> Check {
    let archiving = &facts.archiving;
    if archiving.mode == "off" {
        return Check::ok(
            "archiving",
            "WAL archiving is off: the recovery point is the newest database backup; \
             `fly postgres backup enable` brings it to about a minute (README: Automatic database backups)"
                .to_owned(),
        );
    }
    let last = |at: Option<OffsetDateTime>| at.map_or_else(|| "never".to_owned(), |at| when(at, now));
    match (archiving.last_failed_at, archiving.last_archived_at) {
        (Some(failed), archived) if archived.is_none_or(|archived| failed > archived) => Check::warn(
            "archiving",
            format!(
                "WAL archiving fails: last failure {}, last segment archived {} ({} failures); \
                 the WAL piles up on the volume until it works: see the Postgres app's logs",
                when(failed, now),
                last(archived),
                archiving.failed_count
            ),
        ),
        (_, archived) => Check::ok(
            "archiving",
            format!(
                "WAL archiving is on: last segment archived {} ({} in all)",
                last(archived),
                archiving.archived_count
            ),
        ),
    }
}

/// A volume's size as Fly states it, in powers of ten: `1 GB`, `1.5 GB`, `500 MB`.
fn decimal_size(n: u64) -> String {
    let (value, unit) = match n {
        n if n >= 1_000_000_000 => (n as f64 / 1e9, "GB"),
        n if n >= 1_000_000 => (n as f64 / 1e6, "MB"),
        n => (n as f64 / 1e3, "kB"),
    };
    let text = format!("{value:.1}");
    format!("{} {unit}", text.trim_end_matches(".0"))
}

fn vacuum(facts: &Facts) -> Check {
    let bloated: Vec<String> = facts
        .tables
        .iter()
        .filter_map(|table| {
            let rows = table.live_rows + table.dead_rows;
            let share = table.dead_rows as f64 / rows.max(1) as f64;
            (table.dead_rows >= DEAD_ROWS && share > DEAD_SHARE).then(|| {
                let last = table.last_vacuum.map_or_else(
                    || "never vacuumed".to_owned(),
                    |at| format!("last vacuumed {}", crate::output::rfc3339(at)),
                );
                format!(
                    "`{name}` is {:.0}% dead rows ({} of {rows}), {last}: run `VACUUM (ANALYZE) {name}` and check \
                     that autovacuum is on for it",
                    share * 100.0,
                    table.dead_rows,
                    name = table.name,
                )
            })
        })
        .collect();
    if bloated.is_empty() {
        Check::ok(
            "vacuum",
            format!("dead rows under {:.0}% in the {} largest tables", DEAD_SHARE * 100.0, facts.tables.len()),
        )
    } else {
        Check::warn("vacuum", bloated.join("; "))
    }
}

fn sessions(facts: &Facts, limit: f64) -> Check {
    let long: Vec<String> = facts
        .sessions
        .iter()
        .filter_map(|session| {
            let idle = session.state.starts_with("idle in transaction");
            let age = if idle { session.transaction_seconds } else { session.query_seconds }?;
            (age > limit).then(|| {
                let user = session.user_name.as_deref().unwrap_or("?");
                let doing = if idle { &session.state } else { "running a statement" };
                format!(
                    "pid {} ({user}) {doing} for {}: end it with `SELECT pg_terminate_backend({})`",
                    session.pid,
                    seconds(age),
                    session.pid
                )
            })
        })
        .collect();
    if long.is_empty() {
        Check::ok("sessions", format!("none idle in a transaction or running for more than {}", seconds(limit)))
    } else {
        Check::warn("sessions", long.join("; "))
    }
}

/// `45 s`, `12 min`, `3.5 h`, `2.1 days`.
fn seconds(s: f64) -> String {
    match s {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86_400.0),
    }
}

fn connections(facts: &Facts) -> Check {
    let usable = (facts.max_connections - facts.reserved_connections).max(1);
    let detail =
        format!("{} of {usable} connections in use (max_connections {})", facts.connections, facts.max_connections);
    if facts.connections as f64 > CONNECTIONS_SHARE * usable as f64 {
        Check::warn(
            "connections",
            format!(
                "{detail}: find what holds them (the sessions above, or a pool too large) or raise max_connections"
            ),
        )
    } else {
        Check::ok("connections", detail)
    }
}

fn slots(facts: &Facts) -> Check {
    let inactive: Vec<String> = facts
        .slots
        .iter()
        .filter(|slot| !slot.active)
        .map(|slot| {
            let retained = slot.retained_wal_bytes.map_or_else(|| "WAL".to_owned(), |n| format!("{} of WAL", bytes(n)));
            format!(
                "inactive {} slot `{}` retains {retained}: if its consumer is gone, drop it: \
                 `SELECT pg_drop_replication_slot('{}')`",
                slot.kind, slot.name, slot.name
            )
        })
        .collect();
    match (facts.slots.len(), inactive.is_empty()) {
        (0, _) => Check::ok("replication_slots", "none".to_owned()),
        (n, true) => Check::ok("replication_slots", format!("{n} slots, all active")),
        (_, false) => Check::warn("replication_slots", inactive.join("; ")),
    }
}

fn wal(wal_bytes: Option<i64>, volume: Option<u64>) -> Check {
    let Some(wal) = wal_bytes else {
        return Check::ok(
            "wal",
            "the WAL directory's size is not visible to this role (pg_ls_waldir needs pg_monitor)".to_owned(),
        );
    };
    match volume {
        Some(volume) if wal as f64 > WAL_SHARE * volume as f64 => Check::warn(
            "wal",
            format!(
                "WAL takes {} of the {} volume: look for an inactive replication slot or failing archiving, \
                 and check max_wal_size",
                bytes(wal),
                decimal_size(volume)
            ),
        ),
        _ => Check::ok("wal", format!("WAL takes {}", bytes(wal))),
    }
}

fn version(facts: &Facts, today: Date) -> Check {
    let major = facts.server_version_num / 10_000;
    let oldest = END_OF_LIFE.iter().find(|(_, end)| *end >= today).map(|(major, _)| *major);
    let newest = END_OF_LIFE.last().map(|(major, _)| *major).unwrap_or(major);
    let known = |what: String| {
        let oldest = oldest.map_or_else(String::new, |oldest| format!("; oldest supported: {oldest}"));
        format!("PostgreSQL {}: {what}{oldest}, newest: {newest}", facts.server_version)
    };
    match END_OF_LIFE.iter().find(|(m, _)| *m == major) {
        Some((_, end)) if *end < today => Check::warn(
            "version",
            known(format!(
                "out of support since {end}, so no more security fixes; upgrade (README: Upgrading PostgreSQL)"
            )),
        ),
        Some((_, end)) => Check::ok("version", known(format!("supported until {end}"))),
        None if major > newest => {
            Check::ok("version", format!("PostgreSQL {}: newer than this tool knows", facts.server_version))
        }
        None => Check::warn(
            "version",
            known("out of support, so no more security fixes; upgrade (README: Upgrading PostgreSQL)".to_owned()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::database_health::{Archiving, NewestBackup, Session, Slot, TableHealth};

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-12-02 12:00 UTC)
    }

    fn healthy() -> Facts {
        Facts {
            server_version: "16.4".into(),
            server_version_num: 160_004,
            database_bytes: 100 << 20,
            cluster_bytes: 110 << 20,
            sizes: vec![],
            tables: vec![TableHealth {
                name: "backups".into(),
                bytes: 90 << 20,
                live_rows: 10_000,
                dead_rows: 100,
                last_vacuum: None,
                last_analyze: None,
            }],
            sessions: vec![],
            connections: 5,
            max_connections: 100,
            reserved_connections: 3,
            slots: vec![],
            may_list_wal: true,
            reserve_bytes: 64 << 20,
            newest_backup: Some(NewestBackup {
                finished_at: now() - time::Duration::hours(20),
                location: "s3://dailyreps-backups/db".into(),
            }),
            archiving: Archiving {
                mode: "on".into(),
                archived_count: 1200,
                last_archived_at: Some(now() - time::Duration::minutes(1)),
                failed_count: 2,
                last_failed_at: Some(now() - time::Duration::days(3)),
            },
        }
    }

    fn limits(volume: Option<u64>) -> Thresholds {
        Thresholds { volume_bytes: volume, session_seconds: 300.0 }
    }

    fn sample(days_ago: i64, bytes: i64) -> SizeSample {
        SizeSample { taken_at: now() - time::Duration::days(days_ago), bytes }
    }

    fn warned(report: &Report) -> Vec<&'static str> {
        report.checks.iter().filter(|check| !check.ok).map(|check| check.name).collect()
    }

    #[test]
    fn a_healthy_database_is_ok_and_knows_no_growth_without_samples() {
        let report = judge(&healthy(), Some(16 << 20), limits(Some(1_000_000_000)), now());
        assert!(report.ok, "{report:?}");
        assert_eq!(report.growth_bytes_per_day, Growth { last_7_days: None, last_30_days: None });
        assert_eq!(report.days_until_full, None);
    }

    #[test]
    fn growth_comes_from_the_oldest_sample_in_each_window_and_sets_days_until_full() {
        let mut facts = healthy();
        // 1 MiB a day for the last week, nothing before.
        facts.sizes = vec![sample(20, 93 << 20), sample(7, 93 << 20), sample(3, 97 << 20), sample(0, 100 << 20)];
        let report = judge(&facts, Some(0), limits(Some(1 << 30)), now());
        assert_eq!(report.growth_bytes_per_day.last_7_days, Some(1_048_576.0));
        let thirty = report.growth_bytes_per_day.last_30_days.unwrap();
        assert!((thirty - 7.0 * 1_048_576.0 / 20.0).abs() < 1.0, "{thirty}");
        // (1024 - 110) MiB free at the faster rate, 1 MiB a day.
        assert_eq!(report.days_until_full, Some(914));
        assert!(report.ok);
        // At 10 MiB a day the same volume is full within a month.
        facts.sizes = vec![sample(7, 30 << 20)];
        let report = judge(&facts, Some(0), limits(Some(300 << 20)), now());
        assert_eq!(report.days_until_full, Some(19));
        assert_eq!(warned(&report), ["disk"]);
    }

    #[test]
    fn a_volume_smaller_than_the_database_is_full_now() {
        let report = judge(&healthy(), None, limits(Some(50 << 20)), now());
        assert_eq!(report.days_until_full, Some(0));
        assert_eq!(warned(&report), ["disk"]);
        assert!(report.checks[0].detail.contains("the volume is full"), "{:?}", report.checks[0]);
    }

    #[test]
    fn dead_rows_long_sessions_inactive_slots_and_full_connections_warn_with_the_fix() {
        let mut facts = healthy();
        facts.tables[0].dead_rows = 40_000;
        facts.sessions = vec![
            Session {
                pid: 42,
                user_name: Some("app".into()),
                state: "idle in transaction".into(),
                transaction_seconds: Some(3600.0),
                query_seconds: Some(3599.0),
            },
            Session {
                pid: 43,
                user_name: None,
                state: "active".into(),
                transaction_seconds: Some(1.0),
                query_seconds: Some(1.0),
            },
        ];
        facts.slots = vec![Slot {
            name: "gone".into(),
            kind: "physical".into(),
            active: false,
            retained_wal_bytes: Some(64 << 20),
        }];
        facts.connections = 90;
        let report = judge(&facts, None, limits(None), now());
        assert_eq!(warned(&report), ["vacuum", "sessions", "connections", "replication_slots"]);
        let detail = |name: &str| report.checks.iter().find(|c| c.name == name).unwrap().detail.clone();
        assert!(detail("vacuum").contains("VACUUM (ANALYZE) backups"), "{}", detail("vacuum"));
        assert!(
            detail("sessions").contains("pid 42") && !detail("sessions").contains("pid 43"),
            "{}",
            detail("sessions")
        );
        assert!(detail("sessions").contains("pg_terminate_backend(42)"));
        assert!(detail("replication_slots").contains("SELECT pg_drop_replication_slot('gone')"));
        assert!(detail("replication_slots").contains("64.00 MiB"));
    }

    #[test]
    fn a_major_past_its_end_of_life_warns_and_a_newer_one_is_not_refused() {
        let mut facts = healthy();
        facts.server_version = "14.9".into();
        facts.server_version_num = 140_009;
        let report = judge(&facts, None, limits(None), now());
        assert_eq!(warned(&report), ["version"]);
        assert!(report.checks[6].detail.contains("oldest supported: 15"), "{}", report.checks[6].detail);
        facts.server_version_num = 190_000;
        assert!(judge(&facts, None, limits(None), now()).ok);
    }

    #[test]
    fn a_database_backup_missing_or_older_than_26_hours_warns_naming_backup_status_and_where() {
        let mut facts = healthy();
        let report = judge(&facts, Some(0), limits(None), now());
        assert!(report.ok, "{report:?}");
        facts.newest_backup.as_mut().unwrap().finished_at = now() - time::Duration::hours(27);
        let report = judge(&facts, Some(0), limits(None), now());
        assert_eq!(warned(&report), ["backup"]);
        let detail = &report.checks.iter().find(|check| check.name == "backup").unwrap().detail;
        assert!(detail.contains("backup-status s3://dailyreps-backups/db"), "{detail}");
        assert!(
            detail.contains("finished 2026-12-01T09:00:00Z (27 hours ago)"),
            "the exact time, with its age: {detail}"
        );
        facts.newest_backup = None;
        let report = judge(&facts, Some(0), limits(None), now());
        assert_eq!(warned(&report), ["backup"]);
        assert!(report.checks.iter().any(|check| check.detail.contains("no database backup was ever recorded")));
    }

    #[test]
    fn archiving_warns_when_it_fails_since_the_last_segment_and_says_how_to_turn_it_on_when_off() {
        let mut facts = healthy();
        facts.archiving.last_failed_at = Some(now() - time::Duration::minutes(2));
        facts.archiving.last_archived_at = Some(now() - time::Duration::hours(3));
        let report = judge(&facts, Some(0), limits(None), now());
        assert_eq!(warned(&report), ["archiving"]);
        let detail = &report.checks.iter().find(|check| check.name == "archiving").unwrap().detail;
        assert!(
            detail.contains(
                "last failure 2026-12-02T11:58:00Z (2 minutes ago), last segment archived 2026-12-02T09:00:00Z"
            ),
            "{detail}"
        );
        facts.archiving.last_archived_at = None;
        assert_eq!(warned(&judge(&facts, Some(0), limits(None), now())), ["archiving"]);
        facts.archiving.mode = "off".into();
        let report = judge(&facts, Some(0), limits(None), now());
        assert!(report.ok);
        assert!(report.checks.iter().any(|check| check.detail.contains("fly postgres backup enable")));
    }
}
