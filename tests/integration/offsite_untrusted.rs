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
