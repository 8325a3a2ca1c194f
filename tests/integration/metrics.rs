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

/// Every `dailyreps_…` name in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("dailyreps_") || word.starts_with("fly_volume_"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_grafana_dashboard_and_alerts_query_only_metrics_the_server_exports() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    // Once the background refresh has run, every family has a sample.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        let text = scrape(&app).await;
        if sample(&text, "dailyreps_database_size_bytes ").is_some_and(|size| size > 0.0) {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "the database gauges never arrived: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let exported: std::collections::BTreeSet<String> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();

    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("dashboard.json")).unwrap()).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} queries nothing", panel["title"]);
        for target in targets {
            let names = metric_names(target["expr"].as_str().unwrap());
            assert!(!names.is_empty(), "{}: {}", panel["title"], target["expr"]);
            queried.extend(names);
        }
    }
    let alerts = std::fs::read_to_string(folder.join("alerts.yaml")).unwrap();
    let alerted = metric_names(&alerts);
    // The volume is Fly's to measure (the whole volume, WAL included, the API running or not);
    // the backup's age is ours.
    assert!(alerted.contains("fly_volume_used_pct"), "{alerted:?}");
    assert!(alerted.contains("dailyreps_database_backup_last_success_timestamp_seconds"), "{alerted:?}");
    assert!(alerts.contains("no alerting"), "alerts.yaml says Fly's Grafana cannot use it");
    queried.extend(alerted);
    for name in &queried {
        // Fly's own volume metrics (Fly's docs: Built-in Metrics), which no process of ours exports.
        if ["fly_volume_used_pct", "fly_volume_size_bytes"].contains(&name.as_str()) {
            continue;
        }
        assert!(exported.contains(name), "{name} is queried but not exported; exported: {exported:?}");
    }
    // And what the operator looks at is there: each family the server exports has a panel.
    for family in [
        "dailyreps_http_requests_total",
        "dailyreps_memory_budget_in_use_bytes",
        "dailyreps_db_pool_connections",
        "dailyreps_database_size_bytes",
        "dailyreps_database_connections",
        "dailyreps_database_backup_last_success_timestamp_seconds",
        "dailyreps_http_request_duration_seconds_bucket",
    ] {
        assert!(queried.contains(family), "no panel shows {family}");
    }
}
