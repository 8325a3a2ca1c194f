//! `inspect health` against real PostgreSQL: a healthy fresh cluster exits 0, and an inactive
//! replication slot, a session idle in a transaction, a volume smaller than the database, a
//! table of dead rows and a missing database backup each warn (exit 3) with what to do; `--ping`
//! tells a monitor; two round trips at most; and `serve` samples the size daily and exports it
//! without a query per scrape.

use std::time::{Duration, Instant};

use dailyreps_backup_server::local_postgres::LocalCluster;
use serde_json::Value;
use sqlx::PgPool;

use crate::common::{TestApp, TestDb, binary, connect, database_in, start_cluster, with_database};

/// `inspect health --json ARGS`: (exit code, report).
async fn health(url: &str, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["inspect", "health", "--json"];
    all.extend_from_slice(args);
    let outcome = binary::run(&all, &[("DATABASE_URL", url)]).await;
    let report = serde_json::from_str(&outcome.stdout).unwrap_or_else(|e| panic!("{e}: {}", outcome.stderr));
    (outcome.code, report)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{report}"))
}

/// A migrated database on a cluster of its own, for checks of the whole server (slots, every
/// database's size) that other tests' databases would disturb.
async fn alone() -> (LocalCluster, String, PgPool) {
    let cluster = start_cluster().await;
    let url = database_in(&cluster).await;
    let pool = connect(&url).await;
    dailyreps_backup_server::db::migrations::apply(&pool).await.unwrap();
    // As an operator sets one up: a database without space in reserve, or without a recent
    // database backup, warns (tested below).
    dailyreps_backup_server::db::reserve::add(&pool, 1 << 20).await.unwrap();
    dailyreps_backup_server::db::database_backups::record(&pool, "s3://dailyreps-backups/db", 1 << 20, 1.0)
        .await
        .unwrap();
    (cluster, url, pool)
}

#[tokio::test]
async fn no_space_in_reserve_warns_until_reserve_keeps_some_and_release_gives_it_back() {
    let db = TestDb::migrated().await;
    let (_, report) = health(&db.url, &[]).await;
    let reserve = check(&report, "reserve");
    assert_eq!(reserve["ok"], false, "{report}");
    assert!(reserve["detail"].as_str().unwrap().contains("run `reserve`"), "{report}");

    let kept = binary::run(&["reserve", "--size", "2MiB", "--json"], &[("DATABASE_URL", &db.url)]).await;
    assert_eq!(kept.code, 0, "{}", kept.stderr);
    let kept: Value = serde_json::from_str(&kept.stdout).unwrap();
    let bytes = kept["reserve_bytes"].as_i64().unwrap();
    assert!((2 << 20..(2 << 20) + 16 * 8192).contains(&bytes), "{kept}");
    let (_, report) = health(&db.url, &[]).await;
    assert_eq!(check(&report, "reserve")["ok"], true, "{report}");

    let again = binary::run(&["reserve", "--size", "2MiB", "--json"], &[("DATABASE_URL", &db.url)]).await;
    let again: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(again["changed_bytes"], 0, "a reserve that is there already is kept as it is: {again}");

    let released = binary::run(&["reserve", "--release", "--json"], &[("DATABASE_URL", &db.url)]).await;
    assert_eq!(released.code, 0, "{}", released.stderr);
    let released: Value = serde_json::from_str(&released.stdout).unwrap();
    assert_eq!(released, serde_json::json!({"reserve_bytes": 0, "changed_bytes": -bytes}));
    let size: i64 =
        sqlx::query_scalar("SELECT pg_relation_size('storage_reserve')").fetch_one(&db.pool().await).await.unwrap();
    assert_eq!(size, 0, "its file is given back");
}

