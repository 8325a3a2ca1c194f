//! `backup-db`, `verify-backup`, `restore-db`: round trips, consistency under load, crashes,
//! corruption, and a restore with the standard client tools alone.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::PgPool;

use crate::common::{TestApp, TestDb, binary, scratch_dir, stored_document};

pub(crate) async fn backup(url: &str, output: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["backup-db", "--json", "--output"];
    let output = format!("{}/", output.display());
    args.push(&output);
    args.extend_from_slice(extra);
    let outcome = binary::run(&args, &[("DATABASE_URL", url)]).await;
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    serde_json::from_str(&outcome.stdout).unwrap()
}

pub(crate) async fn restore(url: &str, file: &str, extra: &[&str]) -> binary::Outcome {
    let mut args = vec!["restore-db", file];
    args.extend_from_slice(extra);
    binary::run(&args, &[("DATABASE_URL", url)]).await
}

/// Every table's rows, as one digest per table; not those the tools write on their own
/// (`backup-db` records itself in `database_backups` after its snapshot, so a source always
/// holds one row more than its dump; `serve`'s background refresh samples `database_sizes`).
pub(crate) async fn fingerprint(pool: &PgPool) -> Vec<(String, i64, String)> {
    let mut tables = Vec::new();
    let own = ["database_backups", "database_sizes"];
    for table in dailyreps_backup_server::db::dump::TABLES.iter().filter(|t| !own.contains(t)) {
        let sql = format!(
            "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM public.{table} t"
        );
        let (rows, digest): (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.unwrap();
        tables.push(((*table).to_owned(), rows, digest));
    }
    tables
}

/// A document whose COPY text needs escaping: a JSON-escaped tab and backslash, and unicode.
pub(crate) fn document(u: usize, n: usize) -> Vec<u8> {
    // The first user's are large, so a table's data spans many of backup-db's batches.
    let padding = if u == 0 { "x".repeat(100_000 + n) } else { String::new() };
    format!(r#"{{"u": {u}, "n": {n}, "text": "tab\there, back\\slash, ünï ✓", "padding": "{padding}"}}"#).into_bytes()
}

/// Every index and constraint of the public schema, as PostgreSQL prints them.
pub(crate) async fn schema_of(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' \
         UNION ALL SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) \
         FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

pub(crate) async fn populated_app() -> (TestApp, Vec<crate::common::TestUser>) {
    let app = TestApp::spawn().await;
    let mut users = Vec::new();
    for u in 0..4 {
        let user = app.register().await;
        for n in 0..3 {
            let response = app.upload_keyed(&user, &document(u, n), &format!("k{n}")).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
        }
        users.push(user);
    }
    (app, users)
}

pub(crate) fn app_url(app: &TestApp) -> String {
    let options = app.pool.connect_options();
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap()
    )
}

#[tokio::test]
async fn a_dump_restores_every_row_and_the_server_works_on_the_copy() {
    let (app, users) = populated_app().await;
    let dir = scratch_dir("dumps");
    let summary = backup(&app_url(&app), &dir, &[]).await;
    let path = summary["path"].as_str().unwrap().to_owned();
    assert!(Path::new(&path).exists());
    assert_eq!(summary["bytes"].as_u64().unwrap(), std::fs::metadata(&path).unwrap().len());
    assert_eq!(summary["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(summary["tables"][3], serde_json::json!({"name": "backups", "rows": 12}));

    let target = TestDb::empty().await;
    let restored = restore(&target.url, &path, &["--json"]).await;
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    let report: Value = serde_json::from_str(&restored.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(fingerprint(&target.pool().await).await, fingerprint(&app.pool).await, "every row of every table");
    assert_eq!(schema_of(&target.pool().await).await, schema_of(&app.pool).await, "the same indexes and constraints");

    // The server works against the copy: old tokens, old backups, new uploads.
    let copy = TestApp::spawn_on(&target.url).await;
    let old = &users[0];
    let latest = copy.authed(old, Method::GET, "/api/backups/latest", b"").send().await.unwrap();
    assert_eq!(latest.status(), StatusCode::OK);
    let replay = copy.upload_keyed(old, &document(0, 0), "k0").send().await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true", "idempotency keys came along");
    let newcomer = copy.register().await;
    copy.upload_ok(&newcomer, br#"{"after": "restore"}"#).await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_dump_holds_exactly_the_state_of_its_snapshots_instant() {
    let (app, users) = populated_app().await;
    let dir = scratch_dir("dumps");
    let at_snapshot = fingerprint(&app.pool).await;
    // Hold the dump at its COPY of `users`, after its snapshot began; meanwhile commit an
    // account, uploads whose retention prunes older backups, new idempotency keys and a deletion.
    let mut writes = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE").execute(&mut *writes).await.unwrap();
    let (url, output) = (app_url(&app), dir.clone());
    let dump = tokio::spawn(async move { backup(&url, &output, &[]).await });
    crate::common::wait_until_blocked_on_lock(&app.pool, "COPY public.users").await;
    sqlx::query("INSERT INTO users (id, token_hash) VALUES (gen_random_uuid(), sha256('newcomer'))")
        .execute(&mut *writes)
        .await
        .unwrap();
    for (u, user) in users.iter().enumerate() {
        let stored: String = sqlx::query_scalar(
            "SELECT outcome FROM store_backup_v4($1, gen_random_uuid(), 2, sha256(convert_to($2, 'UTF8')), \
             ARRAY[sha256(convert_to($2, 'UTF8'))], ARRAY[sha256(convert_to($2, 'UTF8'))], ARRAY[$2], 2, $3)",
        )
        .bind(user.id)
        .bind(format!("{{\"after\": {u}}}"))
        .bind(format!("later-{u}"))
        .fetch_one(&mut *writes)
        .await
        .unwrap();
        assert_eq!(stored, "stored");
    }
    sqlx::query("DELETE FROM backups WHERE user_id = $1").bind(users[3].id).execute(&mut *writes).await.unwrap();
    writes.commit().await.unwrap();
    let summary = dump.await.unwrap();
    let after = fingerprint(&app.pool).await;
    assert!(after.iter().zip(&at_snapshot).skip(1).all(|(now, then)| now != then), "every table changed meanwhile");

    let target = TestDb::empty().await;
    let restored = restore(&target.url, summary["path"].as_str().unwrap(), &[]).await;
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    assert_eq!(fingerprint(&target.pool().await).await, at_snapshot, "the dump is the snapshot's instant, no later");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_dump_killed_half_way_leaves_nothing_under_a_final_name() {
    let (app, _) = populated_app().await;
    let dir = scratch_dir("dumps");
    std::fs::create_dir_all(&dir).unwrap();
    // Hold a lock the dump's COPY of `backups` must wait for: it stops half-way, file open.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE backups IN ACCESS EXCLUSIVE MODE").execute(&mut *blocker).await.unwrap();
    let mut child = binary::command()
        .args(["backup-db", "--output"])
        .arg(format!("{}/", dir.display()))
        .env("DATABASE_URL", app_url(&app))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    crate::common::wait_until_blocked_on_lock(&app.pool, "COPY public.backups").await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    blocker.rollback().await.unwrap();
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|name| name.starts_with('.') && name.ends_with(".partial")), "{names:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn keep_rotates_the_oldest_dumps_out() {
    let (app, _) = populated_app().await;
    let dir = scratch_dir("dumps");
    std::fs::create_dir_all(&dir).unwrap();
    for old in ["dailyreps-20240101T000000.000Z.sql.zst", "dailyreps-20250101T000000.000Z.sql.zst", "unrelated.txt"] {
        std::fs::write(dir.join(old), "old").unwrap();
    }
    let summary = backup(&app_url(&app), &dir, &["--keep", "2"]).await;
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let newest = Path::new(summary["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(names, ["dailyreps-20250101T000000.000Z.sql.zst".to_owned(), newest, "unrelated.txt".to_owned()]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn restore_refuses_a_non_empty_target_unless_forced() {
    let (app, _) = populated_app().await;
    let dir = scratch_dir("dumps");
    let path = backup(&app_url(&app), &dir, &[]).await["path"].as_str().unwrap().to_owned();
    let target = TestDb::migrated().await;
    let pool = target.pool().await;
    sqlx::query("INSERT INTO users (id, token_hash) VALUES (gen_random_uuid(), sha256('precious'))")
        .execute(&pool)
        .await
        .unwrap();
    let refused = restore(&target.url, &path, &[]).await;
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("not empty") && refused.stderr.contains("--force"), "{}", refused.stderr);
    let untouched: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&pool).await.unwrap();
    assert_eq!(untouched, 1);

    // Asked on a terminal, a no leaves it as it was, and says so with exit 5.
    let env = [("DATABASE_URL", target.url.as_str())];
    let declined = binary::run_on_terminal(&["restore-db", &path, "--force"], &env, "n\n").await;
    assert_eq!(declined.code, 5, "{}", declined.stdout);
    assert!(declined.stdout.contains("Replace everything in") && declined.stdout.contains("is as it was"));
    let untouched: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&pool).await.unwrap();
    assert_eq!(untouched, 1);

    let forced = restore(&target.url, &path, &["--force", "--yes"]).await;
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_eq!(fingerprint(&pool).await, fingerprint(&app.pool).await);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A well-formed dump whose data breaks a constraint half-way through, after `user_row`.
fn dump_failing_half_way(dir: &Path, user_row: &[u8]) -> PathBuf {
    use dailyreps_backup_server::dump::{self, Header, writer::DumpWriter};
    let schema_version = dailyreps_backup_server::db::migrations::latest_known_version();
    let header = Header {
        format_version: dump::FORMAT_VERSION,
        created_at: "2026-11-29T00:00:00Z".into(),
        server_version: "test".into(),
        postgres_version: "15".into(),
        schema_version,
    };
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("failing.sql.zst");
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = DumpWriter::new(dump::compress(file).unwrap(), &header).unwrap();
    writer
        .section("schema", &dailyreps_backup_server::db::dump::Snapshot::schema_sql(schema_version).unwrap())
        .unwrap();
    let migrations = ["version", "description", "installed_on", "success", "checksum", "execution_time"];
    writer.begin_table("_sqlx_migrations", &migrations.map(String::from)).unwrap();
    writer.end_table().unwrap();
    writer.begin_table("users", &["id".into(), "token_hash".into(), "created_at".into()]).unwrap();
    writer.table_data(user_row).unwrap();
    writer.end_table().unwrap();
    writer.begin_table("chunks", &["id", "user_id", "sha256", "data"].map(String::from)).unwrap();
    writer.end_table().unwrap();
    writer
        .begin_table(
            "backups",
            &[
                "id".into(),
                "user_id".into(),
                "created_at".into(),
                "size_bytes".into(),
                "sha256".into(),
                "chunk_ids".into(),
            ],
        )
        .unwrap();
    // Its user does not exist: the foreign key stops the load here.
    writer.table_data(b"00000000-0000-4000-8000-0000000000b1\t00000000-0000-4000-8000-00000000dead\t2026-01-01 00:00:00+00\t2\t\\\\x0000000000000000000000000000000000000000000000000000000000000000\t{}\n").unwrap();
    writer.end_table().unwrap();
    let keys = [
        "user_id",
        "key",
        "request_sha256",
        "backup_id",
        "backup_created_at",
        "size_bytes",
        "sha256",
        "deduplicated",
        "created_at",
    ];
    writer.begin_table("idempotency_keys", &keys.map(String::from)).unwrap();
    writer.end_table().unwrap();
    writer
        .begin_table("database_backups", &["id", "finished_at", "location", "bytes", "seconds"].map(String::from))
        .unwrap();
    writer.end_table().unwrap();
    writer.begin_table("database_sizes", &["day", "taken_at", "bytes"].map(String::from)).unwrap();
    writer.end_table().unwrap();
    let (encoder, _) = writer.finish().unwrap();
    encoder.finish().unwrap();
    path
}

#[tokio::test]
async fn a_restore_that_fails_half_way_leaves_the_target_empty() {
    let dir = scratch_dir("dumps");
    let user = b"00000000-0000-4000-8000-000000000001\t\\\\x0000000000000000000000000000000000000000000000000000000000000000\t2026-01-01 00:00:00+00\n";
    let not_a_uuid = b"not-a-uuid\t\\\\x00\t2026-01-01 00:00:00+00\n";
    for (user_row, why) in [(&user[..], "violates foreign key"), (&not_a_uuid[..], "does not read as Uuid")] {
        let path = dump_failing_half_way(&dir, user_row);
        let verified = binary::run(&["verify-backup", path.to_str().unwrap()], &[]).await;
        assert_eq!(verified.code, 0, "the file itself is intact: {}", verified.stderr);
        let target = TestDb::empty().await;
        let failed = restore(&target.url, path.to_str().unwrap(), &[]).await;
        assert_eq!(failed.code, 1);
        assert!(failed.stderr.contains("rolled back") && failed.stderr.contains(why), "{}", failed.stderr);
        let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&target.pool().await)
            .await
            .unwrap();
        assert_eq!(tables, 0, "nothing half-done");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn corruption_truncation_and_foreign_files_fail_verification() {
    let (app, _) = populated_app().await;
    let dir = scratch_dir("dumps");
    let path = backup(&app_url(&app), &dir, &[]).await["path"].as_str().unwrap().to_owned();
    let good = binary::run(&["verify-backup", &path, "--json"], &[]).await;
    assert_eq!(good.code, 0, "{}", good.stderr);
    let report: Value = serde_json::from_str(&good.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["tables"].as_array().unwrap().len(), dailyreps_backup_server::db::dump::TABLES.len());
    // What the text says, for scripts: what was checked and the manifest's header.
    assert_eq!(report["checked"], "dump");
    let latest = dailyreps_backup_server::db::migrations::latest_known_version();
    assert_eq!(report["header"]["schema_version"], latest);
    assert_eq!(report["header"]["server_version"], env!("CARGO_PKG_VERSION"));
    assert!(report["header"]["created_at"].as_str().is_some_and(|at| at.ends_with('Z')), "{report}");

    let bytes = std::fs::read(&path).unwrap();
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let truncated = bytes[..bytes.len() * 2 / 3].to_vec();
    for (label, content) in [("flipped", flipped), ("truncated", truncated), ("foreign", b"PGDMP not ours".to_vec())] {
        let damaged = dir.join(label);
        std::fs::write(&damaged, content).unwrap();
        let outcome = binary::run(&["verify-backup", damaged.to_str().unwrap(), "--json"], &[]).await;
        assert_eq!(outcome.code, 1, "{label}");
        let report: Value = serde_json::from_str(&outcome.stdout).unwrap();
        assert_eq!(report["ok"], false, "{label}");
        assert_eq!(report["error"]["code"], "failed", "{label}");
        let error = report["error"]["message"].as_str().unwrap();
        assert!(
            error.contains("corrupt") || error.contains("truncated") || error.contains("not a dailyreps"),
            "{label}: {error}"
        );
        let target = TestDb::empty().await;
        let refused = restore(&target.url, damaged.to_str().unwrap(), &[]).await;
        assert_eq!(refused.code, 1, "{label}");
        assert!(refused.stderr.contains("did not verify"), "{label}: {}", refused.stderr);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_dump_restores_with_psql_and_zstd_alone() {
    let (app, _) = populated_app().await;
    let dir = scratch_dir("dumps");
    let path = backup(&app_url(&app), &dir, &[]).await["path"].as_str().unwrap().to_owned();
    let target = TestDb::empty().await;
    // The documented one-liner, with FILE and DATABASE_URL filled in.
    let one_liner = dailyreps_backup_server::dump::RESTORE_ONE_LINER.replace("FILE", &path);
    let status = tokio::process::Command::new("bash")
        .args(["-c", &one_liner])
        .env("DATABASE_URL", &target.url)
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "{one_liner}");
    assert_eq!(fingerprint(&target.pool().await).await, fingerprint(&app.pool).await);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A dump cut short (a download that stopped, a truncated object) fed to the documented
/// one-liner: the pipeline fails and no partial database is committed, wherever the cut falls.
/// (A cut inside zstd's closing checksum, after every byte of the script, loads the whole
/// database: psql has run all of it before zstd finds the checksum missing.)
#[tokio::test]
async fn a_truncated_dump_fed_to_psql_commits_nothing() {
    let (app, _) = populated_app().await;
    crate::offsite::add_incompressible_backups(&app.pool, 4).await;
    let dir = scratch_dir("dumps");
    let path = backup(&app_url(&app), &dir, &[]).await["path"].as_str().unwrap().to_owned();
    let whole = std::fs::read(&path).unwrap();
    for kept in [whole.len() / 3, whole.len() * 2 / 3, whole.len() - 40, whole.len() - 1] {
        let cut = dir.join(format!("cut-{kept}.sql.zst"));
        std::fs::write(&cut, &whole[..kept]).unwrap();
        let target = TestDb::empty().await;
        let one_liner = dailyreps_backup_server::dump::RESTORE_ONE_LINER.replace("FILE", cut.to_str().unwrap());
        let status = tokio::process::Command::new("bash")
            .args(["-c", &one_liner])
            .env("DATABASE_URL", &target.url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .unwrap();
        assert!(!status.success(), "{kept} of {} bytes: the pipeline says it failed", whole.len());
        let pool = target.pool().await;
        let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&pool)
            .await
            .unwrap();
        if kept + 4 < whole.len() {
            assert_eq!(tables, 0, "{kept} of {} bytes: nothing was committed", whole.len());
        } else if tables > 0 {
            assert_eq!(fingerprint(&pool).await, fingerprint(&app.pool).await, "{kept} of {} bytes", whole.len());
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_dump_covers_every_table_of_the_schema() {
    let db = TestDb::migrated().await;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            .fetch_all(&db.pool().await)
            .await
            .unwrap();
    use dailyreps_backup_server::db::dump::{NOT_DUMPED, TABLES};
    let mut known: Vec<String> = TABLES.iter().chain(NOT_DUMPED).map(|t| (*t).to_owned()).collect();
    known.sort();
    assert_eq!(tables, known, "a new table must be added to db::dump::TABLES (or NOT_DUMPED, saying why)");
}

#[tokio::test]
async fn a_dump_of_format_1_restores_and_the_server_works_on_it() {
    // Written by the format-1 `backup-db` (SHA-256 checksums) from a small database.
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format-v1.sql.zst");
    let target = TestDb::empty().await;
    let restored = restore(&target.url, fixture, &["--json"]).await;
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    let pool = target.pool().await;
    let document = stored_document(&pool, "aaaaaaaa-0000-4000-8000-000000000002".parse().unwrap()).await;
    assert_eq!(document, r#"{"note":"tab\there, back\\slash, ünï ✓"}"#, "byte for byte");
    let counts: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM backups), (SELECT count(*) FROM idempotency_keys)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(counts, (2, 3, 1));

    let copy = TestApp::spawn_on(&target.url).await;
    let newcomer = copy.register().await;
    copy.upload_ok(&newcomer, br#"{"after": "restore"}"#).await;
}

/// The fixture's two documents: a workout log of 200 days and the same log 30 days later.
fn format_2_documents() -> [String; 2] {
    let entry = |day: usize, note: &str, sets: &str| format!(r#"{{"day":{day},"note":"{note}","sets":[{sets}]}}"#);
    let old = "tab\\there, back\\\\slash, ünï ✓ 💪";
    let first: Vec<String> =
        (0..200).map(|d| entry(d, old, &format!(r#"{{"reps":{},"kg":{}}}"#, 3 + d % 7, 40 + d % 50))).collect();
    let second: Vec<String> = first.iter().cloned().chain((200..230).map(|d| entry(d, "new ✓", ""))).collect();
    [first, second].map(|entries| format!(r#"{{"workouts":[{}]}}"#, entries.join(",")))
}

#[tokio::test]
async fn a_dump_of_format_2_with_whole_documents_restores_into_chunks() {
    // Written by the format-2 `backup-db` at schema 5, when backups held whole documents.
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format-v2.sql.zst");
    let verified = binary::run(&["verify-backup", fixture, "--json"], &[]).await;
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    let target = TestDb::empty().await;
    let restored = restore(&target.url, fixture, &["--json"]).await;
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    let pool = target.pool().await;
    let ids = ["bbbbbbbb-0000-4000-8000-000000000002", "bbbbbbbb-0000-4000-8000-000000000003"];
    for (id, expected) in ids.iter().zip(format_2_documents()) {
        assert!(stored_document(&pool, id.parse().unwrap()).await == expected, "backup {id} byte for byte");
    }
    let (chunks, named): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM chunks), (SELECT sum(cardinality(chunk_ids)) FROM backups)::bigint",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(chunks < named, "the pieces both documents begin with are kept once: {chunks} of {named}");

    // The server reads the converted backups, and a replayed key still answers (the fixture's
    // key is days old: as if the dump were restored within its lifetime, else serve sweeps it).
    let restored = target.pool().await;
    sqlx::query("UPDATE idempotency_keys SET created_at = now()").execute(&restored).await.unwrap();
    let copy = TestApp::spawn_on(&target.url).await;
    let user = crate::common::TestUser {
        id: "bbbbbbbb-0000-4000-8000-000000000001".parse().unwrap(),
        token: "drb_fixtureAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
    };
    let latest = copy.authed(&user, reqwest::Method::GET, "/api/backups/latest", b"").send().await.unwrap();
    assert_eq!(latest.status(), reqwest::StatusCode::OK);
    assert!(latest.text().await.unwrap() == format_2_documents()[1]);
    let replayed = copy.upload_keyed(&user, format_2_documents()[1].as_bytes(), "fixture-key").send().await.unwrap();
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    copy.upload_ok(&user, br#"{"after": "restore"}"#).await;
}

/// Every type restore-db converts to COPY's binary format, at its edges, printed by
/// PostgreSQL itself in two time zones and both bytea formats, loads back equal.
#[tokio::test]
async fn rows_converted_to_binary_copy_equal_the_rows_dumped_as_text() {
    use dailyreps_backup_server::db::{copy_binary, dump as dump_db};
    use futures_util::TryStreamExt;

    let db = TestDb::empty().await;
    let pool = db.pool().await;
    sqlx::raw_sql(
        r#"CREATE TABLE source (t text, v varchar(20), u uuid, b bytea, f boolean, s smallint, i integer, n bigint, ts timestamptz);
        CREATE TABLE target (LIKE source);
        INSERT INTO source VALUES
          (E'tab\there', 'x', gen_random_uuid(), '\x00ff5c0a0d09', true, -32768, -2147483648, 9223372036854775807,
           '2026-11-29 16:08:46.870514+00'),
          (E'line\nbreak\r \\ back\\slash \x01\x7f ünï ✓ "q" \\N', NULL, gen_random_uuid(), '', false, 32767, 2147483647,
           -9223372036854775808, '0044-03-15 12:00:00+00 BC'),
          ('', '', '00000000-0000-0000-0000-000000000000', NULL, NULL, 0, 0, 0, 'infinity'),
          (NULL, NULL, NULL, '\x5c', NULL, NULL, NULL, NULL, '-infinity'),
          ('\N', 'NULL', gen_random_uuid(), 'a\\b', true, 1, 1, 1, '4713-01-01 00:00:00+00 BC'),
          ('b', 'b', gen_random_uuid(), '\x', false, 2, 2, 2, '294276-12-31 23:59:59.999999+00'),
          ('c', 'c', gen_random_uuid(), '\xdeadbeef', true, 3, 3, 3, '1900-01-01 00:00:00.000001+00'),
          ('d', 'd', gen_random_uuid(), '\x00', false, 4, 4, 4, '2026-03-29 01:30:00.5+05:45');"#,
    )
    .execute(&pool)
    .await
    .unwrap();
    let rows = "SELECT array_agg(r::text ORDER BY r::text) FROM {} r";
    let expected: Vec<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(rows.replace("{}", "source"))).fetch_one(&pool).await.unwrap();

    for (time_zone, bytea_output) in [("UTC", "hex"), ("Asia/Kathmandu", "escape"), ("America/St_Johns", "hex")] {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET TimeZone = '{time_zone}'; SET bytea_output = '{bytea_output}'; TRUNCATE target"
        )))
        .execute(&mut *conn)
        .await
        .unwrap();
        let text: Vec<u8> = conn
            .copy_out_raw("COPY public.source TO STDOUT")
            .await
            .unwrap()
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await
            .unwrap();
        let plan = dump_db::load_plan(&mut conn, "target").await.unwrap().expect("the table exists");
        assert_eq!(plan.copy, "COPY public.target (t, v, u, b, f, s, i, n, ts) FROM stdin;");
        let load = plan.binary.expect("every column converts");
        let mut binary = copy_binary::HEADER.to_vec();
        copy_binary::convert_rows(&load.columns, &text, &mut binary).unwrap();
        binary.extend_from_slice(copy_binary::TRAILER);
        let mut copy_in = dump_db::copy_in(&mut conn, &load.statement).await.unwrap();
        copy_in.send(binary.as_slice()).await.unwrap();
        assert_eq!(copy_in.finish().await.unwrap(), 8);
        // Compared as printed with the session's first settings, as `expected` was.
        sqlx::raw_sql("RESET TimeZone; RESET bytea_output").execute(&mut *conn).await.unwrap();
        let loaded: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(rows.replace("{}", "target"))).fetch_one(&mut *conn).await.unwrap();
        assert_eq!(loaded, expected, "time zone {time_zone}, bytea_output {bytea_output}");
    }

    // A table with a type that is not converted loads as text.
    sqlx::raw_sql("CREATE TABLE other (a numeric)").execute(&pool).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let plan = dump_db::load_plan(&mut conn, "other").await.unwrap().expect("the table exists");
    assert!(plan.binary.is_none());
    assert!(dump_db::load_plan(&mut conn, "missing").await.unwrap().is_none(), "no plan for a table the schema lacks");
}
