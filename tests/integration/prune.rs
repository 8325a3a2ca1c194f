//! `prune`: each policy deletes exactly what it should, and nothing without consent.

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::{TestApp, TestDb, binary};
use crate::inspect::seed_user;

async fn prune(url: &str, args: &[&str]) -> binary::Outcome {
    let mut all = vec!["prune", "--json"];
    all.extend_from_slice(args);
    binary::run(&all, &[("DATABASE_URL", url)]).await
}

async fn summary(url: &str, args: &[&str]) -> Value {
    let outcome = prune(url, args).await;
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    serde_json::from_str(&outcome.stdout).unwrap()
}

/// Users, backups, their documents' bytes, and the chunks' bytes as stored.
pub(crate) async fn counts(pool: &PgPool) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM backups), \
                (SELECT coalesce(sum(size_bytes), 0)::bigint FROM backups), \
                (SELECT coalesce(sum(pg_column_size(data)), 0)::bigint FROM chunks)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn backup_ages(pool: &PgPool, user: Uuid) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT extract(day FROM now() - created_at)::bigint FROM backups WHERE user_id = $1 ORDER BY created_at DESC",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The figures a run reports equal what disappeared from the tables.
pub(crate) fn assert_figures(report: &Value, before: (i64, i64, i64, i64), after: (i64, i64, i64, i64)) {
    assert_eq!(report["users_deleted"].as_i64(), Some(before.0 - after.0), "{report}");
    assert_eq!(report["backups_deleted"].as_i64(), Some(before.1 - after.1), "{report}");
    assert_eq!(report["document_bytes"].as_i64(), Some(before.2 - after.2), "{report}");
    assert_eq!(report["bytes_freed"].as_i64(), Some(before.3 - after.3), "{report}");
}

#[tokio::test]
async fn older_than_deletes_exactly_the_old_backups() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let a = seed_user(&pool, 400, &[1, 50, 100, 200], 300).await;
    let b = seed_user(&pool, 400, &[95, 120], 500).await;
    let before = counts(&pool).await;
    let report = summary(&db.url, &["--older-than", "90d", "--yes"]).await;
    assert_eq!(report["dry_run"], false);
    assert_figures(&report, before, counts(&pool).await);
    assert_eq!(backup_ages(&pool, a).await, [1, 50]);
    assert_eq!(backup_ages(&pool, b).await, Vec::<i64>::new());
    assert_eq!(counts(&pool).await.0, 2, "accounts stay");
}

#[tokio::test]
async fn keep_last_keeps_each_users_newest() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let a = seed_user(&pool, 400, &[1, 2, 3, 4, 5], 100).await;
    let b = seed_user(&pool, 400, &[7], 100).await;
    let before = counts(&pool).await;
    let report = summary(&db.url, &["--keep-last", "2", "--yes"]).await;
    assert_figures(&report, before, counts(&pool).await);
    assert_eq!(backup_ages(&pool, a).await, [1, 2]);
    assert_eq!(backup_ages(&pool, b).await, [7]);
}

#[tokio::test]
async fn policies_combine_as_all_of_and_user_narrows_them() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let a = seed_user(&pool, 400, &[1, 100, 200, 300], 100).await;
    let b = seed_user(&pool, 400, &[100, 200, 300], 100).await;
    // Older than 90 days AND beyond the newest 2, for user a only.
    let report =
        summary(&db.url, &["--older-than", "90d", "--keep-last", "2", "--user", &a.to_string(), "--yes"]).await;
    assert_eq!(report["backups_deleted"], 2);
    assert_eq!(backup_ages(&pool, a).await, [1, 100]);
    assert_eq!(backup_ages(&pool, b).await, [100, 200, 300], "another user's data is untouched");

    let report = summary(&db.url, &["--user", &b.to_string(), "--yes"]).await;
    assert_eq!(report["backups_deleted"], 3);
    assert_eq!(backup_ages(&pool, b).await, Vec::<i64>::new());
    assert_eq!(counts(&pool).await.0, 2);
}

