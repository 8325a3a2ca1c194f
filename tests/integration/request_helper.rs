//! `request`: the README's walk-through, run against the real server.

use serde_json::Value;

use crate::common::{
    TEST_SECRET, TestDb,
    binary::{self, Server},
};

#[tokio::test]
async fn the_readme_walk_through_works_end_to_end() {
    let db = TestDb::migrated().await;
    let server = Server::start(&db.url, &[]).await;
    let base = [("DAILYREPS_URL", server.address.as_str()), ("APP_SIGNING_SECRET", TEST_SECRET)];

    let registered = binary::run(&["request", "POST", "/api/users"], &base).await;
    assert_eq!(registered.code, 0, "{}", registered.stderr);
    let token = serde_json::from_str::<Value>(&registered.stdout).unwrap()["token"].as_str().unwrap().to_owned();
    let with_token = [base[0], base[1], ("DAILYREPS_TOKEN", token.as_str())];

    let dir = crate::common::scratch_dir("request");
    std::fs::create_dir_all(&dir).unwrap();
    let doc_path = dir.join("doc.json");
    let doc = "{ \"workouts\": [ {\"name\": \"squat\", \"sets\": [5, 5, 5]} ], \"ü\": \"✓\" }\n";
    std::fs::write(&doc_path, doc).unwrap();
    let data = format!("@{}", doc_path.display());

    let uploaded = binary::run(
        &["request", "POST", "/api/backup", "--data", &data, "--gzip", "-H", "Idempotency-Key: walk-1", "-i"],
        &with_token,
    )
    .await;
    assert_eq!(uploaded.code, 0, "{}", uploaded.stderr);
    assert!(uploaded.stderr.contains("201 Created"), "{}", uploaded.stderr);
    let uploaded: Value = serde_json::from_str(&uploaded.stdout).unwrap();
    assert_eq!(uploaded["size_bytes"], doc.len());

    let listed = binary::run(&["request", "GET", "/api/backups?limit=5"], &with_token).await;
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed["backups"][0]["backup_id"], uploaded["backup_id"]);

    let restored = binary::run(&["request", "GET", "/api/backups/latest"], &with_token).await;
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    assert_eq!(restored.stdout, doc, "byte for byte");

    let deleted = binary::run(&["request", "DELETE", "/api/users/me"], &with_token).await;
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    let refused = binary::run(&["request", "GET", "/api/users/me"], &with_token).await;
    assert_eq!(refused.code, 1, "a 401 exits 1");
    assert!(refused.stdout.contains("\"unauthorized\""), "{}", refused.stdout);
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn request_needs_a_secret_and_a_sane_url() {
    let outcome = binary::run(&["request", "GET", "/api/users/me"], &[]).await;
    assert_eq!(outcome.code, 2, "a missing setting");
    assert!(outcome.stderr.contains("APP_SIGNING_SECRET is not set"), "{}", outcome.stderr);
    let outcome =
        binary::run(&["request", "GET", "/api/users/me", "--url", "ftp://x"], &[("APP_SIGNING_SECRET", TEST_SECRET)])
            .await;
    assert_eq!(outcome.code, 1);
    assert!(outcome.stderr.contains("is not an http(s) URL"), "{}", outcome.stderr);
    assert!(!outcome.stderr.contains(TEST_SECRET));
}

#[tokio::test]
async fn a_server_that_is_not_there_is_said_once() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let outcome =
        binary::run(&["request", "GET", "/healthz", "--url", &url], &[("APP_SIGNING_SECRET", TEST_SECRET)]).await;
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("could not connect: Connection refused"), "{}", outcome.stderr);
    assert_eq!(outcome.stderr.matches(&url).count(), 1, "the URL once: {}", outcome.stderr);
    assert_eq!(outcome.stderr.lines().count(), 1, "{}", outcome.stderr);
}