#[tokio::test]
async fn a_fresh_cluster_is_healthy_and_an_inactive_slot_warns_by_name_with_the_fix() {
    let (_cluster, url, pool) = alone().await;

    let (code, report) = health(&url, &[]).await;
    // The version check turns with the calendar (this machine's major leaves support on a date):
    // its verdict must follow the date it names, and only it may warn on a fresh cluster. What
    // it says for each date is the unit tests' (database_health::tests), with dates as input.
    let version = check(&report, "version");
    let detail = version["detail"].as_str().unwrap();
    let today = time::OffsetDateTime::now_utc().date();
    let format = time::format_description::parse_borrowed::<2>("[year]-[month]-[day]").unwrap();
    let supported = match detail.split_once("supported until ") {
        Some((_, rest)) => time::Date::parse(&rest[..10], &format).unwrap() >= today,
        None => detail.contains("newer than this tool knows"),
    };
    assert_eq!(version["ok"], supported, "{detail}");
    assert_eq!(code == 0, supported, "{report}");
    let mut keys: Vec<&String> = report.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["checks", "database_bytes", "days_until_full", "growth_bytes_per_day", "ok", "tables"]);
    assert_eq!(report["ok"], supported);
    let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(&pool).await.unwrap();
    assert_eq!(report["database_bytes"], size);
    assert_eq!(report["days_until_full"], Value::Null, "no volume size given");
    assert_eq!(report["growth_bytes_per_day"], serde_json::json!({"last_7_days": null, "last_30_days": null}));
    let names: Vec<&str> = report["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "disk",
            "vacuum",
            "sessions",
            "connections",
            "replication_slots",
            "wal",
            "version",
            "reserve",
            "backup",
            "archiving"
        ]
    );
    assert!(check(&report, "archiving")["detail"].as_str().unwrap().contains("WAL archiving is off"), "{report}");
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| (c["ok"] == true || c["name"] == "version") && c["detail"].is_string())
    );
    assert!(check(&report, "wal")["detail"].as_str().unwrap().contains("WAL takes"), "a superuser sees the WAL");

    // Reserves WAL at once, with nobody to consume it.
    sqlx::query("SELECT pg_create_physical_replication_slot('forgotten_replica', true)").execute(&pool).await.unwrap();
    let (code, report) = health(&url, &[]).await;
    assert_eq!(code, 3, "{report}");
    let slots = check(&report, "replication_slots");
    assert_eq!(slots["ok"], false);
    let detail = slots["detail"].as_str().unwrap();
    assert!(
        detail.contains("`forgotten_replica`")
            && detail.contains("SELECT pg_drop_replication_slot('forgotten_replica')"),
        "{detail}"
    );
    let others: Vec<&Value> = report["checks"].as_array().unwrap().iter().filter(|c| c["ok"] == false).collect();
    assert_eq!(others.len(), 1, "only the slot warns: {report}");

    // The text says the same, and why it exits 3.
    let text = binary::run(&["inspect", "health"], &[("DATABASE_URL", &url)]).await;
    assert_eq!(text.code, 3);
    assert!(text.stdout.contains("WARN") && text.stdout.contains("forgotten_replica"), "{}", text.stdout);
    assert!(text.stderr.contains("1 of 10 checks warn: replication_slots"), "{}", text.stderr);
    pool.close().await;
}

#[tokio::test]
async fn a_session_idle_in_a_transaction_past_the_threshold_warns_without_its_query_text() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let mut idle = pool.begin().await.unwrap();
    sqlx::query("SELECT 'a document only the user may read'").execute(&mut *idle).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *idle).await.unwrap();

    let (_, report) = health(&db.url, &[]).await;
    assert_eq!(check(&report, "sessions")["ok"], true, "not yet past the default 5 minutes: {report}");
    let (code, report) = health(&db.url, &["--long-transaction", "0s"]).await;
    assert_eq!(code, 3);
    let sessions = check(&report, "sessions");
    assert_eq!(sessions["ok"], false, "{report}");
    let detail = sessions["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("pid {pid}")) && detail.contains("idle in transaction"), "{detail}");
    assert!(detail.contains(&format!("pg_terminate_backend({pid})")), "{detail}");
    assert!(!report.to_string().contains("only the user may read"), "no query text: {report}");
    idle.rollback().await.unwrap();
}

#[tokio::test]
async fn a_volume_smaller_than_the_database_is_full_now_and_growth_comes_from_daily_samples() {
    let (_cluster, url, pool) = alone().await;
    let (code, report) = health(&url, &["--volume-size", "1MB"]).await;
    assert_eq!(code, 3);
    assert_eq!(report["days_until_full"], 0, "{report}");
    let disk = check(&report, "disk");
    assert_eq!(disk["ok"], false);
    assert!(disk["detail"].as_str().unwrap().contains("the volume is full"), "{disk}");

    // A week of samples, as `serve` would have left them: 1 MB a day.
    let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO database_sizes (day, taken_at, bytes) \
         SELECT (now() - make_interval(days => d))::date, now() - make_interval(days => d), $1 - d * 1000000 \
         FROM generate_series(1, 7) d",
    )
    .bind(size)
    .execute(&pool)
    .await
    .unwrap();
    let (_, report) = health(&url, &["--volume-size", "100GB"]).await;
    let rate = report["growth_bytes_per_day"]["last_7_days"].as_f64().unwrap();
    assert!((rate - 1e6).abs() < 1e4, "{report}");
    let days = report["days_until_full"].as_u64().unwrap();
    assert!((99_000..=100_000).contains(&days), "about 100 GB / 1 MB a day: {report}");
    assert_eq!(check(&report, "disk")["ok"], true);
    let unitless = binary::run(&["inspect", "health", "--volume-size", "1"], &[("DATABASE_URL", &url)]).await;
    assert_eq!(unitless.code, 2);
    assert!(unitless.stderr.contains("has no unit"), "{}", unitless.stderr);
}

