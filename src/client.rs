//! A client of the API that signs like the app: used by `request` (and `smoke-test`).

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response};

use crate::signature::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Why a request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL does not parse.
    #[error("`{0}` is not an http(s) URL")]
    BadUrl(String),
    /// A header given by the user does not parse.
    #[error("header `{0}` is not `Name: value`")]
    BadHeader(String),
    /// The HTTP exchange failed.
    #[error("request to {url} failed: {reason}")]
    Http {
        /// What was requested.
        url: String,
        /// Why it failed, once: the innermost cause (reqwest's own chain repeats the URL).
        reason: String,
    },
}

/// A signing client for one server.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    secret: Vec<u8>,
}

/// One request to send.
#[derive(Debug, Clone, Default)]
pub struct Call<'a> {
    /// `/api/...`, with any query.
    pub path_and_query: &'a str,
    /// The raw body as sent.
    pub body: Vec<u8>,
    /// A bearer token.
    pub token: Option<&'a str>,
    /// Extra headers.
    pub headers: HeaderMap,
}

/// Makes ring the TLS crypto provider of every HTTP client in the process (reqwest is built
/// without a default one; ring is the one sqlx uses too). Installing twice is harmless: the
/// first one stays.
pub fn use_ring_for_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl ApiClient {
    /// A client for `base` (e.g. `https://dailyreps-backup-server.fly.dev`), signing with `secret`.
    pub fn new(base: &str, secret: &[u8], timeout: Duration) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) || reqwest::Url::parse(base).is_err() {
            return Err(ClientError::BadUrl(base.to_owned()));
        }
        use_ring_for_tls();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("dailyreps-backup-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| ClientError::http(base, &error))?;
        Ok(Self { http, base: base.to_owned(), secret: secret.to_vec() })
    }

    /// Sends `call`, signed now.
    pub async fn send(&self, method: Method, call: Call<'_>) -> Result<Response, ClientError> {
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = signature::sign(&self.secret, timestamp, method.as_str(), call.path_and_query, &call.body);
        let url = format!("{}{}", self.base, call.path_and_query);
        let mut request = self
            .http
            .request(method, &url)
            .headers(call.headers)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(call.body);
        if let Some(token) = call.token {
            request = request.bearer_auth(token);
        }
        request.send().await.map_err(|error| ClientError::http(&url, &error))
    }
}

impl ClientError {
    fn http(url: &str, error: &reqwest::Error) -> Self {
        let innermost = std::iter::successors(Some(error as &dyn std::error::Error), |e| e.source())
            .last()
            .map(ToString::to_string)
            .unwrap_or_default();
        let reason = if error.is_timeout() {
            "no answer in time".to_owned()
        } else if error.is_connect() {
            format!("could not connect: {innermost}")
        } else {
            innermost
        };
        Self::Http { url: url.to_owned(), reason }
    }
}

/// Parses `Name: value`.
pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), ClientError> {
    let bad = || ClientError::BadHeader(text.to_owned());
    let (name, value) = text.split_once(':').ok_or_else(bad)?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
    Ok((name, value))
}
