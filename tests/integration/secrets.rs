//! Secrets never reach the logs: a whole journey with debug logging, then a search.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{TEST_SECRET, TestDb, binary::Server, http_client, now, signed_request};

#[tokio::test]
async fn a_journey_logged_at_debug_level_leaks_no_secret_token_or_password() {
    let db = TestDb::migrated().await;
    // The test cluster trusts local connections, so this password is sent but never needed:
    // if it appears anywhere in the logs, the server printed it.
    let password = "db-pa55word-that-must-not-leak";
    let url = db.url.replacen("postgres://postgres@", &format!("postgres://postgres:{password}@"), 1);
    assert_ne!(url, db.url);
    let mut server = Server::start_with_env(&url, &[], &[("RUST_LOG", "debug")]).await;
    let client = http_client();
    let call = |method: Method, path: &str, body: &[u8], token: Option<&str>| {
        let request = signed_request(&client, &server.address, TEST_SECRET, now(), method, path, body)
            .header("content-type", "application/json");
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };
    let registered: Value = call(Method::POST, "/api/users", b"", None).send().await.unwrap().json().await.unwrap();
    let token = registered["token"].as_str().unwrap().to_owned();
    assert_eq!(
        call(Method::POST, "/api/backup", br#"{"a": 1}"#, Some(&token)).send().await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        call(Method::GET, "/api/backups/latest", b"", Some(&token)).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        call(Method::POST, "/api/backup", b"[1]", Some(&token)).send().await.unwrap().status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let wrong = signed_request(
        &client,
        &server.address,
        "a-wrong-secret-0123456789abcdefghij",
        now(),
        Method::GET,
        "/api/users/me",
        b"",
    );
    assert_eq!(wrong.bearer_auth(&token).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let bad_token = format!("drb_{}", "B".repeat(43));
    assert_eq!(
        call(Method::GET, "/api/users/me", b"", Some(&bad_token)).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(Method::DELETE, "/api/users/me", b"", Some(&token)).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );

    server.signal("TERM").await;
    let mut logs = String::new();
    while let Some(line) = server.logs.next_line().await.unwrap() {
        logs.push_str(&line);
        logs.push('\n');
    }
    assert!(logs.lines().count() > 10, "debug logging was on: {logs}");
    assert!(logs.contains("\"request\""), "per-request lines are there");
    for secret in [TEST_SECRET, token.as_str(), &token[4..], bad_token.as_str(), password] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs");
    }
}