#[tokio::test]
async fn inactive_users_go_with_their_data_and_new_or_active_ones_stay() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let dormant = seed_user(&pool, 800, &[400, 500], 1000).await;
    let never_backed_up = seed_user(&pool, 800, &[], 0).await;
    let active = seed_user(&pool, 800, &[10, 400], 1000).await;
    let newcomer = seed_user(&pool, 3, &[], 0).await;
    sqlx::query("INSERT INTO idempotency_keys (user_id, key, request_sha256, backup_id, backup_created_at, size_bytes, sha256, deduplicated) \
                 SELECT $1, 'k', sha256('x'), gen_random_uuid(), now(), 1, sha256('x'), false")
        .bind(dormant)
        .execute(&pool)
        .await
        .unwrap();
    let before = counts(&pool).await;
    let report = summary(&db.url, &["--inactive-users", "365d", "--yes"]).await;
    assert_figures(&report, before, counts(&pool).await);
    assert_eq!(report["users_deleted"], 2);
    let left: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM users ORDER BY created_at").fetch_all(&pool).await.unwrap();
    assert!(
        left.contains(&active)
            && left.contains(&newcomer)
            && !left.contains(&dormant)
            && !left.contains(&never_backed_up)
    );
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys").fetch_one(&pool).await.unwrap();
    assert_eq!(keys, 0, "no row of a deleted user is left");
    assert_eq!(
        backup_ages(&pool, active).await,
        [10, 400],
        "an active user's old backups are not touched by this policy"
    );
}

/// An upload in flight holds its account's row; prune waits for it and must then see the
/// backup it committed, not delete the account it was acknowledged to.
#[tokio::test]
async fn an_upload_that_prune_waited_on_keeps_its_account() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let user = seed_user(&pool, 400, &[], 0).await;
    // What an upload does in its transaction: lock the account, then insert its backup.
    let mut upload = pool.begin().await.unwrap();
    sqlx::query("SELECT FROM users WHERE id = $1 FOR UPDATE").bind(user).execute(&mut *upload).await.unwrap();
    sqlx::query(
        "INSERT INTO backups (id, user_id, size_bytes, sha256, chunk_ids) \
         VALUES (gen_random_uuid(), $1, 2, sha256('{}'), test_chunks($1, '{}'))",
    )
    .bind(user)
    .execute(&mut *upload)
    .await
    .unwrap();
    let url = db.url.clone();
    let pruning = tokio::spawn(async move { summary(&url, &["--inactive-users", "365d", "--yes"]).await });
    crate::common::wait_until_blocked_on_lock(&pool, "").await;
    upload.commit().await.unwrap();
    let report = pruning.await.unwrap();
    assert_eq!(report["users_deleted"], 0, "{report}");
    assert_eq!(counts(&pool).await.0, 1, "the account stays");
    assert_eq!(counts(&pool).await.1, 1, "with its acknowledged backup");
}

#[tokio::test]
async fn a_dry_run_reports_what_a_real_run_then_deletes_and_deletes_nothing() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    seed_user(&pool, 400, &[1, 100, 200], 700).await;
    seed_user(&pool, 800, &[500], 700).await;
    let args = ["--older-than", "90d", "--inactive-users", "365d"];
    let before = counts(&pool).await;
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let planned = summary(&db.url, &dry).await;
    assert_eq!(planned["dry_run"], true);
    assert_eq!(counts(&pool).await, before, "a dry run deletes nothing");
    // It names every id it would delete; the table's text the first ones.
    let listed = |kind: &str| -> Vec<Uuid> {
        planned["selected"][kind].as_array().unwrap().iter().map(|id| id.as_str().unwrap().parse().unwrap()).collect()
    };
    let (users, backups) = (listed("users"), listed("backups"));
    assert_eq!(users.len() as i64, planned["users_deleted"].as_i64().unwrap());
    assert!(!backups.is_empty(), "{planned}");
    let [force, no_colour] = binary::AS_ON_A_TERMINAL;
    let env = [("DATABASE_URL", db.url.as_str()), force, no_colour];
    let text = binary::run(&["prune", dry[0], dry[1], dry[2], dry[3], "--dry-run"], &env).await;
    assert!(
        text.stdout.contains(&format!("accounts: {}", users[0])) && text.stdout.contains(&backups[0].to_string()),
        "{}",
        text.stdout
    );
    let mut real = args.to_vec();
    real.push("--yes");
    let done = summary(&db.url, &real).await;
    for key in ["users_deleted", "backups_deleted", "document_bytes", "bytes_freed"] {
        assert_eq!(planned[key], done[key], "{key}");
    }
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM users WHERE id = ANY($1)) + (SELECT count(*) FROM backups WHERE id = ANY($2))",
    )
    .bind(&users)
    .bind(&backups)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "what the dry run named is what went");
    assert_figures(&done, before, counts(&pool).await);
}

