//! `restore-db` with files it did not write: SQL injected into a verifying dump, COPY lines
//! that do not match the schema, hostile sequence names, a schema from the future.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use dailyreps_backup_server::dump::reader::Event;
use dailyreps_backup_server::dump::writer::DumpWriter;
use dailyreps_backup_server::dump::{self, Header};
use sqlx::PgPool;

use super::backup_db::{app_url, backup, fingerprint, populated_app, restore};
use crate::common::{TestApp, TestDb, binary, scratch_dir};

/// Rewrites the dump at `from` into `to` through the real writer, so every checksum is right:
/// `section` may change a section's SQL, `columns` a table's column list.
fn rewrite(
    from: &Path,
    to: &Path,
    header: impl Fn(Header) -> Header,
    section: impl Fn(&str, String) -> String,
    columns: impl Fn(&str, Vec<String>) -> Vec<String>,
) {
    let mut reader = dump::open(std::fs::File::open(from).unwrap()).unwrap();
    let file = std::fs::File::create(to).unwrap();
    let mut writer = DumpWriter::new(dump::compress(file).unwrap(), &header(reader.header().clone())).unwrap();
    while let Some(event) = reader.next_event().unwrap() {
        match event {
            Event::Section { kind, sql } => writer.section(&kind, &section(&kind, sql)).unwrap(),
            Event::Table { name, copy } => {
                let listed = copy.split_once('(').unwrap().1.rsplit_once(')').unwrap().0;
                let listed = listed.split(", ").map(str::to_owned).collect();
                writer.begin_table(&name, &columns(&name, listed)).unwrap();
            }
            Event::Data(chunk) => drop(writer.table_data(&chunk).unwrap()),
            Event::TableEnd => drop(writer.end_table().unwrap()),
        }
    }
    let (encoder, _) = writer.finish().unwrap();
    encoder.finish().unwrap();
}

async fn public_tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn dump_of_populated_app() -> (TestApp, PathBuf, PathBuf) {
    let (app, _) = populated_app().await;
    let dir = scratch_dir("dumps");
    let path = backup(&app_url(&app), &dir, &[]).await["path"].as_str().unwrap().into();
    (app, dir, path)
}

#[tokio::test]
async fn sql_injected_into_a_verifying_dump_is_never_run() {
    let (app, dir, good) = dump_of_populated_app().await;
    let marker = dir.join("program-ran");
    let hostile = dir.join("hostile.sql.zst");
    let injected = format!(
        "COMMIT; CREATE TABLE injected (i int); COPY (SELECT 1) TO PROGRAM 'touch {}'; BEGIN;",
        marker.display()
    );
    let into = |section: &'static str| {
        let injected = injected.clone();
        move |kind: &str, sql: String| if kind == section { format!("{sql}\n{injected}") } else { sql }
    };
    rewrite(&good, &hostile, |h| h, into("schema"), |_, columns| columns);
    let verified = binary::run(&["verify-backup", hostile.to_str().unwrap()], &[]).await;
    assert_eq!(verified.code, 0, "re-checksummed, it verifies: {}", verified.stderr);

    let target = TestDb::empty().await;
    let restored = restore(&target.url, hostile.to_str().unwrap(), &[]).await;
    assert_eq!(restored.code, 0, "the data is good, so it restores: {}", restored.stderr);
    let pool = target.pool().await;
    assert_eq!(fingerprint(&pool).await, fingerprint(&app.pool).await);
    assert!(!public_tables(&pool).await.contains(&"injected".to_owned()), "the schema section was not run");
    assert!(!marker.exists(), "no program ran on the database server");

    // In the sequences section, which restore-db reads, such lines are refused.
    let in_sequences = dir.join("sequences.sql.zst");
    rewrite(&good, &in_sequences, |h| h, into("sequences"), |_, columns| columns);
    let target = TestDb::empty().await;
    let refused = restore(&target.url, in_sequences.to_str().unwrap(), &[]).await;
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("not a setval call"), "{}", refused.stderr);
    assert_eq!(public_tables(&target.pool().await).await, Vec::<String>::new());
    assert!(!marker.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_copy_line_that_is_not_the_schemas_is_refused_and_nothing_is_left() {
    let (_app, dir, good) = dump_of_populated_app().await;
    let hostile = dir.join("columns.sql.zst");
    let extra = |name: &str, mut columns: Vec<String>| {
        if name == "users" {
            columns.reverse();
        }
        columns
    };
    rewrite(&good, &hostile, |h| h, |_, sql| sql, extra);
    let target = TestDb::empty().await;
    let refused = restore(&target.url, hostile.to_str().unwrap(), &[]).await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("columns of users are not the schema's") && refused.stderr.contains("rolled back"),
        "{}",
        refused.stderr
    );
    assert_eq!(public_tables(&target.pool().await).await, Vec::<String>::new(), "rolled back: the target is as it was");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_dump_from_a_newer_schema_is_refused_before_connecting() {
    let (_app, dir, good) = dump_of_populated_app().await;
    let future = dir.join("future.sql.zst");
    let newer = dailyreps_backup_server::db::migrations::latest_known_version() + 1;
    rewrite(&good, &future, |h| Header { schema_version: newer, ..h }, |_, sql| sql, |_, c| c);
    let refused =
        binary::run(&["restore-db", future.to_str().unwrap()], &[("DATABASE_URL", "postgres://x@127.0.0.1:1/x")]).await;
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains(&format!("schema version {newer}, newer than this tool's")), "{}", refused.stderr);
    assert!(!refused.stderr.contains("could not connect"), "refused before connecting: {}", refused.stderr);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn hostile_sequence_names_are_quoted_and_never_run() {
    let (app, _) = populated_app().await;
    let name = "'||'',1,false)WHERE false;CREATE TABLE injected();--";
    let create = format!("CREATE SEQUENCE \"{name}\" OWNED BY backups.size_bytes");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create)).execute(&app.pool).await.unwrap();
    sqlx::query("SELECT nextval(format('%I', $1::text))").bind(name).execute(&app.pool).await.unwrap();
    let dir = scratch_dir("dumps");
    let path = backup(&app_url(&app), &dir, &[]).await["path"].as_str().unwrap().to_owned();
    assert_eq!(binary::run(&["verify-backup", &path], &[]).await.code, 0);

    // With psql, the line is a setval of a sequence the schema lacks: it fails, and runs nothing else.
    let by_psql = TestDb::empty().await;
    let one_liner = dump::RESTORE_ONE_LINER.replace("FILE", &path);
    let status = tokio::process::Command::new("bash")
        .args(["-c", &one_liner])
        .env("DATABASE_URL", &by_psql.url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(!status.success());
    assert!(!public_tables(&by_psql.pool().await).await.contains(&"injected".to_owned()));

    let target = TestDb::empty().await;
    let refused = restore(&target.url, &path, &[]).await;
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("sets sequence") && refused.stderr.contains("does not have"), "{}", refused.stderr);
    assert_eq!(public_tables(&target.pool().await).await, Vec::<String>::new());
    std::fs::remove_dir_all(dir).unwrap();
}