#[tokio::test]
async fn a_table_of_dead_rows_that_vacuum_never_reached_warns() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("ALTER TABLE backups SET (autovacuum_enabled = false)").execute(&mut *conn).await.unwrap();
    sqlx::query("INSERT INTO users (id, token_hash) VALUES (gen_random_uuid(), sha256('u'))")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO backups (id, user_id, size_bytes, sha256, chunk_ids) \
         SELECT gen_random_uuid(), id, 2, sha256('{}'), test_chunks(id, '{}') FROM users, generate_series(1, 3000)",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("DELETE FROM backups WHERE ctid IN (SELECT ctid FROM backups LIMIT 2900)")
        .execute(&mut *conn)
        .await
        .unwrap();
    // The backend hands its counts to the statistics before it answers this.
    sqlx::query("SELECT pg_stat_force_next_flush()").execute(&mut *conn).await.unwrap();

    let (code, report) = health(&db.url, &[]).await;
    assert_eq!(code, 3);
    let vacuum = check(&report, "vacuum");
    assert_eq!(vacuum["ok"], false, "{report}");
    let detail = vacuum["detail"].as_str().unwrap();
    assert!(detail.contains("`backups`") && detail.contains("VACUUM (ANALYZE) backups"), "{detail}");
    let backups = report["tables"].as_array().unwrap().iter().find(|t| t["name"] == "backups").unwrap();
    assert_eq!(backups["dead_rows"], 2900, "{backups}");

    sqlx::query("VACUUM (ANALYZE) backups").execute(&mut *conn).await.unwrap();
    sqlx::query("SELECT pg_stat_force_next_flush()").execute(&mut *conn).await.unwrap();
    let (_, report) = health(&db.url, &[]).await;
    assert_eq!(check(&report, "vacuum")["ok"], true, "{report}");
}

#[tokio::test]
async fn a_role_that_may_not_list_the_wal_still_gets_every_other_check() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let role = format!("health_{}", uuid::Uuid::new_v4().simple());
    for statement in
        [format!("CREATE ROLE {role} LOGIN"), format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")]
    {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&pool).await.unwrap();
    }
    let (authority, database) = db.url.rsplit_once('/').unwrap();
    let host = authority.rsplit_once('@').unwrap().1;
    let url = format!("postgres://{role}@{host}/{database}");
    let (_, report) = health(&url, &[]).await;
    let wal = check(&report, "wal");
    assert_eq!(wal["ok"], true, "{report}");
    assert!(wal["detail"].as_str().unwrap().contains("not visible to this role"), "{wal}");
    assert_eq!(report["checks"].as_array().unwrap().len(), 10);
    assert!(report["database_bytes"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn inspect_health_costs_at_most_two_round_trips() {
    let db = TestDb::migrated().await;
    let (host_port, database) = db.url.rsplit_once('/').unwrap();
    let (credentials, upstream) = host_port.rsplit_once('@').unwrap();
    let (port, turns) = crate::inspect::round_trip_counter(upstream.to_owned()).await;
    let counted_url = format!("{credentials}@127.0.0.1:{port}/{database}");
    let round_trips = async |args: &[&str]| {
        let before = turns.load(std::sync::atomic::Ordering::SeqCst);
        let outcome = binary::run(args, &[("DATABASE_URL", &counted_url)]).await;
        assert!(outcome.stdout.starts_with('{'), "{}", outcome.stderr);
        turns.load(std::sync::atomic::Ordering::SeqCst) - before
    };
    // `migrate status`: connecting, and one prepared statement (two round trips: prepare, run).
    let baseline = round_trips(&["migrate", "status", "--json"]).await;
    let health = round_trips(&["inspect", "health", "--json"]).await;
    eprintln!("round trips: migrate status {baseline}, inspect health {health}");
    // The superuser lists the WAL too: the facts and the WAL, two simple statements on one
    // connection, as many round trips as one prepared statement.
    assert!(baseline >= 3, "connecting, and a prepared statement's two: {baseline}");
    assert!(health <= baseline, "inspect health: {health} round trips, against {baseline} for connect + one statement");
}

#[tokio::test]
async fn serve_samples_the_size_daily_and_exports_it_without_a_query_per_scrape() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let app = TestApp::spawn_on(&db.url).await;
    let gauge = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} is exported: {text}"))
    };
    let scrape =
        async || app.client.get(format!("{}/metrics", app.metrics_address)).send().await.unwrap().text().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let sampled: i64 = loop {
        let recorded: Option<i64> =
            sqlx::query_scalar("SELECT bytes FROM database_sizes WHERE day = (now() AT TIME ZONE 'UTC')::date")
                .fetch_optional(&pool)
                .await
                .unwrap();
        if let Some(bytes) = recorded
            && gauge(&scrape().await, "dailyreps_database_size_bytes") > 0.0
        {
            break bytes;
        }
        assert!(Instant::now() < deadline, "serve recorded no size sample");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = scrape().await;
    // Two readings of one size (the job's sample, the metrics' refresh): a few pages apart at most.
    let exported = gauge(&text, "dailyreps_database_size_bytes");
    assert!((exported - sampled as f64).abs() <= (1 << 20) as f64, "exported {exported}, sampled {sampled}");
    let max: i64 =
        sqlx::query_scalar("SELECT current_setting('max_connections')::bigint").fetch_one(&pool).await.unwrap();
    assert_eq!(gauge(&text, "dailyreps_database_max_connections"), max as f64);
    assert!(gauge(&text, "dailyreps_database_connections") >= 1.0);

    // With the database refusing every connection, scrapes still answer at once with the
    // figures of the last refresh: they never query.
    let name = db.url.rsplit('/').next().unwrap();
    let admin = connect(&with_database(&db.url, "postgres")).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .execute(&admin)
        .await
        .unwrap();
    for _ in 0..20 {
        assert_eq!(gauge(&scrape().await, "dailyreps_database_size_bytes"), exported);
    }
}

