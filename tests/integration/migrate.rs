use dailyreps_backup_server::db::migrations::MIGRATOR;
use serde_json::Value;

use crate::common::{TestDb, binary};

fn known_versions() -> Vec<i64> {
    MIGRATOR.iter().map(|m| m.version).collect()
}

async fn status_json(url: &str) -> Value {
    let outcome = binary::run(&["migrate", "status", "--json"], &[("DATABASE_URL", url)]).await;
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    serde_json::from_str(&outcome.stdout).unwrap()
}

fn versions(list: &Value) -> Vec<i64> {
    list.as_array().unwrap().iter().map(|m| m["version"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn status_lists_pending_then_applied_and_migrate_is_safe_to_repeat() {
    let db = TestDb::empty().await;
    let before = status_json(&db.url).await;
    assert_eq!(versions(&before["applied"]), Vec::<i64>::new());
    assert_eq!(versions(&before["pending"]), known_versions());

    let check = binary::run(&["migrate", "status", "--check", "--json"], &[("DATABASE_URL", &db.url)]).await;
    assert_eq!(check.code, 3, "pending migrations fail the check: {}", check.stderr);
    assert!(
        check.stderr.contains(&format!("warning: {} migrations pending (", known_versions().len())),
        "{}",
        check.stderr
    );

    let latest = *known_versions().last().unwrap();
    let first = binary::run(&["migrate"], &[("DATABASE_URL", &db.url)]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let said = format!("applied {} migrations (", known_versions().len());
    assert!(first.stderr.contains(&said), "{}", first.stderr);
    assert!(first.stderr.contains(&format!("); schema version {latest}")), "{}", first.stderr);
    let again = binary::run(&["migrate"], &[("DATABASE_URL", &db.url)]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains(&format!("already up to date: schema version {latest}")), "{}", again.stderr);

    let check = binary::run(&["migrate", "status", "--check"], &[("DATABASE_URL", &db.url)]).await;
    assert_eq!(check.code, 0, "{}", check.stderr);
    let after = status_json(&db.url).await;
    assert_eq!(versions(&after["applied"]), known_versions());
    assert_eq!(versions(&after["pending"]), Vec::<i64>::new());
    let applied_at = after["applied"][0]["applied_at"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(applied_at, &time::format_description::well_known::Rfc3339).is_ok(),
        "{applied_at}"
    );
    assert!(applied_at.ends_with('Z'), "UTC: {applied_at}");
}

#[tokio::test]
async fn two_concurrent_migrates_apply_each_migration_once() {
    let db = TestDb::empty().await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let (first, second) = tokio::join!(binary::run(&["migrate"], &env), binary::run(&["migrate"], &env));
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(second.code, 0, "{}", second.stderr);

    let pool = db.pool().await;
    let rows: Vec<(i64, bool)> = sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows, known_versions().into_iter().map(|v| (v, true)).collect::<Vec<_>>());
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE tablename IN ('users', 'backups', 'idempotency_keys')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 3);
}

#[tokio::test]
async fn status_prints_a_table_by_default() {
    let db = TestDb::migrated().await;
    let [force, no_colour] = binary::AS_ON_A_TERMINAL;
    let outcome = binary::run(&["migrate", "status"], &[("DATABASE_URL", &db.url), force, no_colour]).await;
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(outcome.stdout.contains("Version"), "{}", outcome.stdout);
    assert!(outcome.stdout.contains("applied"), "{}", outcome.stdout);
    assert!(outcome.stdout.contains(&known_versions()[0].to_string()), "{}", outcome.stdout);

    // Piped, for a script: a tab-separated line a migration, no header, the exact time.
    let piped = binary::run(&["migrate", "status"], &[("DATABASE_URL", &db.url)]).await;
    let lines: Vec<Vec<&str>> = piped.stdout.lines().map(|line| line.split('\t').collect()).collect();
    assert_eq!(lines.len(), known_versions().len(), "{}", piped.stdout);
    assert_eq!(lines[0][..3], [known_versions()[0].to_string().as_str(), "initial schema", "applied"]);
    let applied_at = time::OffsetDateTime::parse(lines[0][3], &time::format_description::well_known::Rfc3339);
    assert!(applied_at.is_ok(), "RFC 3339: {:?}", lines[0][3]);
}

#[tokio::test]
async fn chunks_are_compressed_with_lz4_where_the_server_has_it() {
    let app = crate::common::TestApp::spawn().await;
    let user = app.register().await;
    // Repetitive and over the TOAST threshold, so PostgreSQL compresses it.
    let document = format!(r#"{{"sets": "{}"}}"#, "squat 5x5 ".repeat(2_000));
    app.upload_ok(&user, document.as_bytes()).await;

    let mut tx = app.pool.begin().await.unwrap();
    let has_lz4 = sqlx::query("CREATE TEMP TABLE probe (t text COMPRESSION lz4)").execute(&mut *tx).await.is_ok();
    tx.rollback().await.unwrap();
    let (column, stored): (String, Option<String>) = sqlx::query_as(
        "SELECT a.attcompression::text, (SELECT pg_column_compression(data) FROM chunks ORDER BY length(data) DESC LIMIT 1) \
         FROM pg_attribute a WHERE a.attrelid = 'chunks'::regclass AND a.attname = 'data'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    if has_lz4 {
        assert_eq!((column.as_str(), stored.as_deref()), ("l", Some("lz4")));
    } else {
        assert_eq!((column.as_str(), stored.as_deref()), ("", Some("pglz")));
    }
}

/// A migration that has landed never changes: sqlx refuses to run on a database whose applied
/// migration differs from the binary's, and the release before serves on the schema while the
/// next deploys. `migrations/LANDED.sha256` (sha256sum's format) pins each one; a new
/// migration is added to it in the commit that adds it.
#[test]
fn landed_migrations_never_change_and_every_migration_is_pinned() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    crate::common::check_landed(&dir, "add a new migration instead");
}
