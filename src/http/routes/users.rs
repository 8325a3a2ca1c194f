//! Anonymous accounts: register, look at, delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::db;
use crate::document::{self, DocumentError};
use crate::http::body::BodyLimit;
use crate::http::client_ip::ClientIp;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::AuthUser;
use crate::http::pipeline;
use crate::http::state::AppState;
use crate::token;

/// The account routes; their bodies are small.
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    pipeline::signed(
        OpenApiRouter::new().routes(routes!(register)).routes(routes!(me, delete_me)),
        state,
        BodyLimit::Small,
    )
}

/// A new account. The token is shown only here: keep it (the app keeps it in the Keychain).
#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    user_id: Uuid,
    /// `drb_` + base64url of 32 random bytes; send it as `Authorization: Bearer <token>`.
    token: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

/// Creates an anonymous account.
#[utoipa::path(
    post, path = "/api/users", tag = "users",
    request_body(content = Option<Object>, description = "empty, `null`, or a JSON object (no options yet)", content_type = "application/json"),
    responses(
        (status = 201, description = "created", body = Registered),
        (status = "4XX", description = "refused", body = ErrorBody),
        (status = "5XX", description = "unavailable", body = ErrorBody),
    ),
    security(("signature" = [], "timestamp" = []))
)]
async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: Bytes,
) -> Result<(StatusCode, Json<Registered>), ApiError> {
    // No body at all, or JSON null or an object; whitespace alone is not JSON.
    if !body.is_empty() && body.trim_ascii() != b"null" {
        document::validate(&body).map(drop).map_err(|error| match error {
            DocumentError::NotAnObject => ApiError::InvalidRequest("the body must be empty or a JSON object".into()),
            other => other.into(),
        })?;
    }
    state.rate_limits.register(ip)?;
    let new = token::generate().map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    let user = db::users::create(&state.pool, Uuid::new_v4(), &new.hash).await?;
    tracing::info!(user_id = %user.id, "account created");
    Ok((StatusCode::CREATED, Json(Registered { user_id: user.id, token: new.token, created_at: user.created_at })))
}

/// An account and its backups in aggregate.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    user_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    backup_count: i64,
    total_bytes: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    latest_backup_at: Option<OffsetDateTime>,
    limits: AccountLimits,
}

/// The limits that apply to this account.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountLimits {
    /// Largest document accepted, in bytes (after gzip decoding).
    max_backup_bytes: usize,
    /// Backups kept; older ones are deleted as new ones arrive.
    max_backups_kept: u32,
}

/// The caller's account.
#[utoipa::path(
    get, path = "/api/users/me", tag = "users",
    responses(
        (status = 200, description = "the account", body = Me),
        (status = "4XX", description = "refused", body = ErrorBody),
        (status = "5XX", description = "unavailable", body = ErrorBody),
    ),
    security(("bearer" = [], "signature" = [], "timestamp" = []))
)]
async fn me(State(state): State<AppState>, user: AuthUser) -> Result<Json<Me>, ApiError> {
    let summary = db::users::summary(&state.pool, user.id).await?;
    let limits = &state.settings.limits;
    Ok(Json(Me {
        user_id: user.id,
        created_at: user.created_at,
        backup_count: summary.backup_count,
        total_bytes: summary.total_bytes,
        latest_backup_at: summary.latest_backup_at,
        limits: AccountLimits { max_backup_bytes: limits.max_backup_bytes, max_backups_kept: limits.max_backups_kept },
    }))
}

/// Deletes the account, its backups, idempotency records and token, at once.
#[utoipa::path(
    delete, path = "/api/users/me", tag = "users",
    responses(
        (status = 204, description = "deleted; the token no longer works"),
        (status = "4XX", description = "refused", body = ErrorBody),
        (status = "5XX", description = "unavailable", body = ErrorBody),
    ),
    security(("bearer" = [], "signature" = [], "timestamp" = []))
)]
async fn delete_me(State(state): State<AppState>, user: AuthUser) -> Result<StatusCode, ApiError> {
    if !db::users::delete(&state.pool, user.id).await? {
        // Deleted by a concurrent request: the token is already dead.
        return Err(ApiError::Unauthorized);
    }
    tracing::info!(user_id = %user.id, "account deleted");
    Ok(StatusCode::NO_CONTENT)
}
