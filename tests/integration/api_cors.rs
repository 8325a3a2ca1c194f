//! CORS: exactly the configured origins, preflight on every /api route.

use dailyreps_backup_server::config::AllowedOrigins;
use dailyreps_backup_server::config::ApiSettings;
use reqwest::{Method, StatusCode};

use crate::common::{TestApp, test_settings};

const ALLOWED: &str = "https://app.dailyreps.example";

async fn preflight(app: &TestApp, path: &str, origin: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, format!("{}{path}", app.address))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type, x-dailyreps-signature")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_allowed_origin_gets_cors_headers_and_preflight_on_every_api_route() {
    let settings = ApiSettings { allowed_origins: AllowedOrigins::parse(ALLOWED).unwrap(), ..test_settings() };
    let app = TestApp::spawn_with(settings).await;
    for path in crate::common::API_PATHS {
        let response = preflight(&app, path, ALLOWED).await;
        assert!(response.status().is_success(), "{path}: {}", response.status());
        assert_eq!(response.headers()["access-control-allow-origin"], ALLOWED, "{path}");
        let methods = response.headers()["access-control-allow-methods"].to_str().unwrap().to_owned();
        assert!(methods.contains("POST") && methods.contains("DELETE"), "{methods}");
        let headers = response.headers()["access-control-allow-headers"].to_str().unwrap().to_lowercase();
        assert!(headers.contains("x-dailyreps-signature") && headers.contains("authorization"), "{headers}");
    }
    let user = app.register().await;
    let response = app.authed(&user, Method::GET, "/api/users/me", b"").header("origin", ALLOWED).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["access-control-allow-origin"], ALLOWED);
    let exposed = response.headers()["access-control-expose-headers"].to_str().unwrap().to_lowercase();
    assert!(exposed.contains("etag") && exposed.contains("x-request-id"), "{exposed}");
}

#[tokio::test]
async fn another_origin_gets_no_cors_headers() {
    let settings = ApiSettings { allowed_origins: AllowedOrigins::parse(ALLOWED).unwrap(), ..test_settings() };
    let app = TestApp::spawn_with(settings).await;
    for origin in ["https://evil.example", "https://app.dailyreps.example.evil.example", "null"] {
        let response = preflight(&app, "/api/backup", origin).await;
        assert!(!response.headers().contains_key("access-control-allow-origin"), "{origin}");
        let user = app.register().await;
        let response =
            app.authed(&user, Method::GET, "/api/users/me", b"").header("origin", origin).send().await.unwrap();
        assert!(!response.headers().contains_key("access-control-allow-origin"), "{origin}");
    }
}

#[tokio::test]
async fn without_allowed_origins_there_is_no_cross_origin_access() {
    let app = TestApp::spawn().await;
    let response = preflight(&app, "/api/backup", ALLOWED).await;
    assert!(!response.headers().contains_key("access-control-allow-origin"));
    let user = app.register().await;
    let response = app.authed(&user, Method::GET, "/api/users/me", b"").header("origin", ALLOWED).send().await.unwrap();
    assert!(!response.headers().contains_key("access-control-allow-origin"));
}
