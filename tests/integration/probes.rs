use reqwest::StatusCode;
use serde_json::Value;

use crate::common::TestApp;

#[tokio::test]
async fn healthz_answers_with_the_crate_version() {
    let app = TestApp::spawn().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}));
}

#[tokio::test]
async fn a_sane_request_id_is_echoed_and_a_bad_one_replaced() {
    let app = TestApp::spawn().await;
    let echoed =
        app.client.get(format!("{}/healthz", app.address)).header("x-request-id", "ios-7f3a.1").send().await.unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "ios-7f3a.1");

    let replaced = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-request-id", "no spaces <allowed>")
        .send()
        .await
        .unwrap();
    let id = replaced.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    let fresh = app.get("/healthz").await;
    assert!(uuid::Uuid::parse_str(fresh.headers()["x-request-id"].to_str().unwrap()).is_ok());
}

#[tokio::test]
async fn unknown_routes_get_a_json_404_carrying_the_request_id() {
    let app = TestApp::spawn().await;
    let response =
        app.client.get(format!("{}/no/such/route", app.address)).header("x-request-id", "req-42").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(body["error"]["request_id"], "req-42");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn a_known_route_with_another_method_gets_405() {
    let app = TestApp::spawn().await;
    let response = app.client.delete(format!("{}/healthz", app.address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert_eq!(body["error"]["request_id"], request_id.as_str());
}
