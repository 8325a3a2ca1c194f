//! Extractors: the caller's token and account.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use uuid::Uuid;

use super::admission::Caller;
use super::error::ApiError;
use super::state::AppState;
use crate::db;

/// The hash of the caller's well-formed bearer token, not yet looked up. Routes that find the
/// user in the same statement as their data take this rather than [`AuthUser`], and answer 401
/// themselves when no user has it.
#[derive(Debug, Clone, Copy)]
pub struct BearerToken(pub [u8; 32]);

impl<S: Send + Sync> FromRequestParts<S> for BearerToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        caller(parts).token.map(Self).ok_or(ApiError::Unauthorized)
    }
}

/// The user a valid bearer token belongs to.
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
        let caller = caller(parts);
        let user = match caller.user {
            // Looked up before the body was read.
            Some(user) => user,
            None => {
                let token = caller.token.ok_or(ApiError::Unauthorized)?;
                db::users::find_by_token_hash(&state.pool, &token).await?.ok_or(ApiError::Unauthorized)?
            }
        };
        Ok(Self { id: user.id, created_at: user.created_at })
    }
}

/// What admission found of the caller (nothing, outside the `/api` pipeline).
fn caller(parts: &Parts) -> Caller {
    parts.extensions.get::<Caller>().copied().unwrap_or_default()
}
