//! The SPEC's error table, row by row, over real HTTP.

use std::time::{Duration, Instant};

use dailyreps_backup_server::config::ApiSettings;
use dailyreps_backup_server::config::Limits;
use reqwest::{Method, StatusCode};
use tokio::io::AsyncWriteExt;

use crate::common::{TEST_SECRET, TestApp, document_of, now, test_settings};

async fn assert_error(response: reqwest::Response, status: StatusCode, code: &str) {
    assert_eq!(response.status(), status, "{code}");
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code);
    assert_eq!(body["error"]["request_id"], request_id.as_str());
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn bad_bodies_and_headers_get_their_4xx() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let json = [("content-type", "application/json")];
    assert_error(app.upload_with(&user, b"{\"a\": ", &json).await, StatusCode::BAD_REQUEST, "invalid_json").await;
    assert_error(app.upload_with(&user, b"[1, 2]", &json).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_backup")
        .await;
    assert_error(app.upload_with(&user, b"\"text\"", &json).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_backup")
        .await;
    assert_error(
        app.upload_with(&user, b"{}", &[("content-type", "text/plain")]).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_error(
        app.upload_with(&user, b"{}", &[]).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let brotli = [("content-type", "application/json"), ("content-encoding", "br")];
    assert_error(
        app.upload_with(&user, b"{}", &brotli).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let not_gzip = [("content-type", "application/json"), ("content-encoding", "gzip")];
    assert_error(app.upload_with(&user, b"{}", &not_gzip).await, StatusCode::BAD_REQUEST, "invalid_request").await;
    let long_key = "k".repeat(256);
    let bad_key = [("content-type", "application/json"), ("idempotency-key", long_key.as_str())];
    assert_error(app.upload_with(&user, b"{}", &bad_key).await, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_error(
        app.authed(&user, Method::GET, "/api/backups/not-a-uuid", b"").send().await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert_error(
        app.authed(&user, Method::PUT, "/api/backup", b"").send().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    assert_error(
        app.authed(&user, Method::GET, "/api/nothing-here", b"").send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM backups").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 0, "nothing refused was stored");
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_whether_declared_or_chunked() {
    let settings =
        ApiSettings { limits: Limits { max_backup_bytes: 64 * 1024, ..test_settings().limits }, ..test_settings() };
    let app = TestApp::spawn_with(settings).await;
    let user = app.register().await;
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(200 * 1024));
    let declared = app.upload_with(&user, big.as_bytes(), &[("content-type", "application/json")]).await;
    assert_error(declared, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    let just_over = format!("{{\"pad\": \"{}\"}}", "x".repeat(64 * 1024));
    let response = app.upload_with(&user, just_over.as_bytes(), &[("content-type", "application/json")]).await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    // No Content-Length: the body arrives chunked and is cut off at the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.as_bytes().chunks(16 * 1024).map(|c| Ok(c.to_vec())).collect();
    let stream = futures_util::stream::iter(chunks);
    let signature =
        dailyreps_backup_server::signature::sign(TEST_SECRET.as_bytes(), now(), "POST", "/api/backup", big.as_bytes());
    let chunked = app
        .client
        .post(format!("{}/api/backup", app.address))
        .header("x-dailyreps-timestamp", now().to_string())
        .header("x-dailyreps-signature", signature)
        .header("content-type", "application/json")
        .bearer_auth(&user.token)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_error(chunked, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn at_the_memory_budget_requests_get_503_with_retry_after() {
    // Room for exactly two documents of the largest size.
    let limits =
        Limits { max_backup_bytes: 1024 * 1024, memory_budget_bytes: 2 * 1024 * 1024, ..test_settings().limits };
    let app = TestApp::spawn_with(ApiSettings { limits, ..test_settings() }).await;
    let user = app.register().await;

    // Slow clients (each from its own address, with a valid token) declare a body of the
    // largest size and send none of it: their shares of the budget are held while the server waits.
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for client in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /api/backup HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nfly-client-ip: 203.0.113.{client}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            user.token,
            1024 * 1024
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    wait_for_budget_in_use(&app, 2 * 1024 * 1024).await;

    let response = app.upload_with(&user, br#"{"small": true}"#, &[("content-type", "application/json")]).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    drop(slow);
    wait_for_budget_in_use_below(&app, 1).await;
    assert_eq!(
        app.upload_with(&user, br#"{"small": true}"#, &[("content-type", "application/json")]).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_large_body_refused_at_the_budget_still_hears_its_503() {
    let eight_mib = 8 * 1024 * 1024;
    let limits = Limits { max_backup_bytes: eight_mib, memory_budget_bytes: eight_mib, ..test_settings().limits };
    let app = TestApp::spawn_with(ApiSettings { limits, ..test_settings() }).await;
    let user = app.register().await;
    let mut slow = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST /api/backup HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nfly-client-ip: 203.0.113.1\r\n\
         content-length: {eight_mib}\r\n\r\n",
        user.token
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    wait_for_budget_in_use(&app, eight_mib).await;
    // The answer, not a connection reset mid-send (upload_with panics on a send error). A
    // lone client mostly gets its answer even when the server stops reading; under 64
    // concurrent 10 MiB uploads a third of them did not until the server read and dropped
    // refused bodies (bench/README.md).
    let response = app.upload_with(&user, &document_of(eight_mib), &[("content-type", "application/json")]).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
}

#[tokio::test]
async fn an_upload_is_charged_for_the_database_drivers_copies_too() {
    // Four MiB of budget: a 1 MiB upload needs three (body and two driver copies), 1.5 MiB
    // would need four and a half.
    let limits =
        Limits { max_backup_bytes: 2 * 1024 * 1024, memory_budget_bytes: 4 * 1024 * 1024, ..test_settings().limits };
    let app = TestApp::spawn_with(ApiSettings { limits, ..test_settings() }).await;
    let user = app.register().await;
    let json = [("content-type", "application/json")];
    // Text that repeats nothing, so every chunk is new and goes to the database.
    let unique = |len: usize| {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let text: String = (0..len - 8)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                char::from(b'a' + (state >> 59) as u8 % 26)
            })
            .collect();
        format!(r#"{{"d":"{text}"}}"#).into_bytes()
    };
    let refused = app.upload_with(&user, &unique(1536 * 1024), &json).await;
    assert_error(refused, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert_eq!(app.upload_with(&user, &unique(1024 * 1024), &json).await.status(), StatusCode::CREATED);
    wait_for_budget_in_use_below(&app, 1).await;
}

async fn wait_for_budget_in_use(app: &TestApp, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.budget_in_use().await < at_least as f64 {
        assert!(Instant::now() < deadline, "the slow requests never held the budget");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_for_budget_in_use_below(app: &TestApp, below: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.budget_in_use().await >= below as f64 {
        assert!(Instant::now() < deadline, "the budget was not given back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_internal_error_is_500_without_internals_in_the_answer() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    // Break the schema under the server: the query fails in a way no client could cause.
    sqlx::query("ALTER TABLE backups RENAME COLUMN sha256 TO sha256_gone").execute(&app.pool).await.unwrap();
    let response = app.authed(&user, Method::GET, "/api/backups", b"").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let text = response.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "internal");
    for internal in ["backups", "sha256", "column", "SELECT", "sqlx", "postgres"] {
        assert!(!text.contains(internal), "{internal:?} leaked: {text}");
    }
    // A table gone is a database without this binary's schema (a restore not migrated): 503,
    // as `/readyz` says, and still nothing of the schema in the answer.
    sqlx::query("ALTER TABLE backups RENAME TO backups_gone").execute(&app.pool).await.unwrap();
    let response = app.authed(&user, Method::GET, "/api/backups", b"").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = response.text().await.unwrap();
    assert!(!text.contains("backups") && !text.contains("relation"), "{text}");
}

#[tokio::test]
async fn a_body_that_dribbles_is_cut_off_with_408_and_its_budget_returned() {
    let limits = Limits { body_timeout: Duration::from_secs(1), ..test_settings().limits };
    let app = TestApp::spawn_with(ApiSettings { limits, ..test_settings() }).await;
    let user = app.register().await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/backup HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\n\
         content-length: 1000\r\n\r\n{{\"a\"",
        user.token
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::io::AsyncReadExt::read(&mut slow, &mut buffer).await.unwrap();
        assert!(n > 0, "the connection closed without an answer");
        answer.extend_from_slice(&buffer[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10), "cut off after {:?}", started.elapsed());
    wait_for_budget_in_use_below(&app, 1).await;
}

#[tokio::test]
async fn a_request_stuck_behind_the_database_gets_503_in_bounded_time() {
    let limits = Limits { request_timeout: Duration::from_secs(1), ..test_settings().limits };
    let app = TestApp::spawn_with(ApiSettings { limits, ..test_settings() }).await;
    let user = app.register().await;
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE backups IN ACCESS EXCLUSIVE MODE").execute(&mut *blocker).await.unwrap();
    let started = Instant::now();
    let response = app.upload(&user, br#"{"stuck": true}"#).await;
    let waited = started.elapsed();
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert!(waited < Duration::from_secs(10), "answered after {waited:?}");
    blocker.rollback().await.unwrap();
    assert_eq!(app.upload(&user, br#"{"stuck": false}"#).await.status(), StatusCode::CREATED, "it recovers");
}
