//! Accounts: register, me, delete; tokens; the registration rate limit.

use dailyreps_backup_server::config::ApiSettings;
use dailyreps_backup_server::config::Limits;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::{TestApp, error_code, test_settings};

#[tokio::test]
async fn register_returns_an_id_a_token_and_stores_only_its_hash() {
    let app = TestApp::spawn().await;
    for body in [&b""[..], b"{}", b" { } "] {
        let response = app
            .signed(Method::POST, "/api/users", body)
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "body {body:?}");
        let created: Value = response.json().await.unwrap();
        let token = created["token"].as_str().unwrap();
        assert!(token.starts_with("drb_") && token.len() == 47, "{token}");
        let id: uuid::Uuid = created["user_id"].as_str().unwrap().parse().unwrap();
        assert!(
            time::OffsetDateTime::parse(
                created["created_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339
            )
            .is_ok()
        );

        let stored: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(stored, Sha256::digest(token.as_bytes()).to_vec());
        let plain: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE position($1::bytea in token_hash) > 0")
            .bind(token.as_bytes())
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(plain, 0, "the token itself is nowhere in the table");
    }
}

#[tokio::test]
async fn register_refuses_a_body_that_is_not_an_object() {
    let app = TestApp::spawn().await;
    let response = app.signed(Method::POST, "/api/users", b"{nope").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "invalid_json");
    let response = app.signed(Method::POST, "/api/users", b"[1]").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "invalid_request");
}

#[tokio::test]
async fn register_takes_an_empty_body_null_or_an_object_as_its_document_says() {
    let app = TestApp::spawn().await;
    for body in [&b""[..], b"null", b" null\n", b"{}", br#"{"device": "iPhone"}"#] {
        let response = app.signed(Method::POST, "/api/users", body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{}", String::from_utf8_lossy(body));
    }
    // Whitespace alone is neither empty nor JSON (schemathesis found it accepted).
    let response = app.signed(Method::POST, "/api/users", b"  ").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "invalid_json");
}

#[tokio::test]
async fn me_reports_the_account_its_backups_and_limits() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let empty: Value = app.authed(&user, Method::GET, "/api/users/me", b"").send().await.unwrap().json().await.unwrap();
    assert_eq!(empty["user_id"], user.id.to_string());
    assert_eq!(empty["backup_count"], 0);
    assert_eq!(empty["total_bytes"], 0);
    assert_eq!(empty["latest_backup_at"], Value::Null);
    assert_eq!(empty["limits"], serde_json::json!({"max_backup_bytes": 10 * 1024 * 1024, "max_backups_kept": 30}));

    app.upload_ok(&user, br#"{"a": 1}"#).await;
    let second = app.upload(&user, br#"{"a": 22}"#).await;
    let second: Value = second.json().await.unwrap();
    let me: Value = app.authed(&user, Method::GET, "/api/users/me", b"").send().await.unwrap().json().await.unwrap();
    assert_eq!(me["backup_count"], 2);
    assert_eq!(me["total_bytes"], 8 + 9);
    assert_eq!(me["latest_backup_at"], second["created_at"]);
}

#[tokio::test]
async fn a_missing_unknown_or_malformed_token_is_unauthorized() {
    let app = TestApp::spawn().await;
    let unknown = format!("drb_{}", "A".repeat(43));
    // The downloads find the user in the same statement as the backup: the same answers.
    let by_id = format!("/api/backups/{}", uuid::Uuid::new_v4());
    for path in ["/api/users/me", "/api/backups/latest", by_id.as_str()] {
        for token in [None, Some(unknown.as_str()), Some("drb_short"), Some("")] {
            let mut request = app.signed(Method::GET, path, b"");
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path} {token:?}");
            assert_eq!(error_code(response).await, "unauthorized");
        }
    }
    let response = app
        .signed(Method::GET, "/api/users/me", b"")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, "unauthorized");
}

