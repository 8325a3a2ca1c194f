//! The layer in front of `/api/*`: per-IP rate limit, the body read within its limit and the
//! memory budget, and the app signature checked over the raw bytes.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::extract::client_ip;
use super::state::AppState;
use crate::signature::{self, Received};

/// Bodies of routes other than the upload are empty or `{}`: this is plenty.
const SMALL_BODY_LIMIT: usize = 64 * 1024;
/// A gzip body of a tiny document is a little larger than the document.
const GZIP_OVERHEAD: usize = 64 * 1024;
/// Routes that need no signature: the OpenAPI document (CORS preflight never gets here).
const UNSIGNED: &[&str] = &["/api/openapi.json"];

/// Middleware for every `/api/*` route.
pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    if request.method() == Method::OPTIONS || UNSIGNED.contains(&request.uri().path()) {
        return Ok(next.run(request).await);
    }
    let (parts, body) = request.into_parts();
    state.rate_limits.request_from(client_ip(&parts))?;

    let limits = &state.settings.limits;
    let limit = if parts.method == Method::POST && parts.uri.path() == "/api/backup" {
        limits.max_backup_bytes + GZIP_OVERHEAD
    } else {
        SMALL_BODY_LIMIT
    };
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::PayloadTooLarge { limit: limits.max_backup_bytes.min(limit) });
    }
    // Reserve before reading: a chunked body of unknown length is charged the most it may be.
    let _reservation = state.budget.try_reserve(declared.unwrap_or(limit)).ok_or_else(ApiError::busy)?;
    let read = tokio::time::timeout(limits.body_timeout, axum::body::to_bytes(body, limit));
    let raw = read.await.map_err(|_| ApiError::RequestTimeout)?.map_err(|error| {
        if std::error::Error::source(&error).is_some_and(|source| source.is::<http_body_util::LengthLimitError>()) {
            ApiError::PayloadTooLarge { limit: limits.max_backup_bytes.min(limit) }
        } else {
            ApiError::InvalidRequest("the request body could not be read".into())
        }
    })?;

    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let received = Received {
        timestamp: header(signature::TIMESTAMP_HEADER),
        signature: header(signature::SIGNATURE_HEADER),
        method: parts.method.as_str(),
        path_and_query: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        body_sha256: &signature::sha256(&raw),
    };
    signature::verify(&state.settings.signing_secrets, &received, time::OffsetDateTime::now_utc().unix_timestamp())?;

    // A handler stuck behind a stalled database gives up rather than hanging the client.
    tokio::time::timeout(limits.request_timeout, next.run(Request::from_parts(parts, Body::from(raw))))
        .await
        .map_err(|_| ApiError::Unavailable("the server could not answer in time; retry shortly".into()))
}
