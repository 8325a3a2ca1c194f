//! Backups: upload, list, restore (latest or by id), delete.

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::backups::idempotency::IdempotencyKey;
use crate::backups::{After, BackupMeta, Download, NewUpload, Receipt, Which};
use crate::cursor;
use crate::document::Encoding;
use crate::encoding::hex;
use crate::http::body::BodyLimit;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{AuthUser, BearerToken};
use crate::http::pipeline;
use crate::http::signed::BodySha256;
use crate::http::state::AppState;

/// The backup routes: the upload takes a document, the others small bodies.
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    let uploads = OpenApiRouter::new().routes(routes!(upload));
    let others = OpenApiRouter::new().routes(routes!(list)).routes(routes!(latest)).routes(routes!(by_id, delete));
    pipeline::signed(uploads, state, BodyLimit::Document).merge(pipeline::signed(others, state, BodyLimit::Small))
}

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

/// A stored backup, as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupInfo {
    backup_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// The document's length in bytes.
    size_bytes: i64,
    /// Hex SHA-256 of the document (also its ETag).
    sha256: String,
}

impl From<BackupMeta> for BackupInfo {
    fn from(meta: BackupMeta) -> Self {
        Self {
            backup_id: meta.id,
            created_at: meta.created_at,
            size_bytes: meta.size_bytes.into(),
            sha256: hex(&meta.sha256),
        }
    }
}

/// The answer to an upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uploaded {
    #[serde(flatten)]
    backup: BackupInfo,
    /// True when the document equalled the latest backup and that one is answered instead.
    deduplicated: bool,
}

fn upload_response(receipt: Receipt) -> Response {
    let status = if receipt.deduplicated { StatusCode::OK } else { StatusCode::CREATED };
    let location = format!("/api/backups/{}", receipt.backup.id);
    let body = Uploaded { backup: receipt.backup.into(), deduplicated: receipt.deduplicated };
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    if status == StatusCode::CREATED {
        headers.insert(header::LOCATION, HeaderValue::try_from(location).expect("a path is a valid header"));
    }
    if receipt.replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Uploads a backup document (a JSON object), optionally gzip-encoded.
#[utoipa::path(
    post, path = "/api/backup", tag = "backups",
    params((
        "Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1–255 visible ASCII characters; a retry with the same key and body gets the first answer"
    )),
    request_body(content = Object, description = "the backup document", content_type = "application/json"),
    responses(
        (status = 201, description = "stored", body = Uploaded, headers(("Location" = String, description = "/api/backups/<id>"))),
        (status = 200, description = "identical to the latest backup, or a replay of a deduplicated upload", body = Uploaded),
        (status = "4XX", description = "refused", body = ErrorBody),
        (status = "5XX", description = "unavailable", body = ErrorBody),
    ),
    security(("bearer" = [], "signature" = [], "timestamp" = []))
)]
async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    Extension(BodySha256(body_sha256)): Extension<BodySha256>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let key = idempotency_key(&headers)?;
    let upload = NewUpload { body, encoding: content_encoding(&headers)?, body_sha256, idempotency_key: key.as_ref() };
    Ok(upload_response(state.backups.upload(user.id, upload).await?))
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType("Content-Type must be application/json".into()))
    }
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().map(str::trim)) {
        None => Ok(Encoding::Identity),
        Some(Ok(value)) if value.eq_ignore_ascii_case("identity") || value.is_empty() => Ok(Encoding::Identity),
        Some(Ok(value)) if value.eq_ignore_ascii_case("gzip") => Ok(Encoding::Gzip),
        Some(_) => Err(ApiError::UnsupportedMediaType("Content-Encoding must be gzip or identity".into())),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    value
        .to_str()
        .ok()
        .and_then(IdempotencyKey::parse)
        .map(Some)
        .ok_or_else(|| ApiError::InvalidRequest("Idempotency-Key must be 1–255 visible ASCII characters".into()))
}

/// A page of backups.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupList {
    /// Newest first.
    backups: Vec<BackupInfo>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// Query of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1–200 (default 50).
    #[param(value_type = Option<u32>, nullable = false, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(nullable = false, pattern = "^[A-Za-z0-9_-]+$")]
    cursor: Option<String>,
}

/// Lists the caller's backups, newest first.
#[utoipa::path(
    get, path = "/api/backups", tag = "backups",
    params(ListParams),
    responses(
        (status = 200, description = "a page", body = BackupList),
        (status = "4XX", description = "refused", body = ErrorBody),
        (status = "5XX", description = "unavailable", body = ErrorBody),
    ),
    security(("bearer" = [], "signature" = [], "timestamp" = []))
)]
async fn list(State(state): State<AppState>, user: AuthUser, uri: Uri) -> Result<Json<BackupList>, ApiError> {
    let Query(params) = Query::<ListParams>::try_from_uri(&uri).map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let limit = match params.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(text) => text
            .parse()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::InvalidRequest(format!("limit must be an integer from 1 to {MAX_PAGE}")))?,
    };
    let after = params
        .cursor
        .as_deref()
        .map(|text| {
            cursor::decode(text).ok_or_else(|| ApiError::InvalidRequest("cursor is not one this server issued".into()))
        })
        .transpose()?;
    let mut page = state.backups.list(user.id, after, i64::from(limit) + 1).await?;
    let next_cursor = if page.len() > limit as usize {
        page.truncate(limit as usize);
        page.last().map(|last| cursor::encode(After { created_at: last.created_at, id: last.id }))
    } else {
        None
    };
    Ok(Json(BackupList { backups: page.into_iter().map(BackupInfo::from).collect(), next_cursor }))
}