#[tokio::test]
async fn no_at_the_prompt_deletes_nothing_and_exits_5() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    seed_user(&pool, 400, &[100, 200], 100).await;
    let before = counts(&pool).await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let outcome = binary::run_on_terminal(&["prune", "--older-than", "90d"], &env, "n\n").await;
    assert_eq!(outcome.code, 5, "declined: {}", outcome.stdout);
    assert!(outcome.stdout.contains("Delete 0 users and 2 backups") && outcome.stdout.contains("nothing deleted"));
    assert_eq!(counts(&pool).await, before);
    let outcome = binary::run_on_terminal(&["prune", "--older-than", "90d"], &env, "y\n").await;
    assert_eq!(outcome.code, 0, "{}", outcome.stdout);
    assert_eq!(counts(&pool).await.1, 0, "yes deletes");
}

#[tokio::test]
async fn deleting_many_accounts_asks_for_their_count_and_a_yes_is_not_enough() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    for _ in 0..11 {
        seed_user(&pool, 400, &[300], 100).await;
    }
    let env = [("DATABASE_URL", db.url.as_str())];
    let args = ["prune", "--inactive-users", "200d"];
    for wrong in ["y\n", "yes\n", "10\n"] {
        let outcome = binary::run_on_terminal(&args, &env, wrong).await;
        assert_eq!(outcome.code, 5, "{wrong:?}: {}", outcome.stdout);
        assert!(outcome.stdout.contains("Type the number of accounts to delete (11)"), "{}", outcome.stdout);
        assert_eq!(counts(&pool).await.0, 11, "{wrong:?} deletes nothing");
    }
    let outcome = binary::run_on_terminal(&args, &env, "11\n").await;
    assert_eq!(outcome.code, 0, "{}", outcome.stdout);
    assert_eq!(counts(&pool).await.0, 0, "the count deletes them");
}

