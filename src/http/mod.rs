//! The HTTP layer: router, middleware, errors and the server loop.

pub mod error;
pub mod metrics;
pub mod observe;
pub mod request_id;
pub mod routes;
pub mod state;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use axum::Router;
use axum::middleware;
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::state::AppState;

/// The public API's router with its layer stack.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::health::router())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        // Layers run outside-in from the bottom: the request id wraps everything, so even the
        // per-request log line carries it.
        .layer(middleware::from_fn_with_state(state.clone(), observe::middleware))
        .layer(middleware::from_fn(request_id::middleware))
        .with_state(state)
}

/// Serves the API on `api` and metrics on `metrics` until `shutdown` resolves, then stops
/// accepting and returns once in-flight requests have finished.
pub async fn serve(
    api: TcpListener,
    metrics: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop, stopped) = watch::channel(());
    let metrics_server = axum::serve(metrics, self::metrics::router(state.clone()))
        .with_graceful_shutdown(wait(stopped.clone()))
        .into_future();
    let api_server = axum::serve(api, router(state).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(wait(stopped))
        .into_future();
    let relay = async move {
        shutdown.await;
        drop(stop);
    };
    let (api_result, metrics_result, ()) = tokio::join!(api_server, metrics_server, relay);
    api_result.and(metrics_result)
}

/// Resolves when the sender is dropped.
async fn wait(mut stopped: watch::Receiver<()>) {
    while stopped.changed().await.is_ok() {}
}