/// A backup id from the path.
#[derive(Debug, Clone, Copy)]
pub struct BackupId(Uuid);

impl<S: Send + Sync> FromRequestParts<S> for BackupId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::InvalidRequest("bad backup id".into()))?;
        Uuid::parse_str(&text).map(Self).map_err(|_| ApiError::InvalidRequest("a backup id is a UUID".into()))
    }
}

/// The newest backup's document, byte for byte as uploaded.
#[utoipa::path(
    get, path = "/api/backups/latest", tag = "backups",
    params(("If-None-Match" = Option<String>, Header, nullable = false, description = "an ETag from an earlier answer")),
    responses(
        (status = 200, description = "the document as uploaded", body = Object, content_type = "application/json",
            headers(("ETag" = String), ("X-Backup-Id" = String), ("X-Backup-Created-At" = String))),
        (status = 304, description = "unchanged since the given ETag"),
        (status = 404, description = "`no_backups`: none yet", body = ErrorBody),
        (status = "4XX", description = "refused", body = ErrorBody),
        (status = "5XX", description = "unavailable", body = ErrorBody),
    ),
    security(("bearer" = [], "signature" = [], "timestamp" = []))
)]
async fn latest(State(state): State<AppState>, token: BearerToken, headers: HeaderMap) -> Result<Response, ApiError> {
    let download = state.backups.download(&token.0, Which::Latest).await?.ok_or(ApiError::NoBackups)?;
    document_response(download, &headers)
}

/// One backup's document, byte for byte as uploaded.
#[utoipa::path(
    get, path = "/api/backups/{id}", tag = "backups",
    params(("id" = Uuid, Path, description = "the backup id"), ("If-None-Match" = Option<String>, Header, nullable = false, description = "an ETag from an earlier answer")),
    responses(
        (status = 200, description = "the document as uploaded", body = Object, content_type = "application/json",
            headers(("ETag" = String), ("X-Backup-Id" = String), ("X-Backup-Created-At" = String))),
        (status = 304, description = "unchanged since the given ETag"),
        (status = "4XX", description = "refused, or no such backup of yours", body = ErrorBody),
        (status = "5XX", description = "unavailable", body = ErrorBody),
    ),
    security(("bearer" = [], "signature" = [], "timestamp" = []))
)]
async fn by_id(
    State(state): State<AppState>,
    token: BearerToken,
    BackupId(id): BackupId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let download = state.backups.download(&token.0, Which::Id(id)).await?.ok_or(ApiError::NotFound)?;
    document_response(download, &headers)
}

fn document_response(download: Download, request: &HeaderMap) -> Result<Response, ApiError> {
    let meta = &download.meta;
    let etag = format!("\"{}\"", hex(&meta.sha256));
    let created_at = meta
        .created_at
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| anyhow::anyhow!("formatting a timestamp: {e}"))?;
    let id = meta.id.to_string();
    let mut response = if matches_etag(request, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let length = HeaderValue::from(download.content_length());
        let parts = download.into_parts().map(Ok::<_, std::convert::Infallible>);
        let body = Body::from_stream(futures_util::stream::iter(parts));
        let json = HeaderValue::from_static("application/json");
        ([(header::CONTENT_TYPE, json), (header::CONTENT_LENGTH, length)], body).into_response()
    };
    let headers = response.headers_mut();
    let valid = |text: &str| HeaderValue::try_from(text).expect("hex, UUIDs and RFC 3339 are valid header values");
    headers.insert(header::ETAG, valid(&etag));
    headers.insert("x-backup-id", valid(&id));
    headers.insert("x-backup-created-at", valid(&created_at));
    Ok(response)
}

fn matches_etag(request: &HeaderMap, etag: &str) -> bool {
    request.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |candidate| {
            let candidate = candidate.trim();
            candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
        },
    )
}

/// Deletes one backup.
#[utoipa::path(
    delete, path = "/api/backups/{id}", tag = "backups",
    params(("id" = Uuid, Path, description = "the backup id")),
    responses(
        (status = 204, description = "deleted"),
        (status = "4XX", description = "refused, or no such backup of yours", body = ErrorBody),
        (status = "5XX", description = "unavailable", body = ErrorBody),
    ),
    security(("bearer" = [], "signature" = [], "timestamp" = []))
)]
async fn delete(State(state): State<AppState>, user: AuthUser, BackupId(id): BackupId) -> Result<StatusCode, ApiError> {
    if state.backups.delete(user.id, id).await? { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::NotFound) }
}
