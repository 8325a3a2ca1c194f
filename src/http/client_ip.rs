//! The client's IP address (for rate limits and the budget's per-client share): a function for
//! middleware, and an extractor for routes.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use super::error::ApiError;

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
