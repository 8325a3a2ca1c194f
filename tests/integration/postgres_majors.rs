//! Other PostgreSQL majors, as real server builds (`.ci/postgres-build.sh`): production runs
//! 16, Debian's tools are 15, and the next upgrade goes to 18. A dump taken from 16 restores
//! into 15 and into 18 (where `pg_dump` 15 refuses a 16 server outright), and the upgrade's
//! data path works end to end: dump 16, restore into 18, migrate, serve, smoke-test.

use reqwest::Method;

use super::backup_db::{backup, fingerprint, restore};
use crate::common::{TEST_SECRET, TestApp, TestDb, binary, database_in, scratch_dir, start_cluster_of_version};

/// The builds used (the newest of each major in the registry when this was written).
const POSTGRES_16: &str = "16.14.0-beta.17";
const POSTGRES_18: &str = "18.4.0-beta.17";

#[tokio::test]
async fn a_dump_of_16_restores_into_15_and_18_and_the_upgraded_copy_serves_the_app() {
    let (sixteen, eighteen) =
        tokio::join!(start_cluster_of_version(POSTGRES_16), start_cluster_of_version(POSTGRES_18));
    let source_url = database_in(&sixteen).await;
    let source = TestApp::spawn_on(&source_url).await;
    dailyreps_backup_server::db::migrations::apply(&source.pool).await.unwrap();
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&source.pool).await.unwrap();
    assert!(version.starts_with("16."), "{version}");
    let mut users = Vec::new();
    for n in 0..3 {
        let user = source.register().await;
        source.upload_ok(&user, format!(r#"{{"major": 16, "n": {n}, "text": "tab\there ✓"}}"#).as_bytes()).await;
        users.push(user);
    }

    let dir = scratch_dir("dumps");
    let summary = backup(&source_url, &dir, &[]).await;
    let path = summary["path"].as_str().unwrap().to_owned();
    let verified = binary::run(&["verify-backup", &path, "--json"], &[]).await;
    assert_eq!(verified.code, 0, "{}", verified.stderr);

    let fifteen = TestDb::empty().await;
    let into_15 = restore(&fifteen.url, &path, &[]).await;
    assert_eq!(into_15.code, 0, "{}", into_15.stderr);
    assert_eq!(fingerprint(&fifteen.pool().await).await, fingerprint(&source.pool).await);

    let target_url = database_in(&eighteen).await;
    let into_18 = restore(&target_url, &path, &[]).await;
    assert_eq!(into_18.code, 0, "{}", into_18.stderr);
    let upgraded = TestApp::spawn_on(&target_url).await;
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&upgraded.pool).await.unwrap();
    assert!(version.starts_with("18."), "{version}");
    assert_eq!(fingerprint(&upgraded.pool).await, fingerprint(&source.pool).await);
    let migrated = binary::run(&["migrate"], &[("DATABASE_URL", &target_url)]).await;
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);
    let restored = upgraded.authed(&users[2], Method::GET, "/api/backups/latest", b"").send().await.unwrap();
    assert_eq!(restored.text().await.unwrap(), r#"{"major": 16, "n": 2, "text": "tab\there ✓"}"#);
    let smoke = binary::run(
        &["smoke-test", "--url", &upgraded.address, "--wait", "10s", "--json"],
        &[("APP_SIGNING_SECRET", TEST_SECRET)],
    )
    .await;
    assert_eq!(smoke.code, 0, "{}", smoke.stdout);
    std::fs::remove_dir_all(dir).unwrap();
}
