//! The OpenAPI document is generated from the router: every route served is in it, and
//! everything in it is served.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::TestApp;

/// The SPEC's routes.
const SPEC_ROUTES: &[(&str, &str)] = &[
    ("post", "/api/users"),
    ("get", "/api/users/me"),
    ("delete", "/api/users/me"),
    ("post", "/api/backup"),
    ("get", "/api/backups"),
    ("get", "/api/backups/latest"),
    ("get", "/api/backups/{id}"),
    ("delete", "/api/backups/{id}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
];

async fn document(app: &TestApp) -> Value {
    let response = app.get("/api/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn documented(doc: &Value) -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.push((method.clone(), path.clone()));
        }
    }
    routes
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_every_spec_route() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let routes = documented(&doc);
    for (method, path) in SPEC_ROUTES {
        assert!(routes.contains(&((*method).to_owned(), (*path).to_owned())), "{method} {path} is not documented");
    }
    for scheme in ["bearer", "signature", "timestamp"] {
        assert!(doc["components"]["securitySchemes"][scheme].is_object(), "{scheme}");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    for (method, path) in documented(&doc) {
        let concrete = path.replace("{id}", "5f0c3c4e-0000-4000-8000-000000000000");
        let method: Method = method.to_uppercase().parse().unwrap();
        // Unsigned: a served /api route answers 401, a missing one 404 or 405.
        let response = app.client.request(method.clone(), format!("{}{concrete}", app.address)).send().await.unwrap();
        let status = response.status();
        assert!(
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {status}"
        );
    }
}

#[tokio::test]
async fn the_served_routes_are_all_documented() {
    // Routes the router serves, found by probing: anything not 404 is a route. The probe list is
    // every SPEC route plus likely mistakes; a route added without documentation fails here.
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let routes = documented(&doc);
    let extra = ["/healthz", "/readyz", "/api/user", "/api/backups/latest/x", "/metrics", "/api"];
    for probe in crate::common::API_PATHS.iter().chain(&extra) {
        for method in [Method::GET, Method::POST, Method::DELETE, Method::PUT, Method::PATCH] {
            let status =
                app.client.request(method.clone(), format!("{}{probe}", app.address)).send().await.unwrap().status();
            if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
                continue;
            }
            let template = if probe.starts_with("/api/backups/5f0c") { "/api/backups/{id}" } else { probe };
            let key = (method.as_str().to_lowercase(), template.to_owned());
            assert!(routes.contains(&key), "{method} {probe} is served ({status}) but not documented");
        }
    }
}

#[tokio::test]
async fn path_parameters_are_in_their_path_and_optional_parameters_are_never_null() {
    let doc = document(&TestApp::spawn().await).await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap();
                let place = format!("{method} {path} {name}");
                if parameter["in"] == "path" {
                    assert!(path.contains(&format!("{{{name}}}")), "{place} is documented in a path that lacks it");
                }
                // A header or query string cannot carry JSON null; a schema allowing it
                // promises clients something no request can send.
                let types = &parameter["schema"]["type"];
                assert!(!types.as_array().is_some_and(|t| t.contains(&"null".into())), "{place}: {types}");
            }
        }
    }
    let list = &doc["paths"]["/api/backups"]["get"]["parameters"];
    let places: Vec<&str> = list.as_array().unwrap().iter().map(|p| p["in"].as_str().unwrap()).collect();
    assert_eq!(places, ["query", "query"], "limit and cursor are query parameters");
}
