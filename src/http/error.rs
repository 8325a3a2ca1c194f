//! The API's one error type. Its `IntoResponse` is the only place a status is chosen.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::rate_limit::RetryAfter;
use super::request_id;
use crate::document::DocumentError;
use crate::signature::SignatureError;
use crate::{backups, db};

/// Seconds a client is told to wait before retrying a 503.
const UNAVAILABLE_RETRY_AFTER_SECONDS: u64 = 5;

/// Seconds a client is told to wait when storage is full: an operator has to act first.
const STORAGE_FULL_RETRY_AFTER_SECONDS: u64 = 300;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not parseable JSON.
    #[error("{0}")]
    InvalidJson(String),
    /// A bad query parameter, header value or id.
    #[error("{0}")]
    InvalidRequest(String),
    /// The app signature is missing, wrong or stale.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The bearer token is missing, unknown or revoked.
    #[error("a valid bearer token is required (Authorization: Bearer drb_…)")]
    Unauthorized,
    /// No such route or resource (also another user's resource: existence is not leaked).
    #[error("no such route or resource")]
    NotFound,
    /// The user has no backups yet.
    #[error("this account has no backups yet")]
    NoBackups,
    /// The route exists but not with this method.
    #[error("this method is not allowed on this route")]
    MethodNotAllowed,
    /// The same `Idempotency-Key` came with another body.
    #[error("this Idempotency-Key was already used with a different body")]
    IdempotencyConflict,
    /// The body, decoded, is over the limit.
    #[error("the body is larger than {limit} bytes (after decoding)")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Wrong `Content-Type` or `Content-Encoding`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Valid JSON, but not an object.
    #[error("a backup must be a JSON object")]
    InvalidBackup,
    /// The client took too long to send the body.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// Too many requests; retry after the given seconds.
    #[error("too many requests; retry after {0} seconds")]
    RateLimited(u64),
    /// The server cannot serve the request now: at its memory budget, or out of time.
    #[error("{0}")]
    Unavailable(String),
    /// The database cannot be reached, is going away, or lacks this binary's schema; logged with its cause.
    #[error("the database is unavailable; retry shortly")]
    DatabaseUnavailable(db::Error),
    /// The database's volume is full (SQLSTATE 53100), or storage is held back at the headroom
    /// kept before it: nothing can be stored until an operator makes room.
    #[error("the server's storage is full; retry later")]
    StorageFull,
    /// A bug or an unexpected failure; logged with its cause, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) | Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::Signature(_) | Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound | Self::NoBackups => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::IdempotencyConflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::InvalidBackup => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::DatabaseUnavailable(_) | Self::StorageFull => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidRequest(_) => "invalid_request",
            Self::Signature(SignatureError::Missing) => "missing_signature",
            Self::Signature(SignatureError::Bad) => "bad_signature",
            Self::Signature(SignatureError::Stale) => "stale_signature",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::NoBackups => "no_backups",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::InvalidBackup => "invalid_backup",
            Self::RequestTimeout => "request_timeout",
            Self::RateLimited(_) => "rate_limited",
            Self::Unavailable(_) | Self::DatabaseUnavailable(_) | Self::StorageFull => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited(seconds) => Some(*seconds),
            Self::Unavailable(_) | Self::DatabaseUnavailable(_) => Some(UNAVAILABLE_RETRY_AFTER_SECONDS),
            Self::StorageFull => Some(STORAGE_FULL_RETRY_AFTER_SECONDS),
            _ => None,
        }
    }

    /// The server is at its memory budget.
    pub fn busy() -> Self {
        Self::Unavailable("the server is busy; retry shortly".into())
    }
}

/// The error body: `{"error": {"code", "message", "request_id"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable, snake_case (e.g. `bad_signature`).
    code: String,
    /// For people.
    message: String,
    /// The request's `X-Request-Id`.
    request_id: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The only place errors are logged; the request's span adds its id to the line.
        let message = match &self {
            Self::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
                "internal error; quote the request id when reporting it".to_owned()
            }
            Self::DatabaseUnavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                self.to_string()
            }
            Self::StorageFull => {
                tracing::error!("the database's storage is full: uploads are refused until room is made");
                self.to_string()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message,
                request_id: request_id::current().unwrap_or_default(),
            },
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(seconds) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

impl From<DocumentError> for ApiError {
    fn from(error: DocumentError) -> Self {
        match error {
            DocumentError::TooLarge { limit } => Self::PayloadTooLarge { limit },
            DocumentError::BadGzip => Self::InvalidRequest(error.to_string()),
            DocumentError::InvalidJson(_) => Self::InvalidJson(error.to_string()),
            DocumentError::NotAnObject => Self::InvalidBackup,
        }
    }
}

impl From<backups::Error> for ApiError {
    fn from(error: backups::Error) -> Self {
        match error {
            backups::Error::Busy => Self::busy(),
            backups::Error::Document(error) => error.into(),
            backups::Error::KeyConflict => Self::IdempotencyConflict,
            backups::Error::NoUser => Self::Unauthorized,
            // Logged with the backup's id; the client hears only that it is our fault.
            backups::Error::Damaged(_) => Self::Internal(error.into()),
            backups::Error::Database(error) => error.into(),
        }
    }
}

impl From<RetryAfter> for ApiError {
    fn from(RetryAfter(seconds): RetryAfter) -> Self {
        Self::RateLimited(seconds)
    }
}

impl From<db::Error> for ApiError {
    fn from(error: db::Error) -> Self {
        match error {
            db::Error::StorageFull(_) => Self::StorageFull,
            // A database without this binary's schema (a deploy not finished, a restore not
            // migrated) is one this machine cannot serve yet; `/readyz` says the same.
            db::Error::Unavailable(_) | db::Error::SchemaMissing(_) => Self::DatabaseUnavailable(error),
            db::Error::NotFound => Self::NotFound,
            // Every conflict a request can cause is answered in SQL (idempotency keys, dedupe):
            // one reaching here is a bug.
            db::Error::Conflict(_) | db::Error::Other(_) => {
                Self::Internal(anyhow::Error::new(error).context("database error"))
            }
        }
    }
}

/// The router's fallback: unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// The router's answer to a known route with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