#[tokio::test]
async fn deleting_the_account_removes_every_row_and_kills_the_token() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let other = app.register().await;
    app.upload_ok(&user, br#"{"a": 1}"#).await;
    app.upload_keyed(&user, br#"{"a": 2}"#, "k1").send().await.unwrap();
    app.upload_ok(&other, br#"{"b": 1}"#).await;

    // Every column that can name an account, found in the catalog (so a new table cannot be
    // forgotten here): users.id, each foreign key to it, and any other column called user_id.
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT 'users', 'id' \
         UNION SELECT c.relname::text, a.attname::text FROM pg_constraint k \
           JOIN pg_class c ON c.oid = k.conrelid \
           JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey) \
          WHERE k.contype = 'f' AND k.confrelid = 'public.users'::regclass \
         UNION SELECT c.relname::text, a.attname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
          WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attname = 'user_id' \
            AND NOT a.attisdropped",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(columns.len() >= 3, "{columns:?}");
    let rows_of = |user_id: uuid::Uuid| {
        let (pool, columns) = (app.pool.clone(), columns.clone());
        async move {
            let mut counts = Vec::new();
            for (table, column) in &columns {
                let sql = format!("SELECT count(*) FROM public.{table} WHERE {column} = $1");
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(user_id).fetch_one(&pool).await.unwrap();
                counts.push((format!("{table}.{column}"), n));
            }
            counts
        }
    };
    assert!(rows_of(user.id).await.iter().all(|(_, n)| *n > 0), "the account has rows in every such table first");

    let response = app.authed(&user, Method::DELETE, "/api/users/me", b"").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for (column, left) in rows_of(user.id).await {
        assert_eq!(left, 0, "{column}");
    }
    let after = app.authed(&user, Method::GET, "/api/users/me", b"").send().await.unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    let latest = app.authed(&user, Method::GET, "/api/backups/latest", b"").send().await.unwrap();
    assert_eq!(latest.status(), StatusCode::UNAUTHORIZED, "a dead token, not an account without backups");
    let again = app.authed(&user, Method::DELETE, "/api/users/me", b"").send().await.unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    // The other account is untouched.
    let theirs: Value =
        app.authed(&other, Method::GET, "/api/users/me", b"").send().await.unwrap().json().await.unwrap();
    assert_eq!(theirs["backup_count"], 1);
}

#[tokio::test]
async fn registration_is_limited_per_client_ip_honouring_fly_client_ip() {
    let settings =
        ApiSettings { limits: Limits { register_per_minute: 2, ..test_settings().limits }, ..test_settings() };
    let app = TestApp::spawn_with(settings).await;
    let register_from =
        |ip: &'static str| app.signed(Method::POST, "/api/users", b"").header("fly-client-ip", ip).send();
    for _ in 0..2 {
        assert_eq!(register_from("203.0.113.7").await.unwrap().status(), StatusCode::CREATED);
    }
    let limited = register_from("203.0.113.7").await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(error_code(limited).await, "rate_limited");
    assert_eq!(
        register_from("2001:db8::1").await.unwrap().status(),
        StatusCode::CREATED,
        "another client is not limited"
    );
}

#[tokio::test]
async fn requests_are_limited_per_user_and_per_ip() {
    let settings = ApiSettings { limits: Limits { user_per_minute: 3, ..test_settings().limits }, ..test_settings() };
    let app = TestApp::spawn_with(settings).await;
    let (user, other) = (app.register().await, app.register().await);
    // Downloads count too, though they find the user in the same statement as the backup.
    let by_id = format!("/api/backups/{}", uuid::Uuid::new_v4());
    for (path, status) in [
        ("/api/users/me", StatusCode::OK),
        ("/api/backups/latest", StatusCode::NOT_FOUND),
        (by_id.as_str(), StatusCode::NOT_FOUND),
    ] {
        assert_eq!(app.authed(&user, Method::GET, path, b"").send().await.unwrap().status(), status, "{path}");
    }
    for path in ["/api/users/me", "/api/backups/latest"] {
        let limited = app.authed(&user, Method::GET, path, b"").send().await.unwrap();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert!(limited.headers().contains_key("retry-after"));
    }
    assert_eq!(app.authed(&other, Method::GET, "/api/users/me", b"").send().await.unwrap().status(), StatusCode::OK);

    let settings = ApiSettings { limits: Limits { ip_per_minute: 2, ..test_settings().limits }, ..test_settings() };
    let app = TestApp::spawn_with(settings).await;
    let from = |ip: &'static str| app.signed(Method::POST, "/api/users", b"").header("fly-client-ip", ip).send();
    assert_eq!(from("198.51.100.1").await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(from("198.51.100.1").await.unwrap().status(), StatusCode::CREATED);
    let limited = from("198.51.100.1").await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(limited).await, "rate_limited");
    assert_eq!(from("198.51.100.2").await.unwrap().status(), StatusCode::CREATED);
}
