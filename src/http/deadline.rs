//! The last step before a handler: it must answer within the request timeout, so a handler
//! stuck behind a stalled database gives up rather than hanging the client.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::state::AppState;

/// Middleware: 503 with `Retry-After` when the handler takes longer than `REQUEST_TIMEOUT`.
pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    within(&state, next.run(request)).await
}

/// `work`, or 503 with `Retry-After` if it takes longer than `REQUEST_TIMEOUT` (also for the
/// database work the pipeline does before the handler).
pub async fn within<T>(state: &AppState, work: impl Future<Output = T>) -> Result<T, ApiError> {
    tokio::time::timeout(state.settings.limits.request_timeout, work)
        .await
        .map_err(|_| ApiError::Unavailable("the server could not answer in time; retry shortly".into()))
}
