//! A database whose volume fills while PostgreSQL stays up (its data full, its WAL elsewhere
//! with room): uploads are answered 503 `unavailable` with Retry-After and a message that says
//! storage is full, never 500; what is stored still downloads; `/readyz` and `inspect health`
//! say so; and the runbook works as written: `reserve --release` gives room at once (uploads
//! resume), `prune` deletes and vacuums, and what it deleted is reused.
//!
//! The database lives in a tablespace on a 16 MiB tmpfs, which only root may mount: as another
//! user this test says so and does nothing (CI runs as root).

use std::path::PathBuf;
use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{TestApp, connect, scratch_dir, start_cluster, with_database};
use dailyreps_backup_server::db::migrations;

/// A small tmpfs, unmounted when dropped.
struct SmallVolume(PathBuf);

impl SmallVolume {
    fn mount(megabytes: u32) -> Self {
        let dir = scratch_dir("small-volume");
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m,mode=0755"), "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount a tmpfs at {}", dir.display());
        Self(dir)
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `len` bytes of JSON that neither compression nor deduplication shrinks much.
fn incompressible_document(seed: u32, len: usize) -> Vec<u8> {
    let mut state = u64::from(seed).wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut text = String::with_capacity(len);
    text.push_str(r#"{"noise":""#);
    while text.len() < len - 2 {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        text.push_str(&format!("{:016x}", state >> 1));
    }
    text.truncate(len - 2);
    text.push_str("\"}");
    text.into_bytes()
}

fn run(args: &[&str], url: &str) -> impl Future<Output = crate::common::binary::Outcome> {
    let mut all = args.to_vec();
    all.push("--json");
    let url = url.to_owned();
    async move { crate::common::binary::run(&all, &[("DATABASE_URL", &url)]).await }
}

#[tokio::test]
async fn a_full_volume_is_answered_503_storage_full_and_the_runbook_recovers_it() {
    if !is_root() {
        eprintln!("skipped: mounting a small filesystem needs root");
        return;
    }
    let cluster = start_cluster().await;
    let volume = SmallVolume::mount(16);
    let location = volume.0.join("ts");
    std::fs::create_dir(&location).unwrap();
    assert!(Command::new("chown").arg("postgres").arg(&location).status().unwrap().success());
    let admin = connect(&cluster.url("postgres")).await;
    let create = format!("CREATE TABLESPACE small LOCATION '{}'", location.display());
    sqlx::raw_sql(sqlx::AssertSqlSafe(create)).execute(&admin).await.unwrap();
    sqlx::raw_sql("CREATE DATABASE full_volume TABLESPACE small").execute(&admin).await.unwrap();
    let url = with_database(&cluster.url("postgres"), "full_volume");
    migrations::apply(&connect(&url).await).await.unwrap();
    let kept = run(&["reserve", "--size", "2MiB"], &url).await;
    assert_eq!(kept.code, 0, "{}", kept.stderr);

    let app = TestApp::spawn_on(&url).await;
    let user = app.register().await;
    let mut stored = Vec::new();
    let refused = loop {
        assert!(stored.len() < 64, "16 MiB never filled");
        let document = incompressible_document(stored.len() as u32, 512 * 1024);
        let response = app.upload(&user, &document).await;
        if response.status() != StatusCode::CREATED {
            break response;
        }
        stored.push(document);
    };
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE, "a full volume is no bug");
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(body["error"]["message"].as_str().unwrap().contains("storage is full"), "{body}");
    assert!(!stored.is_empty(), "some uploads were stored before the volume filled");

    let latest = app.authed(&user, Method::GET, "/api/backups/latest", b"").send().await.unwrap();
    assert_eq!(latest.status(), StatusCode::OK, "what is stored still downloads");
    assert_eq!(latest.bytes().await.unwrap().as_ref(), stored.last().unwrap().as_slice());
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["storage_full"], true, "{ready}");

    // inspect health says the volume is full, and what to do.
    let health = run(&["inspect", "health", "--volume-size", "16MiB"], &url).await;
    let health: Value = serde_json::from_str(&health.stdout).unwrap();
    let disk = health["checks"].as_array().unwrap().iter().find(|c| c["name"] == "disk").unwrap();
    let advice = disk["detail"].as_str().unwrap();
    assert!(advice.contains("the volume is full") && advice.contains("reserve --release"), "{advice}");

    // Deleting alone gives nothing back: prune deletes, but its VACUUM has no room.
    let pruned = run(&["prune", "--keep-last", "1", "--yes"], &url).await;
    assert_eq!(pruned.code, 0, "{}", pruned.stderr);
    assert!(
        pruned.stderr.contains("VACUUM needs room") && pruned.stderr.contains("reserve --release"),
        "{}",
        pruned.stderr
    );
    let deleted = serde_json::from_str::<Value>(&pruned.stdout).unwrap()["backups_deleted"].as_u64().unwrap();
    assert!(deleted >= 8, "twice what the reserve holds, so the uploads below must reuse it: {}", pruned.stdout);

    // The runbook: release the reserve (room at once, and it vacuums); uploads resume and reuse
    // what prune deleted, beyond what the reserve held.
    let released = run(&["reserve", "--release"], &url).await;
    assert_eq!(released.code, 0, "{}", released.stderr);
    assert!(released.stderr.contains("vacuumed"), "{}", released.stderr);
    for n in 0..deleted {
        let document = incompressible_document(1000 + n as u32, 512 * 1024);
        let response = app.upload(&user, &document).await;
        assert_eq!(response.status(), StatusCode::CREATED, "upload {n} of {deleted} after the recovery");
    }
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["storage_full"], false, "{ready}");
    app.pool.close().await;
    admin.close().await;
    drop(cluster);
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|id| id.stdout == b"0\n")
}
