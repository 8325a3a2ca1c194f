//! Reading an `/api/*` request's body: within the route's declared limit, within the memory
//! budget (and the client's share of it), and at a minimum rate, before anything looks at it.
//!
//! A route that takes a document also needs its caller's account before the body is read, so a
//! client without a valid token can make the server hold no more than a small body.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::admission::Caller;
use super::client_ip::client_ip;
use super::deadline;
use super::error::ApiError;
use super::state::AppState;
use crate::{db, memory};

/// Every body but a backup document's is empty or a small JSON object.
pub const SMALL_BODY_LIMIT: usize = 64 * 1024;

/// The largest body a route takes, declared where the route is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// [`SMALL_BODY_LIMIT`].
    Small,
    /// A backup document: `MAX_BACKUP_BYTES` decoded, a little more gzip-encoded.
    Document,
}

impl BodyLimit {
    /// The limit in bytes, for documents of at most `max_document` bytes.
    pub fn bytes(self, max_document: usize) -> usize {
        match self {
            Self::Small => SMALL_BODY_LIMIT,
            Self::Document => memory::max_upload_body(max_document),
        }
    }
}

/// After this long, a body must keep arriving at [`MIN_BYTES_PER_SECOND`] on average, or the
/// request is cut with 408 and its share of the budget freed.
const GRACE: Duration = Duration::from_secs(5);
/// The slowest a body may arrive after [`GRACE`]: 8 KiB/s (a 10 MiB document in 21 minutes).
const MIN_BYTES_PER_SECOND: u64 = 8 * 1024;

/// Middleware of a route group whose bodies are at most `limit`.
pub async fn middleware(
    State((state, limit)): State<(AppState, BodyLimit)>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if request.method() == Method::OPTIONS {
        return Ok(next.run(request).await);
    }
    let (mut parts, body) = request.into_parts();
    let limits = &state.settings.limits;
    let max = limit.bytes(limits.max_backup_bytes);
    if limit == BodyLimit::Document {
        admit_account(&state, &mut parts).await?;
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .or_else(|| body.size_hint().exact().and_then(|n| usize::try_from(n).ok()));
    if declared.is_some_and(|length| length > max) {
        return Err(ApiError::PayloadTooLarge { limit: limits.max_backup_bytes.min(max) });
    }
    // Held before reading: a chunked body of unknown length is charged the most it may be.
    let held = match declared {
        Some(0) => None,
        length => match state.budget.hold_body(client_ip(&parts), length.unwrap_or(max)) {
            Some(held) => Some(held),
            None => {
                // A client that waits for `100 Continue` is answered now and never sends the
                // body; any other is read and dropped as it comes, so it hears the 503 rather
                // than a connection cut while it is still sending.
                if !expects_continue(&parts) {
                    let _ = read(body, max, None, limits.body_timeout, Keep::Nothing).await;
                }
                return Err(ApiError::busy());
            }
        },
    };
    let raw = read(body, max, declared, limits.body_timeout, Keep::All).await.map_err(|error| match error {
        ReadError::TooLarge => ApiError::PayloadTooLarge { limit: limits.max_backup_bytes.min(max) },
        ReadError::TooSlow => ApiError::RequestTimeout,
        ReadError::Broken => ApiError::InvalidRequest("the request body could not be read".into()),
    })?;
    let response = next.run(Request::from_parts(parts, Body::from(raw))).await;
    drop(held);
    Ok(response)
}

/// Looks the caller's token up (one indexed query) before a document is read: without a
/// known account, 401 now.
async fn admit_account(state: &AppState, parts: &mut Parts) -> Result<(), ApiError> {
    let caller = parts.extensions.get_mut::<Caller>().ok_or(ApiError::Unauthorized)?;
    let token = caller.token.ok_or(ApiError::Unauthorized)?;
    let found = deadline::within(state, db::users::find_by_token_hash(&state.pool, &token)).await?;
    let user = found?.ok_or(ApiError::Unauthorized)?;
    caller.user = Some(user);
    Ok(())
}

fn expects_continue(parts: &Parts) -> bool {
    parts.headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

enum ReadError {
    TooLarge,
    TooSlow,
    Broken,
}

/// What [`read`] keeps of a body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Every byte, in one buffer.
    All,
    /// Nothing: a refused body is read and dropped as it comes.
    Nothing,
}

/// Reads the body (into one buffer sized by its declared length, so a large upload is held
/// once), giving up when it is over `limit`, takes longer than `timeout`, or falls behind the
/// minimum rate after the grace period.
async fn read(
    body: Body,
    limit: usize,
    declared: Option<usize>,
    timeout: Duration,
    keep: Keep,
) -> Result<Bytes, ReadError> {
    let started = Instant::now();
    let capacity = if keep == Keep::All { declared.unwrap_or(0).min(limit) } else { 0 };
    let mut buffer = BytesMut::with_capacity(capacity);
    let mut received = 0;
    let mut chunks = body.into_data_stream();
    loop {
        // The moment the body falls behind: GRACE, plus the time its bytes so far allow.
        let on_schedule = GRACE + Duration::from_secs_f64(received as f64 / MIN_BYTES_PER_SECOND as f64);
        let deadline = started + on_schedule.min(timeout);
        match tokio::time::timeout_at(deadline.into(), chunks.next()).await {
            Err(_) => return Err(ReadError::TooSlow),
            Ok(None) => return Ok(buffer.freeze()),
            Ok(Some(Err(_))) => return Err(ReadError::Broken),
            Ok(Some(Ok(chunk))) => {
                received += chunk.len();
                if received > limit {
                    return Err(ReadError::TooLarge);
                }
                if keep == Keep::All {
                    buffer.extend_from_slice(&chunk);
                }
            }
        }
    }
}
