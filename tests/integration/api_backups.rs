//! Backups: upload, restore byte for byte, idempotency, dedupe, retention, pagination, isolation.

use std::collections::HashSet;
use std::io::{Read, Write};

use dailyreps_backup_server::config::ApiSettings;
use dailyreps_backup_server::config::Limits;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::{TestApp, TestUser, error_code, test_settings};

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

async fn restore(app: &TestApp, user: &TestUser, path: &str) -> reqwest::Response {
    app.authed(user, Method::GET, path, b"").send().await.unwrap()
}

/// A document of about `size` bytes with odd whitespace, unusual key order and unicode.
fn awkward_document(size: usize) -> Vec<u8> {
    let mut doc =
        String::from("{\n\t\"zeta\" :1,  \"alpha\":[ ],\"ünïcødé 🏋️\": \"ダンベル\\u00e9\\n\",\r\n \"log\": [");
    let mut i = 0;
    while doc.len() < size {
        doc.push_str(&format!(
            "{}{{\"set\":{i},\"reps\":  {},\"note\":\"😀 \\\"x\\\"\"}}",
            if i > 0 { " ," } else { "" },
            i % 17
        ));
        i += 1;
    }
    doc.push_str("]\n}  \n");
    doc.into_bytes()
}

#[tokio::test]
async fn upload_answers_201_with_location_and_metadata() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let doc = br#"{"workouts": [{"name": "squat", "reps": 5}]}"#;
    let response = app.upload(&user, doc).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/api/backups/{}", body["backup_id"].as_str().unwrap()));
    assert_eq!(body["size_bytes"], doc.len());
    assert_eq!(body["sha256"], hex_sha256(doc));
    assert_eq!(body["deduplicated"], false);
    let stored = app.backup_count(user.id).await;
    assert_eq!(stored, 1, "201 means committed");
}

#[tokio::test]
async fn restore_is_byte_identical_for_awkward_and_large_documents() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let large = awkward_document(10 * 1000 * 1000);
    for doc in [awkward_document(300), large] {
        let id = app.upload_ok(&user, &doc).await;
        for path in ["/api/backups/latest".to_owned(), format!("/api/backups/{id}")] {
            let response = restore(&app, &user, &path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()["content-type"], "application/json");
            assert_eq!(response.headers()["etag"].to_str().unwrap(), format!("\"{}\"", hex_sha256(&doc)));
            assert_eq!(response.headers()["x-backup-id"].to_str().unwrap(), id.to_string());
            assert!(response.headers().contains_key("x-backup-created-at"));
            let body = response.bytes().await.unwrap();
            assert!(body.as_ref() == doc.as_slice(), "{path}: {} bytes back for {}", body.len(), doc.len());
        }
    }
}

#[tokio::test]
async fn an_etag_that_matches_gets_304() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let doc = br#"{"a": 1}"#;
    app.upload_ok(&user, doc).await;
    let etag = format!("\"{}\"", hex_sha256(doc));
    let response =
        app.authed(&user, Method::GET, "/api/backups/latest", b"").header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    assert!(response.bytes().await.unwrap().is_empty());
    let stale = app
        .authed(&user, Method::GET, "/api/backups/latest", b"")
        .header("if-none-match", "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
}

#[tokio::test]
async fn restores_are_gzipped_for_clients_that_accept_it() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let doc = awkward_document(20_000);
    app.upload_ok(&user, &doc).await;
    let response = app
        .authed(&user, Method::GET, "/api/backups/latest", b"")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let wire = response.bytes().await.unwrap();
    assert!(wire.len() < doc.len() / 2, "{} bytes on the wire", wire.len());
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(wire.as_ref()).read_to_end(&mut decoded).unwrap();
    assert_eq!(decoded, doc);
}

#[tokio::test]
async fn a_gzip_upload_is_stored_decoded() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let doc = awkward_document(50_000);
    let response = app
        .authed(&user, Method::POST, "/api/backup", &gzip(&doc))
        .header("content-type", "application/json; charset=utf-8")
        .header("content-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["size_bytes"], doc.len());
    assert_eq!(body["sha256"], hex_sha256(&doc));
    assert_eq!(restore(&app, &user, "/api/backups/latest").await.bytes().await.unwrap().as_ref(), doc.as_slice());
}