#[tokio::test]
async fn without_a_terminal_or_yes_nothing_is_deleted() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    seed_user(&pool, 400, &[100, 200], 100).await;
    let before = counts(&pool).await;
    let outcome = prune(&db.url, &["--older-than", "90d"]).await;
    assert_eq!(outcome.code, 2, "a usage error, as for restore-db --force without --yes");
    assert!(outcome.stderr.contains("--yes"), "{}", outcome.stderr);
    assert_eq!(counts(&pool).await, before);
    let no_policy = binary::run(&["prune", "--yes"], &[("DATABASE_URL", &db.url)]).await;
    assert_eq!(no_policy.code, 2, "a policy is required: {}", no_policy.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prune_while_the_server_takes_uploads_gives_errors_to_neither() {
    let app = TestApp::spawn().await;
    let users = [app.register().await, app.register().await, app.register().await];
    for user in &users {
        for n in 0..20 {
            app.upload_ok(user, format!(r#"{{"seed": {n}}}"#).as_bytes()).await;
        }
    }
    let url = app.pool.connect_options();
    let database_url = format!(
        "postgres://{}@{}:{}/{}",
        url.get_username(),
        url.get_host(),
        url.get_port(),
        url.get_database().unwrap()
    );
    let mut uploads = tokio::task::JoinSet::new();
    for (u, user) in users.iter().enumerate() {
        for n in 0..15 {
            let request = app
                .authed(
                    user,
                    reqwest::Method::POST,
                    "/api/backup",
                    format!(r#"{{"user": {u}, "live": {n}}}"#).as_bytes(),
                )
                .header("content-type", "application/json");
            uploads.spawn(async move { request.send().await.unwrap().status() });
        }
    }
    let pruned = prune(&database_url, &["--keep-last", "1", "--batch-size", "5", "--yes"]).await;
    let statuses = uploads.join_all().await;
    assert_eq!(pruned.code, 0, "{}", pruned.stderr);
    assert!(statuses.iter().all(|s| s.is_success()), "{statuses:?}");
    for user in &users {
        assert!(app.backup_count(user.id).await >= 1, "every user keeps at least their newest backup");
    }
}

#[tokio::test]
async fn ctrl_c_stops_after_a_whole_batch_and_reports_what_was_deleted() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    sqlx::query("INSERT INTO users (id, token_hash, created_at) VALUES ('00000000-0000-4000-8000-000000000001', sha256('u'), now() - interval '1 year')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO backups (id, user_id, created_at, size_bytes, sha256, chunk_ids) \
         SELECT gen_random_uuid(), '00000000-0000-4000-8000-000000000001', now() - interval '200 days' - make_interval(secs => g), 2, sha256('{}'), \
                test_chunks('00000000-0000-4000-8000-000000000001', '{}') \
         FROM generate_series(1, 3000) g",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before = counts(&pool).await;
    let child = binary::command()
        .args(["prune", "--json", "--older-than", "90d", "--batch-size", "1", "--yes"])
        .env("DATABASE_URL", &db.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until deleting has begun, then interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while counts(&pool).await.1 == before.1 {
        assert!(std::time::Instant::now() < deadline, "prune never started deleting");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let pid = child.id().unwrap().to_string();
    assert!(tokio::process::Command::new("kill").args(["-INT", &pid]).status().await.unwrap().success());
    let output = child.wait_with_output().await.unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!("interrupted run: {report}");
    assert_figures(&report, before, counts(&pool).await);
    if report["interrupted"] == true {
        assert_eq!(output.status.code(), Some(130), "Ctrl-C exits 130, as everywhere");
        assert!(report["backups_deleted"].as_i64().unwrap() < 3000, "{report}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("interrupted"));
    }
}

#[tokio::test]
async fn durations_need_a_unit_and_a_sane_length_and_the_plan_names_its_cutoff() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    seed_user(&pool, 400, &[1, 50], 300).await;
    let before = counts(&pool).await;
    let bare = prune(&db.url, &["--inactive-users", "365", "--yes"]).await;
    assert_eq!(bare.code, 2, "a usage error: {}", bare.stderr);
    assert!(bare.stderr.contains("has no unit: write 365d"), "{}", bare.stderr);
    for args in
        [&["prune", "--older-than", "99999999d", "--dry-run"][..], &["inspect", "backups", "--since", "99999999d"]]
    {
        let huge = binary::run(args, &[("DATABASE_URL", &db.url)]).await;
        assert_eq!(huge.code, 2, "{args:?}: {}", huge.stderr);
        assert!(huge.stderr.contains("longer than 100 years"), "{}", huge.stderr);
    }
    assert_eq!(counts(&pool).await, before, "nothing deleted");

    let planned = prune(&db.url, &["--older-than", "30d", "--dry-run"]).await;
    assert_eq!(planned.code, 0, "{}", planned.stderr);
    let cutoff = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    let day = format!("{:04}-{:02}-{:02}", cutoff.year(), u8::from(cutoff.month()), cutoff.day());
    assert!(
        planned.stderr.contains(&format!("backups older than {day}")) && planned.stderr.contains("UTC (30 days)"),
        "{}",
        planned.stderr
    );
}

/// The rules written for READ COMMITTED keep that level on a database whose default is another.
#[tokio::test]
async fn connections_run_read_committed_whatever_the_databases_default() {
    let db = TestDb::migrated().await;
    let name = db.url.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();
    let admin = db.pool().await;
    let alter = format!("ALTER DATABASE \"{name}\" SET default_transaction_isolation TO 'serializable'");
    sqlx::raw_sql(sqlx::AssertSqlSafe(alter)).execute(&admin).await.unwrap();
    admin.close().await;
    let plain: String = {
        let mut raw = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
        sqlx::query_scalar("SHOW transaction_isolation").fetch_one(&mut raw).await.unwrap()
    };
    assert_eq!(plain, "serializable", "the database's own default");
    let ours: String = sqlx::query_scalar("SHOW transaction_isolation").fetch_one(&db.pool().await).await.unwrap();
    assert_eq!(ours, "read committed");
}
