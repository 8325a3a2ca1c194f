use reqwest::StatusCode;

use crate::common::TestApp;

async fn scrape(app: &TestApp) -> String {
    let response = app.client.get(format!("{}/metrics", app.metrics_address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|line| line.starts_with(prefix)).and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    }
    app.get("/no-such-route/123").await;
    let text = scrape(&app).await;
    let healthz = r#"dailyreps_http_requests_total{method="GET",route="/healthz",status="200"}"#;
    assert_eq!(sample(&text, healthz), Some(3.0), "{text}");
    let unmatched = r#"dailyreps_http_requests_total{method="GET",route="unmatched",status="404"}"#;
    assert_eq!(sample(&text, unmatched), Some(1.0), "{text}");
    assert!(!text.contains("/no-such-route/123"), "concrete paths must not become labels");
    let count = r#"dailyreps_http_request_duration_seconds_count{method="GET",route="/healthz"}"#;
    assert_eq!(sample(&text, count), Some(3.0), "{text}");
    assert!(sample(&text, r#"dailyreps_db_pool_connections{state="in_use"}"#).is_some(), "{text}");
    assert!(sample(&text, r#"dailyreps_db_pool_connections{state="idle"}"#).is_some(), "{text}");
}

#[tokio::test]
async fn made_up_methods_share_one_label_so_clients_cannot_grow_the_metrics() {
    let app = TestApp::spawn().await;
    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        let response = app.client.request(method, format!("{}/healthz", app.address)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    let text = scrape(&app).await;
    assert!(!text.contains("MADEUP"), "a client's method became a label: {text}");
    let other = r#"dailyreps_http_requests_total{method="other",route="/healthz",status="405"}"#;
    assert_eq!(sample(&text, other), Some(50.0), "{text}");
}

#[tokio::test]
async fn metrics_are_not_served_on_the_public_port() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/metrics").await.status(), StatusCode::NOT_FOUND);
}