#[tokio::test]
async fn an_idempotent_retry_replays_and_another_body_conflicts() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let send = |key: &str, doc: &'static [u8]| app.upload_keyed(&user, doc, key).send();
    let first = send("retry-1", br#"{"n": 1}"#).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let first: Value = first.json().await.unwrap();

    let replay = send("retry-1", br#"{"n": 1}"#).await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay, first, "the same answer, the same backup_id");

    let conflict = send("retry-1", br#"{"n": 2}"#).await.unwrap();
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(conflict).await, "idempotency_conflict");
    let count = app.backup_count(user.id).await;
    assert_eq!(count, 1);

    // Keys are per user.
    let other = app.register().await;
    let theirs = app.upload_keyed(&other, br#"{"n": 2}"#, "retry-1").send().await.unwrap();
    assert_eq!(theirs.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_with_one_key_store_one_backup() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = app.upload_keyed(&user, br#"{"same": true}"#, "race");
        attempts.spawn(async move { request.send().await.unwrap().json::<Value>().await.unwrap() });
    }
    let answers = attempts.join_all().await;
    let ids: HashSet<String> = answers.iter().map(|body| body["backup_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    let count = app.backup_count(user.id).await;
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_document_identical_to_the_latest_is_not_stored_twice() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let id = app.upload_ok(&user, br#"{"same": 1}"#).await;
    let again = app.upload(&user, br#"{"same": 1}"#).await;
    assert_eq!(again.status(), StatusCode::OK);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["backup_id"], id.to_string());
    assert_eq!(body["deduplicated"], true);
    // Only the *latest* is compared: A, B, A stores three.
    app.upload_ok(&user, br#"{"other": 1}"#).await;
    app.upload_ok(&user, br#"{"same": 1}"#).await;
    let count = app.backup_count(user.id).await;
    assert_eq!(count, 3);
}

#[tokio::test]
async fn retention_keeps_exactly_the_newest_n() {
    let settings = ApiSettings { limits: Limits { max_backups_kept: 3, ..test_settings().limits }, ..test_settings() };
    let app = TestApp::spawn_with(settings).await;
    let user = app.register().await;
    let other = app.register().await;
    app.upload_ok(&other, br#"{"theirs": 0}"#).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(app.upload_ok(&user, format!(r#"{{"n": {n}}}"#).as_bytes()).await);
    }
    let listed: Value = app.authed(&user, Method::GET, "/api/backups", b"").send().await.unwrap().json().await.unwrap();
    let listed: Vec<String> =
        listed["backups"].as_array().unwrap().iter().map(|b| b["backup_id"].as_str().unwrap().to_owned()).collect();
    let newest: Vec<String> = ids.iter().rev().take(3).map(ToString::to_string).collect();
    assert_eq!(listed, newest);
    let theirs = app.backup_count(other.id).await;
    assert_eq!(theirs, 1, "another user's backups are not pruned");
}

#[tokio::test]
async fn concurrent_uploads_of_one_user_keep_exactly_the_newest_n() {
    let settings = ApiSettings { limits: Limits { max_backups_kept: 3, ..test_settings().limits }, ..test_settings() };
    let app = TestApp::spawn_with(settings).await;
    let user = app.register().await;
    let mut uploads = tokio::task::JoinSet::new();
    for n in 0..12 {
        let request = app.authed(&user, Method::POST, "/api/backup", format!(r#"{{"n": {n}}}"#).as_bytes());
        uploads.spawn(request.header("content-type", "application/json").send());
    }
    for answer in uploads.join_all().await {
        assert_eq!(answer.unwrap().status(), StatusCode::CREATED);
    }
    assert_eq!(app.backup_count(user.id).await, 3, "retention decided one upload at a time");
}

#[tokio::test]
async fn an_upload_racing_the_deletion_of_its_account_is_unauthorized_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    // Hold the account's row: the upload passes authentication, then waits on that row.
    let mut deleting = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE").bind(user.id).execute(&mut *deleting).await.unwrap();
    let request = app.authed(&user, Method::POST, "/api/backup", br#"{"late": true}"#);
    let upload = tokio::spawn(request.header("content-type", "application/json").send());
    crate::common::wait_until_blocked_on_lock(&app.pool, "SELECT outcome").await;
    sqlx::query("DELETE FROM users WHERE id = $1").bind(user.id).execute(&mut *deleting).await.unwrap();
    deleting.commit().await.unwrap();
    let answer = upload.await.unwrap().unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.backup_count(user.id).await, 0);
}

#[tokio::test]
async fn pagination_walks_every_backup_once_while_new_ones_arrive() {
    // Enough retention that the walk's own uploads prune nothing.
    let settings =
        ApiSettings { limits: Limits { max_backups_kept: 100, ..test_settings().limits }, ..test_settings() };
    let app = TestApp::spawn_with(settings).await;
    let user = app.register().await;
    let mut originals = HashSet::new();
    for n in 0..25 {
        originals.insert(app.upload_ok(&user, format!(r#"{{"n": {n}}}"#).as_bytes()).await.to_string());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut extra = 100;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/backups?limit=4&cursor={cursor}"),
            None => "/api/backups?limit=4".to_owned(),
        };
        let page: Value = app.authed(&user, Method::GET, &path, b"").send().await.unwrap().json().await.unwrap();
        seen.extend(page["backups"].as_array().unwrap().iter().map(|b| b["backup_id"].as_str().unwrap().to_owned()));
        // A new backup lands between every two pages.
        app.upload_ok(&user, format!(r#"{{"n": {extra}}}"#).as_bytes()).await;
        extra += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a backup was listed twice");
    assert_eq!(unique, originals, "every backup that existed when the walk began is listed exactly once");
}

#[tokio::test]
async fn list_parameters_are_checked() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    for query in ["limit=0", "limit=201", "limit=abc", "cursor=not-a-cursor", "cursor=%FF"] {
        let response = app.authed(&user, Method::GET, &format!("/api/backups?{query}"), b"").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(error_code(response).await, "invalid_request", "{query}");
    }
    let empty: Value =
        app.authed(&user, Method::GET, "/api/backups?limit=200", b"").send().await.unwrap().json().await.unwrap();
    assert_eq!(empty, serde_json::json!({"backups": [], "next_cursor": null}));
}

#[tokio::test]
async fn another_users_backups_can_be_neither_read_listed_nor_deleted() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.register().await, app.register().await);
    let id = app.upload_ok(&alice, br#"{"alice": "private"}"#).await;
    let read = restore(&app, &bob, &format!("/api/backups/{id}")).await;
    assert_eq!(read.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(read).await, "not_found");
    let deleted = app.authed(&bob, Method::DELETE, &format!("/api/backups/{id}"), b"").send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NOT_FOUND);
    let listed: Value = app.authed(&bob, Method::GET, "/api/backups", b"").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["backups"], serde_json::json!([]));
    let latest = restore(&app, &bob, "/api/backups/latest").await;
    assert_eq!(latest.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(latest).await, "no_backups");
    assert_eq!(
        restore(&app, &alice, &format!("/api/backups/{id}")).await.status(),
        StatusCode::OK,
        "still there for Alice"
    );
}

#[tokio::test]
async fn delete_removes_one_backup() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let (first, second) = (app.upload_ok(&user, br#"{"n": 1}"#).await, app.upload_ok(&user, br#"{"n": 2}"#).await);
    let response = app.authed(&user, Method::DELETE, &format!("/api/backups/{second}"), b"").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(restore(&app, &user, &format!("/api/backups/{second}")).await.status(), StatusCode::NOT_FOUND);
    let latest = restore(&app, &user, "/api/backups/latest").await;
    assert_eq!(latest.headers()["x-backup-id"].to_str().unwrap(), first.to_string());
    let bad_id = app.authed(&user, Method::DELETE, "/api/backups/12345", b"").send().await.unwrap();
    assert_eq!(bad_id.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(bad_id).await, "invalid_request");
}

#[tokio::test]
async fn idempotency_keys_are_remembered_for_key_lifetime_then_swept_even_for_silent_users() {
    use dailyreps_backup_server::backups::idempotency::{self, KEY_LIFETIME};
    let app = TestApp::spawn().await;
    let (active, silent) = (app.register().await, app.register().await);
    for user in [&active, &silent] {
        for key in ["young", "old"] {
            let first = app.upload_keyed(user, format!(r#"{{"key": "{key}"}}"#).as_bytes(), key).send().await.unwrap();
            assert_eq!(first.status(), StatusCode::CREATED);
        }
    }
    // A minute either side of the lifetime.
    let lifetime = i64::try_from(KEY_LIFETIME.as_secs()).unwrap();
    for (key, age) in [("young", lifetime - 60), ("old", lifetime + 60)] {
        sqlx::query("UPDATE idempotency_keys SET created_at = now() - make_interval(secs => $1) WHERE key = $2")
            .bind(age as f64)
            .bind(key)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    assert_eq!(idempotency::sweep(&app.pool).await.unwrap(), 2, "both users' expired keys");
    let keys: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT user_id, key FROM idempotency_keys ORDER BY key").fetch_all(&app.pool).await.unwrap();
    assert!(keys.iter().all(|(_, key)| key == "young") && keys.len() == 2, "{keys:?}");
    let replay = app.upload_keyed(&active, br#"{"key": "young"}"#, "young").send().await.unwrap();
    assert_eq!(
        replay.headers()["idempotent-replayed"],
        "true",
        "a minute short of the lifetime, a retry still replays"
    );
    let reused = app.upload_keyed(&active, br#"{"another": "body"}"#, "old").send().await.unwrap();
    assert_eq!(reused.status(), StatusCode::CREATED, "an expired key is free again, not a conflict");
    assert_eq!(idempotency::sweep(&app.pool).await.unwrap(), 0, "nothing else is old enough");
}
