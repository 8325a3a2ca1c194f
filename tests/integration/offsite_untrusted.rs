//! A bucket's objects are untrusted: one that does not read (damaged, planted with a put-only
//! key, of a newer release) is skipped with a warning and never hides the good backups beside
//! it, and a backup named by its key depends on its own manifest alone.

use serde_json::Value;

use super::backup_db::{app_url, populated_app};
use super::offsite::{plant_backup, run_with};
use crate::common::s3::TestBucket;

#[tokio::test]
async fn manifests_that_do_not_read_are_skipped_and_block_nothing() {
    let (app, _) = populated_app().await;
    let bucket = TestBucket::new().await;
    let url = bucket.url("db");
    let db = app_url(&app);
    let taken =
        run_with(&["backup-db", "--to", &url, "--no-encryption", "--json"], &bucket, &[("DATABASE_URL", &db)]).await;
    assert_eq!(taken.code, 0, "{}", taken.stderr);
    let taken: Value = serde_json::from_str(&taken.stdout).unwrap();
    let good = taken["path"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();

    // Three manifests that do not read, each newer than the good backup, and a garbage record
    // of an upload.
    bucket.put("db/dailyreps-29990101T000000.000Z.manifest.json", b"{not a manifest".to_vec()).await;
    bucket.put("db/dailyreps-29990102T000000.000Z.manifest.json", vec![b' '; 70_000]).await;
    let newer = plant_backup(&bucket, "db", -1).await;
    let newer_manifest = format!("db/{}.manifest.json", newer.trim_end_matches(".sql.zst"));
    let mut manifest: Value = serde_json::from_slice(&bucket.object(&newer_manifest).await).unwrap();
    manifest["format_version"] = 2.into();
    bucket.put(&newer_manifest, manifest.to_string().into_bytes()).await;
    bucket.put("db/dailyreps-29990103T000000.000Z.upload.json", b"[]".to_vec()).await;

    let listed = run_with(&["list-backups", &url, "--json"], &bucket, &[]).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    let keys: Vec<&str> = listed["backups"].as_array().unwrap().iter().map(|b| b["key"].as_str().unwrap()).collect();
    assert_eq!(keys, [format!("db/{good}")], "only the good backup is listed");
    let warned = run_with(&["list-backups", &url], &bucket, &[]).await;
    assert!(warned.stderr.contains("is not a manifest of this tool"), "{}", warned.stderr);
    assert!(warned.stderr.contains("newer than this tool's"), "{}", warned.stderr);
    assert!(warned.stderr.contains("larger than any manifest"), "{}", warned.stderr);

    for source in [format!("{url}/{good}"), format!("{url}/latest")] {
        let verified = run_with(&["verify-backup", &source], &bucket, &[]).await;
        assert_eq!(verified.code, 0, "{source}: {}", verified.stderr);
    }
    let status = run_with(&["backup-status", &url, "--max-age", "26h"], &bucket, &[]).await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    let again = run_with(&["backup-db", "--to", &url, "--no-encryption"], &bucket, &[("DATABASE_URL", &db)]).await;
    assert_eq!(again.code, 0, "a new backup is taken and housekept: {}", again.stderr);
    let keys = bucket.keys().await;
    assert!(keys.contains(&format!("db/{newer}")), "data beside an unreadable manifest is not swept: {keys:?}");
}

/// A machine whose clock is a year ahead takes a backup, and a copy of a backup is renamed a
/// year ahead: the first is dated by the database's clock, and the second is reported, kept,
/// and never taken as `latest`.
#[tokio::test]
async fn a_backup_is_dated_by_the_database_and_one_dated_ahead_is_never_latest() {
    let (app, _) = populated_app().await;
    let bucket = TestBucket::new().await;
    let url = bucket.url("db");
    let db = app_url(&app);
    let mut env: Vec<(&str, String)> = bucket.env();
    env.push(("DATABASE_URL", db.clone()));
    env.push(("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()));
    let binary = env!("CARGO_BIN_EXE_dailyreps-backup-server");
    let ahead = tokio::process::Command::new("faketime")
        .args(["-f", "+365d", binary, "backup-db", "--to", &url, "--no-encryption", "--json"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .expect("faketime (apt-get install faketime)");
    assert!(ahead.status.success(), "{}", String::from_utf8_lossy(&ahead.stderr));
    let real_key = {
        let listed = run_with(&["list-backups", &url, "--json"], &bucket, &[]).await;
        let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
        let created = listed["backups"][0]["created_at"].as_str().unwrap().to_owned();
        let created = time::OffsetDateTime::parse(&created, &time::format_description::well_known::Rfc3339).unwrap();
        let off = (created - time::OffsetDateTime::now_utc()).abs();
        assert!(off < time::Duration::minutes(5), "dated by the database's clock, not the machine's: {listed}");
        listed["backups"][0]["key"].as_str().unwrap().to_owned()
    };

    let renamed = plant_backup(&bucket, "db", -365).await;
    let status = run_with(&["backup-status", &url, "--max-age", "26h", "--json"], &bucket, &[]).await;
    assert_ne!(status.code, 0, "{}", status.stdout);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["newest"]["key"], real_key.as_str(), "{status}");
    let problems = status["problems"].to_string();
    assert!(problems.contains(&renamed) && problems.contains("in the future"), "{status}");

    let listed = run_with(&["list-backups", &url, "--json"], &bucket, &[]).await;
    assert!(listed.stderr.contains("dated in the future"), "{}", listed.stderr);
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed["backups"][0]["key"], format!("db/{renamed}"));
    assert_eq!(listed["backups"][0]["kept_by"], serde_json::json!(["dated in the future"]));

    let latest = run_with(&["verify-backup", &format!("{url}/latest"), "--json"], &bucket, &[]).await;
    assert_eq!(latest.code, 0, "latest is the real backup, which verifies: {}", latest.stderr);
    assert!(latest.stdout.contains(real_key.rsplit('/').next().unwrap()), "{}", latest.stdout);
}

/// Without a key nothing asks an instance-metadata service (a hang, or a misleading 403, where
/// there is none): the command says which variables to set, naming the bucket and endpoint.
#[tokio::test]
async fn no_credentials_say_which_variables_to_set_without_asking_the_metadata_service() {
    let endpoint = [("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9"), ("AWS_REGION", "auto")];
    let none = crate::common::binary::run(&["list-backups", "s3://dailyreps-backups/db"], &endpoint).await;
    assert_ne!(none.code, 0);
    let message = none.stderr.trim();
    assert!(
        message.contains("bucket dailyreps-backups at http://127.0.0.1:9")
            && message.contains("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        "{message}"
    );
    let mut half = endpoint.to_vec();
    half.push(("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"));
    let half = crate::common::binary::run(&["list-backups", "s3://dailyreps-backups/db"], &half).await;
    assert!(half.stderr.contains("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"), "{}", half.stderr);
}
