//! The layer in front of `/api/*`: per-IP rate limit, the body read within its limit and the
//! memory budget, and the app signature checked over the raw bytes.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

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

/// SHA-256 of the raw request body, as the signature check computed it: a handler whose
/// document is the raw body (not gzip) takes it from here instead of hashing the body again.
#[derive(Debug, Clone, Copy)]
pub struct BodySha256(pub [u8; 32]);

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
    let Some(_reservation) = state.budget.try_reserve(declared.unwrap_or(limit)) else {
        // Read the body and drop it as it comes, so the client hears the 503 rather than a
        // connection cut while it is still sending.
        let _ = tokio::time::timeout(limits.body_timeout, discard_body(body, limit)).await;
        return Err(ApiError::busy());
    };
    let too_large = ApiError::PayloadTooLarge { limit: limits.max_backup_bytes.min(limit) };
    let read = tokio::time::timeout(limits.body_timeout, read_body(body, limit, declared));
    let raw = read.await.map_err(|_| ApiError::RequestTimeout)?.map_err(|error| match error {
        ReadError::TooLarge => too_large,
        ReadError::Broken => ApiError::InvalidRequest("the request body could not be read".into()),
    })?;

    let body_sha256 = signature::sha256(&raw);
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let received = Received {
        timestamp: header(signature::TIMESTAMP_HEADER),
        signature: header(signature::SIGNATURE_HEADER),
        method: parts.method.as_str(),
        path_and_query: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        body_sha256: &body_sha256,
    };
    signature::verify(&state.settings.signing_secrets, &received, time::OffsetDateTime::now_utc().unix_timestamp())?;

    let mut request = Request::from_parts(parts, Body::from(raw));
    request.extensions_mut().insert(BodySha256(body_sha256));
    // A handler stuck behind a stalled database gives up rather than hanging the client.
    tokio::time::timeout(limits.request_timeout, next.run(request))
        .await
        .map_err(|_| ApiError::Unavailable("the server could not answer in time; retry shortly".into()))
}

enum ReadError {
    TooLarge,
    Broken,
}

/// Reads the body into one buffer sized by its Content-Length, so a large upload is held once
/// (collecting chunks and then joining them would briefly hold it twice).
async fn read_body(body: Body, limit: usize, declared: Option<usize>) -> Result<Bytes, ReadError> {
    let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| ReadError::Broken)?;
        if buffer.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// Reads up to `limit` bytes of the body, keeping none of them.
async fn discard_body(body: Body, limit: usize) {
    let mut chunks = body.into_data_stream();
    let mut seen = 0;
    while let Some(Ok(chunk)) = chunks.next().await {
        seen += chunk.len();
        if seen > limit {
            return;
        }
    }
}
