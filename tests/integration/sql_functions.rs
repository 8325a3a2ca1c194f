//! The SQL functions kept as code (src/db/sql/): installed by `migrate` exactly as the files say,
//! pinned once landed, and required by `/readyz`.

use std::path::Path;

use dailyreps_backup_server::db::functions::{self, FUNCTIONS};
use dailyreps_backup_server::db::migrations;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{TestApp, TestDb};

/// The body PostgreSQL keeps of a function (`prosrc`): the file's text between its `$$`s.
fn body_of(sql: &str) -> &str {
    let start = sql.find("$$").expect("a dollar-quoted body") + 2;
    let end = sql.rfind("$$").expect("a dollar-quoted body");
    &sql[start..end]
}

#[tokio::test]
async fn migrate_installs_each_function_exactly_as_its_file_says() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    for function in FUNCTIONS {
        let (source, comment): (String, Option<String>) = sqlx::query_as(
            "SELECT prosrc, obj_description(oid, 'pg_proc') FROM pg_proc \
             WHERE proname = $1 AND pronamespace = current_schema()::regnamespace",
        )
        .bind(function.name)
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("{} is not installed: {e}", function.name));
        assert_eq!(source, body_of(function.sql), "{} as installed is not its file", function.name);
        assert_eq!(comment, Some(function.stamp()));
    }
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(functions::outdated(&mut conn).await.unwrap(), Vec::<&str>::new());
}

/// A function file that has landed never changes: the release before calls it by name while a
/// deploy replaces machines, so a change is a new file under a new name. `src/db/sql/LANDED.sha256`
/// pins each one, and each file defines the function it is named for.
#[test]
fn landed_function_files_never_change_and_each_defines_its_name() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/db/sql");
    crate::common::check_landed(&dir, "copy it to a new name instead");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .collect();
    files.sort();
    let mut installed: Vec<String> = FUNCTIONS.iter().map(|f| format!("{}.sql", f.name)).collect();
    installed.sort();
    assert_eq!(installed, files, "every file is installed, and every installed function has its file");
    for function in FUNCTIONS {
        let defines = format!("CREATE OR REPLACE FUNCTION {}(", function.name);
        assert_eq!(function.sql.matches("CREATE ").count(), 1, "{}.sql creates one thing", function.name);
        assert!(function.sql.contains(&defines), "{}.sql must define {}", function.name, function.name);
    }
}

#[tokio::test]
async fn readyz_refuses_a_database_without_this_binarys_functions_until_migrate_runs() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    sqlx::query("DROP FUNCTION store_backup_v4").execute(&app.pool).await.unwrap();
    // Hand-edited at 2 a.m.: the same name with another text.
    sqlx::query("COMMENT ON FUNCTION free_unreferenced_chunks IS 'fixed by hand'").execute(&app.pool).await.unwrap();
    let response = crate::readiness::wait_for_readyz(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("free_unreferenced_chunks, store_backup_v4"), "{message}");
    assert!(message.contains("run `migrate`"), "{message}");

    migrations::apply(&app.pool).await.unwrap();
    crate::readiness::wait_for_readyz(&app, StatusCode::OK).await;
    let user = app.register().await;
    app.upload_ok(&user, br#"{"after": "migrate"}"#).await;
}
