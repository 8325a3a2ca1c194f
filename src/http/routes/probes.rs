//! `/healthz` (the process is up) and `/readyz` (the database answers and has our schema).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::{self, functions, migrations};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::readiness::Readiness;
use crate::http::state::AppState;

/// The health routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz))
}

/// The process is up.
#[derive(Serialize, ToSchema)]
pub struct Health {
    status: &'static str,
    /// The server's version.
    version: &'static str,
}

/// Liveness: answers without touching the database.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "up", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", version: env!("CARGO_PKG_VERSION") })
}

/// The database answers and has every migration this server knows.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    status: &'static str,
    /// The newest migration applied.
    schema_version: i64,
    /// The newest migration this binary knows: lower than `schema_version` during a deploy,
    /// while the database's newer migrations are all ones this binary may serve on.
    binary_schema_version: i64,
    /// Whether this machine's last upload found the database's volume full: uploads are then
    /// answered 503 until an operator makes room, while downloads still work (so the machine
    /// stays ready).
    storage_full: bool,
}

/// Readiness: the database answers and its schema is at least this binary's.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "ready", body = Ready),
        (status = 503, description = "the database is unreachable or its schema is behind", body = ErrorBody),
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    let schema_version = state.readiness.get_or_check(check(&state)).await.map_err(ApiError::Unavailable)?;
    let storage_full = state.backups.storage_full();
    let binary_schema_version = migrations::latest_known_version();
    Ok(Json(Ready { status: "ready", schema_version, binary_schema_version, storage_full }))
}

/// Asks the database: the newest schema version, or why this server cannot serve.
async fn check(state: &AppState) -> Readiness {
    let known = migrations::latest_known_version();
    let status = tokio::time::timeout(state.readiness_timeout, async {
        let mut conn = state.pool.acquire().await?;
        let status = migrations::status(&mut conn).await?;
        let newer: Vec<i64> = status.applied.iter().map(|a| a.version).filter(|v| *v > known).collect();
        let oldest = if newer.is_empty() { None } else { migrations::oldest_compatible(&mut conn, &newer).await? };
        let outdated = if status.pending.is_empty() { functions::outdated(&mut conn).await? } else { Vec::new() };
        Ok::<_, db::Error>((status, newer, oldest, outdated))
    })
    .await
    .map_err(|_| "database unreachable: no answer in time".to_owned())?
    .map_err(|error| {
        tracing::warn!(error = %error, "readiness check failed");
        "database unreachable".to_owned()
    })?;
    let (status, newer, oldest, outdated) = status;
    if !status.pending.is_empty() {
        let versions: Vec<String> = status.pending.iter().map(|p| p.version.to_string()).collect();
        return Err(format!(
            "database schema is behind: migrations {} are not applied; run `migrate`",
            versions.join(", ")
        ));
    }
    if !outdated.is_empty() {
        return Err(format!(
            "the database lacks this binary's SQL functions ({}), or has another text of them; run `migrate`",
            outdated.join(", ")
        ));
    }
    let schema_version = status.applied.iter().map(|a| a.version).max().unwrap_or(0);
    // A newer schema (a deploy in progress) is fine only while this binary is as new as every
    // newer migration says it must be.
    if !newer.is_empty() && oldest.is_none_or(|oldest| oldest > known) {
        let needs = oldest.map_or_else(|| "an unknown".to_owned(), |oldest| oldest.to_string());
        return Err(format!(
            "database schema {schema_version} is newer than this binary's ({known}) and needs a binary of \
             schema {needs} or later: replace this machine with the new release"
        ));
    }
    Ok(schema_version)
}
