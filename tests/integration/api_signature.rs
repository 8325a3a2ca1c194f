//! The app signature in front of every /api route.

use dailyreps_backup_server::config::SigningSecrets;
use dailyreps_backup_server::signature;
use reqwest::{Method, StatusCode};

use crate::common::{TEST_SECRET, TestApp, error_code, now, test_settings};

#[tokio::test]
async fn a_request_without_signature_headers_is_refused() {
    let app = TestApp::spawn().await;
    let response = app.client.post(format!("{}/api/users", app.address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(response).await, "missing_signature");
    // Timestamp alone is not enough either.
    let response = app
        .client
        .post(format!("{}/api/users", app.address))
        .header(signature::TIMESTAMP_HEADER, now().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, "missing_signature");
}

#[tokio::test]
async fn a_signature_made_with_another_secret_is_bad() {
    let app = TestApp::spawn().await;
    let response = app.signed_with(&"x".repeat(40), now(), Method::POST, "/api/users", b"").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(response).await, "bad_signature");
}

#[tokio::test]
async fn stale_and_future_timestamps_are_refused() {
    let app = TestApp::spawn().await;
    for skew in [-301, 301, -86_400] {
        let response =
            app.signed_with(TEST_SECRET, now() + skew, Method::POST, "/api/users", b"").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "skew {skew}");
        assert_eq!(error_code(response).await, "stale_signature", "skew {skew}");
    }
    let response = app.signed_with(TEST_SECRET, now() - 250, Method::POST, "/api/users", b"").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "250 s of skew is within the window");
}

#[tokio::test]
async fn every_configured_secret_is_accepted_during_a_rotation() {
    let (old, new) = (TEST_SECRET.to_owned(), "the-next-signing-secret-0123456789abcdef".to_owned());
    let settings = dailyreps_backup_server::config::ApiSettings {
        signing_secrets: SigningSecrets::parse(&format!("{new},{old}")).unwrap(),
        ..test_settings()
    };
    let app = TestApp::spawn_with(settings).await;
    for secret in [&old, &new] {
        let response = app.signed_with(secret, now(), Method::POST, "/api/users", b"").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
}

#[tokio::test]
async fn a_body_or_query_changed_after_signing_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let signed_for = signature::sign(TEST_SECRET.as_bytes(), now(), "POST", "/api/backup", br#"{"reps": 10}"#);
    let tampered = app
        .client
        .post(format!("{}/api/backup", app.address))
        .header(signature::TIMESTAMP_HEADER, now().to_string())
        .header(signature::SIGNATURE_HEADER, &signed_for)
        .header("content-type", "application/json")
        .bearer_auth(&user.token)
        .body(r#"{"reps": 99}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(tampered).await, "bad_signature");

    let signed = app.authed(&user, Method::GET, "/api/backups?limit=1", b"").build().unwrap();
    let mut request = signed;
    *request.url_mut() = format!("{}/api/backups?limit=2", app.address).parse().unwrap();
    let response = app.client.execute(request).await.unwrap();
    assert_eq!(error_code(response).await, "bad_signature");
}

#[tokio::test]
async fn the_openapi_document_and_health_need_no_signature() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/api/openapi.json").await.status(), StatusCode::OK);
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}