#[tokio::test]
async fn no_database_backup_warns_and_the_ping_carries_the_warnings_until_a_backup_makes_it_ok() {
    use super::backup_watch::{next_ping, ping_stub};
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    dailyreps_backup_server::db::reserve::add(&pool, 1 << 20).await.unwrap();
    let (url, mut pings) = ping_stub().await;

    let (code, report) = health(&db.url, &["--ping", &url]).await;
    assert_eq!(code, 3, "{report}");
    let backup = check(&report, "backup");
    assert_eq!(backup["ok"], false, "{report}");
    assert!(backup["detail"].as_str().unwrap().contains("no database backup was ever recorded"), "{report}");
    let (line, body) = next_ping(&mut pings).await;
    assert_eq!(line, "POST /ping/check-1/fail HTTP/1.1");
    assert!(body.starts_with("backup: no database backup was ever recorded"), "{body}");

    // A backup taken as the schedule takes it: the check and the ping turn ok.
    let folder = crate::common::scratch_dir("health-ping");
    let taken = binary::run(&["backup-db", "--output", folder.to_str().unwrap()], &[("DATABASE_URL", &db.url)]).await;
    assert_eq!(taken.code, 0, "{}", taken.stderr);
    let (code, report) = health(&db.url, &["--ping", &url]).await;
    assert_eq!(code, 0, "{report}");
    let detail = check(&report, "backup")["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains(folder.to_str().unwrap()), "names where the backup went: {detail}");
    assert_eq!(next_ping(&mut pings).await, ("POST /ping/check-1 HTTP/1.1".to_owned(), "10 checks ok".to_owned()));
    std::fs::remove_dir_all(&folder).unwrap();

    // Unreachable: the monitor hears the error.
    let unreachable =
        binary::run(&["inspect", "health", "--ping", &url], &[("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")])
            .await;
    assert_ne!(unreachable.code, 0);
    let (line, body) = next_ping(&mut pings).await;
    assert_eq!(line, "POST /ping/check-1/fail HTTP/1.1");
    assert!(body.contains("127.0.0.1:1"), "{body}");
}

/// A database backup recorded 27 hours ago: the schedule has missed a day.
#[tokio::test]
async fn a_recorded_backup_older_than_26_hours_warns_naming_backup_status() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    sqlx::query(
        "INSERT INTO database_backups (location, bytes, seconds, finished_at) \
         VALUES ('s3://dailyreps-backups/db', 1, 1, now() - interval '27 hours')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (_, report) = health(&db.url, &[]).await;
    let backup = check(&report, "backup");
    assert_eq!(backup["ok"], false, "{report}");
    let detail = backup["detail"].as_str().unwrap();
    assert!(
        detail.contains("(27 hours ago)") && detail.contains("backup-status s3://dailyreps-backups/db"),
        "{detail}"
    );
}
