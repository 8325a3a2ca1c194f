//! Extractors: the authenticated user and the client's IP address.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use uuid::Uuid;

use super::error::ApiError;
use super::state::AppState;
use crate::db;
use crate::token;

/// The hash of a well-formed bearer token, not yet looked up. Routes that find the user in the
/// same statement as their data take this rather than [`AuthUser`], and then answer 401 for an
/// unknown token and count the request against the user's rate themselves.
#[derive(Debug, Clone, Copy)]
pub struct BearerToken(pub [u8; 32]);

impl<S: Send + Sync> FromRequestParts<S> for BearerToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        token::hash_presented(presented.trim()).map(Self).ok_or(ApiError::Unauthorized)
    }
}

/// The user a valid bearer token belongs to; also counts the request against the user's rate.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    /// The account id.
    pub id: Uuid,
    /// When the account was created.
    pub created_at: time::OffsetDateTime,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let BearerToken(hash) = BearerToken::from_request_parts(parts, state).await?;
        let user = db::users::find_by_token_hash(&state.pool, &hash).await?.ok_or(ApiError::Unauthorized)?;
        state.rate_limits.request_by(user.id)?;
        Ok(Self { id: user.id, created_at: user.created_at })
    }
}

/// The client's address: Fly's `Fly-Client-IP` when present, else the peer's.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(client_ip(parts)))
    }
}

/// The client's address, for rate limits.
pub fn client_ip(parts: &Parts) -> IpAddr {
    let forwarded =
        parts.headers.get("fly-client-ip").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    forwarded
        .or_else(|| parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip()))
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}
