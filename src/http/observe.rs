//! One log line and one metrics sample per request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::request_id;
use super::state::AppState;

/// Route label for requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// Middleware: times the request, then logs and counts it by route template and status.
pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map_or(UNMATCHED, MatchedPath::as_str).to_owned();
    let response = next.run(request).await;
    let latency = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.observe_request(&method, &route, status, latency);
    tracing::info!(
        method = %method,
        route = %route,
        status,
        latency_ms = latency.as_secs_f64() * 1000.0,
        request_id = request_id::current().unwrap_or_default(),
        "request"
    );
    response
}
