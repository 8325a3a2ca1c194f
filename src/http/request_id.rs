//! `X-Request-Id`: taken from the caller when sane, made up otherwise, echoed on every
//! response and available to whatever runs inside the request (logs, error bodies).

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header's name.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The caller's id if it is 1–128 characters of letters, digits and `-_.:`; else a new UUID.
fn choose(header: Option<&HeaderValue>) -> String {
    header
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            (1..=MAX_LEN).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// Middleware: settles the id, runs the request with it (in a span carrying it, so every log
/// line of the request names it), and sets it on the response.
pub async fn middleware(request: Request, next: Next) -> Response {
    let id = choose(request.headers().get(&X_REQUEST_ID));
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = CURRENT.scope(id.clone(), next.run(request).instrument(span)).await;
    let value = HeaderValue::from_str(&id).expect("the id is checked or generated as visible ASCII");
    response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_and_others_replaced() {
        assert_eq!(choose(Some(&HeaderValue::from_static("abc-123_x.y:z"))), "abc-123_x.y:z");
        for bad in ["", "has space", "quote\"", &"x".repeat(129)] {
            let chosen = choose(Some(&HeaderValue::from_str(bad).unwrap()));
            assert!(uuid::Uuid::parse_str(&chosen).is_ok(), "{bad:?} gave {chosen}");
        }
        assert!(uuid::Uuid::parse_str(&choose(None)).is_ok());
    }
}
