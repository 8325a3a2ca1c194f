//! `/healthz` (the process is up) and `/readyz` (the database answers and has our schema).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::db::migrations;
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// The health routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
}

async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", version: env!("CARGO_PKG_VERSION") })
}

#[derive(Serialize)]
struct Ready {
    status: &'static str,
    schema_version: i64,
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    let status = tokio::time::timeout(state.readiness_timeout, async {
        let mut conn = state.pool.acquire().await?;
        migrations::status(&mut conn).await
    })
    .await
    .map_err(|_| ApiError::Unavailable("database unreachable: no answer in time".into()))?
    .map_err(|error| {
        tracing::warn!(error = %error, "readiness check failed");
        ApiError::Unavailable("database unreachable".into())
    })?;
    if !status.pending.is_empty() {
        let versions: Vec<String> = status.pending.iter().map(|p| p.version.to_string()).collect();
        return Err(ApiError::Unavailable(format!(
            "database schema is behind: migrations {} are not applied; run `migrate`",
            versions.join(", ")
        )));
    }
    let schema_version = status.applied.iter().map(|a| a.version).max().unwrap_or(0);
    Ok(Json(Ready { status: "ready", schema_version }))
}
