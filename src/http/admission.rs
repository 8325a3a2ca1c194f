//! The first step of every `/api/*` request, before any body is read: the client's rate, then
//! the caller's bearer token and the caller's rate. One path for every route: extractors take
//! the [`Caller`] this leaves, and never count a request again.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;

use super::client_ip::client_ip;
use super::error::ApiError;
use super::state::AppState;
use crate::db::users::User;
use crate::token;

/// Who is calling, as far as is known: the hash of a well-formed bearer token, and the account
/// once it has been looked up (before the body, for routes that take a document).
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller {
    /// SHA-256 of the bearer token, when one was sent and is well-formed.
    pub token: Option<[u8; 32]>,
    /// The token's account, when already looked up.
    pub user: Option<User>,
}

/// Middleware: per-client and per-token rate limits; leaves the [`Caller`] for what follows.
/// The per-token limit is counted before the token is looked up, so a client over its rate
/// hears 429 without a database query (and before an unknown token would hear 401).
pub async fn middleware(State(state): State<AppState>, mut request: Request, next: Next) -> Result<Response, ApiError> {
    if request.method() == Method::OPTIONS {
        return Ok(next.run(request).await);
    }
    let (parts, body) = request.into_parts();
    state.rate_limits.request_from(client_ip(&parts))?;
    request = Request::from_parts(parts, body);
    let token = bearer_token(request.headers());
    if let Some(token) = &token {
        state.rate_limits.request_by(token)?;
    }
    request.extensions_mut().insert(Caller { token, user: None });
    Ok(next.run(request).await)
}

/// The hash of the `Authorization: Bearer drb_…` token, if one is there and well-formed.
fn bearer_token(headers: &HeaderMap) -> Option<[u8; 32]> {
    let presented = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")?;
    token::hash_presented(presented.trim())
}
