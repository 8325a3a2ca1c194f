//! The app signature, checked over the raw body bytes (which the body layer has already read
//! within their limit).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::state::AppState;
use crate::encoding::sha256;
use crate::signature::{self, Received};

/// SHA-256 of the raw request body, as the signature check computed it: a handler whose
/// document is the raw body (not gzip) takes it from here instead of hashing the body again.
#[derive(Debug, Clone, Copy)]
pub struct BodySha256(pub [u8; 32]);

/// Middleware: refuses a request whose signature is missing, wrong or stale.
pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    if request.method() == Method::OPTIONS {
        return Ok(next.run(request).await);
    }
    let (parts, body) = request.into_parts();
    // One buffer already, bounded by the body layer: taking it whole copies nothing.
    let raw = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|_| ApiError::InvalidRequest("the request body could not be read".into()))?;
    let body_sha256 = sha256(&raw);
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
    Ok(next.run(request).await)
}
