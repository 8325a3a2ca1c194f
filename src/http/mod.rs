//! The HTTP layer: router, middleware, errors and the server loop.

pub mod admission;
pub mod body;
pub mod client_ip;
pub mod connections;
pub mod deadline;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod observe;
pub mod pipeline;
pub mod rate_limit;
pub mod readiness;
pub mod request_id;
pub mod routes;
pub mod signed;
pub mod state;

use std::future::Future;
use std::io;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::get;
use axum::{Json, Router, middleware};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use self::state::AppState;
use crate::jobs;
use crate::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// The public API's router with its layer stack.
pub fn router(state: AppState) -> Router {
    // Each route module puts its groups behind the signed pipeline (see `pipeline`); admission
    // comes first for all of them. Bodies are read by the pipeline, so axum's own limit is off.
    let api = OpenApiRouter::new()
        .merge(routes::users::router(&state))
        .merge(routes::backups::router(&state))
        .layer(middleware::from_fn_with_state(state.clone(), admission::middleware))
        .layer(DefaultBodyLimit::disable());
    let (routes, document) = OpenApiRouter::with_openapi(routes::openapi::ApiDoc::openapi())
        .merge(routes::probes::router())
        .merge(api)
        .split_for_parts();
    let document = Json(document);
    routes
        .route("/api/openapi.json", get(move || std::future::ready(document.clone())))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        // Layers run outside-in from the bottom: the request id wraps everything, so even the
        // per-request log line carries it.
        .layer(CompressionLayer::new())
        .layer(cors(&state))
        .layer(middleware::from_fn_with_state(state.clone(), observe::middleware))
        .layer(middleware::from_fn(request_id::middleware))
        .with_state(state)
}

/// CORS for exactly the configured origins; with none, no cross-origin headers at all.
fn cors(state: &AppState) -> CorsLayer {
    let origins: Vec<HeaderValue> =
        state.settings.allowed_origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()).collect();
    if origins.is_empty() {
        return CorsLayer::new();
    }
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::IF_NONE_MATCH,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static(TIMESTAMP_HEADER),
            HeaderName::from_static(SIGNATURE_HEADER),
            request_id::X_REQUEST_ID.clone(),
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static("x-backup-id"),
            HeaderName::from_static("x-backup-created-at"),
            HeaderName::from_static("idempotent-replayed"),
            request_id::X_REQUEST_ID.clone(),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// Serves the API on `api` and metrics on `metrics`, and runs the upkeep [`jobs`], until
/// `shutdown` resolves; then stops accepting and returns once in-flight requests have finished.
pub async fn serve(
    api: TcpListener,
    metrics: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop, stopped) = watch::channel(());
    let scraped = self::metrics::Scraped {
        metrics: Arc::clone(&state.metrics),
        pool: state.pool.clone(),
        budget: state.budget.clone(),
    };
    let metrics_server = axum::serve(metrics, self::metrics::router(scraped))
        .with_graceful_shutdown(wait(stopped.clone()))
        .into_future();
    let (registry, pool, refresh_stop) = (Arc::clone(&state.metrics), state.pool.clone(), wait(stopped.clone()));
    let refresh = async move { registry.refresh(&pool, refresh_stop).await };
    let jobs = jobs::run(state.pool.clone(), wait(stopped.clone()));
    let limits = state.settings.connections;
    let api_server = connections::serve(api, router(state), limits, wait(stopped));
    let relay = async move {
        shutdown.await;
        drop(stop);
    };
    let (api_result, metrics_result, (), (), ()) = tokio::join!(api_server, metrics_server, relay, refresh, jobs);
    api_result.and(metrics_result)
}

/// Resolves when the sender is dropped.
async fn wait(mut stopped: watch::Receiver<()>) {
    while stopped.changed().await.is_ok() {}
}
