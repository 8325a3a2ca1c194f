//! Off-site copies of dumps in an S3-compatible bucket (Tigris as `fly storage create` makes
//! it, AWS S3, R2, B2), through the `object_store` crate. No database, no terminal.
//!
//! A backup in a bucket is two objects under the prefix: the data
//! (`dailyreps-<time>.sql.zst`, `.sql.zst.age` when encrypted), streamed up as a multipart
//! upload, and its manifest (`dailyreps-<time>.manifest.json`), written last with a
//! conditional create once the data is checked. Data without a manifest is not a backup.
//! While an upload runs, `dailyreps-<time>.upload.json` records its id, so a later run can
//! abort what a killed one left.

pub mod backup;
pub mod catalog;
pub mod download;
pub mod fetch;
pub mod location;
pub mod prune;
pub mod retention;
pub mod upload;

use std::sync::Arc;
use std::time::Duration;

use object_store::RetryConfig;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::path::Path;

pub use self::location::{BucketUrl, DumpSource, Source};

/// Why the bucket cannot be used. Names the bucket and endpoint, never a key.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The settings do not make a usable client.
    #[error("cannot use bucket {bucket} at {endpoint}: {reason}")]
    Config {
        /// The bucket.
        bucket: String,
        /// Where it is.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A request to the bucket failed. One line that says what to check: the store's answer
    /// is cut to its code and message, never its XML.
    #[error("{}", request_failed(what, bucket, endpoint, error))]
    Request {
        /// What was being done.
        what: String,
        /// The bucket.
        bucket: String,
        /// Where it is.
        endpoint: String,
        /// The store's error. Not a `source`: its message already holds its own causes, which
        /// an error chain would print a second and third time.
        error: Box<object_store::Error>,
    },
    /// An object is not what this tool writes.
    #[error("{0}")]
    Invalid(String),
}

/// The longest store error shown, in characters.
const MAX_ERROR_CHARS: usize = 300;

/// A store's error on one line: an S3 error document becomes `Code: Message` (with the status
/// object_store names before it), anything else loses its line breaks and is cut short.
fn one_line(error: &object_store::Error) -> String {
    let text = error.to_string();
    let element = |name: &str| {
        let start = text.find(&format!("<{name}>"))? + name.len() + 2;
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].to_owned())
    };
    let text = match (text.find("<?xml").or_else(|| text.find("<Error>")), element("Code")) {
        (Some(xml), Some(code)) => {
            let before = text[..xml].trim_end().trim_end_matches(':');
            let message = element("Message").map_or_else(String::new, |m| format!(": {m}"));
            format!("{before}: {code}{message}")
        }
        _ => text,
    };
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// What went wrong with a request, as far as it tells what to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    NoSuchBucket,
    BadKey,
    Denied,
    Unreachable,
    Other,
}

impl Fault {
    fn of(error: &object_store::Error) -> Self {
        use object_store::Error::{PermissionDenied, Unauthenticated};
        let text = error.to_string();
        let has = |codes: &[&str]| codes.iter().any(|code| text.contains(code));
        if has(&["NoSuchBucket"]) {
            Self::NoSuchBucket
        } else if has(&["InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"]) {
            Self::BadKey
        } else if matches!(error, PermissionDenied { .. } | Unauthenticated { .. })
            || has(&["AccessDenied", "403 Forbidden"])
        {
            Self::Denied
        } else if has(&["error sending request", "Connection refused", "dns error", "operation timed out"]) {
            Self::Unreachable
        } else {
            Self::Other
        }
    }
}

/// The one line a failed request prints: what failed, where, and the setting to check.
fn request_failed(what: &str, bucket: &str, endpoint: &str, error: &object_store::Error) -> String {
    match Fault::of(error) {
        Fault::NoSuchBucket => {
            format!("{what}: there is no bucket {bucket} at {endpoint}; check the bucket's name in the s3:// URL")
        }
        Fault::BadKey => format!(
            "{what} in bucket {bucket} at {endpoint}: the key was refused ({}); check AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY",
            one_line(error)
        ),
        Fault::Denied => format!(
            "{what} in bucket {bucket} at {endpoint}: access denied; the key in AWS_ACCESS_KEY_ID may not do this \
             (a read-only key cannot write or delete)"
        ),
        Fault::Unreachable => {
            format!("{what}: {endpoint} does not answer (bucket {bucket}); check AWS_ENDPOINT_URL_S3 and the network")
        }
        Fault::Other => format!("{what} in bucket {bucket} at {endpoint} failed: {}", one_line(error)),
    }
}

impl RemoteError {
    /// Whether the bucket's endpoint did not answer at all (exit 4, like a database that does not).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Request { error, .. } if Fault::of(error) == Fault::Unreachable)
    }

    /// Whether the settings are what is wrong (no credentials, an endpoint that is no URL):
    /// exit 2, like any missing setting.
    pub fn is_setting(&self) -> bool {
        matches!(self, Self::Config { .. })
    }

    /// Whether the key was refused what was asked (an append-only key asked to delete).
    pub fn is_denied(&self) -> bool {
        use object_store::Error::{PermissionDenied, Unauthenticated};
        matches!(self, Self::Request { error, .. } if matches!(**error, PermissionDenied { .. } | Unauthenticated { .. }))
    }
}

/// Why the environment gives no credentials, if it does not. Without a key, object_store's
/// chain would ask an instance-metadata service (169.254.169.254): on a laptop or a Fly Machine
/// that is a hang or a misleading 403. So it is used only when asked for, by naming its
/// endpoint (`AWS_METADATA_ENDPOINT`), or a web identity or container role is configured.
fn missing_credentials(builder: &AmazonS3Builder) -> Option<String> {
    let set = |key: AmazonS3ConfigKey| builder.get_config_value(&key).is_some_and(|v| !v.is_empty());
    let env = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    match (set(AmazonS3ConfigKey::AccessKeyId), set(AmazonS3ConfigKey::SecretAccessKey)) {
        (true, true) => None,
        (true, false) => Some("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".to_owned()),
        (false, true) => Some("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".to_owned()),
        (false, false)
            if set(AmazonS3ConfigKey::MetadataEndpoint)
                || env("AWS_WEB_IDENTITY_TOKEN_FILE")
                || env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
                || env("AWS_CONTAINER_CREDENTIALS_FULL_URI") =>
        {
            None
        }
        (false, false) => Some(
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (`fly storage create` sets \
             them as the app's secrets; on a laptop, export the bucket's key), or AWS_METADATA_ENDPOINT \
             to use an instance's role"
                .to_owned(),
        ),
    }
}

/// A bucket and prefix, connected.
#[derive(Debug, Clone)]
pub struct Bucket {
    store: Arc<AmazonS3>,
    /// Where.
    pub url: BucketUrl,
    endpoint: String,
}

impl Bucket {
    /// A client for `url` from the standard AWS settings in the environment (as `fly storage
    /// create` sets them: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL_S3`,
    /// `AWS_REGION`).
    pub fn from_env(url: &BucketUrl) -> Result<Self, RemoteError> {
        crate::client::use_ring_for_tls();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&url.bucket)
            // S3's `If-None-Match: *`: the manifest is created once, never overwritten.
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            // One `DELETE` per object, as we delete them one at a time anyway: every
            // S3-compatible service has it, and a refusal comes back as a typed 403.
            .with_disable_bulk_delete(true);
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
            // Path-style requests work with every S3-compatible service.
            builder = builder.with_virtual_hosted_style_request(false);
        }
        let endpoint = endpoint.unwrap_or_else(|| "AWS S3".to_owned());
        if let Some(reason) = missing_credentials(&builder) {
            return Err(RemoteError::Config { bucket: url.bucket.clone(), endpoint, reason });
        }
        // Transient failures (5xx, a dropped connection) are retried with backoff, but a bucket
        // that does not answer fails within half a minute instead of object_store's three.
        let retry = RetryConfig { max_retries: 4, retry_timeout: Duration::from_secs(30), ..RetryConfig::default() };
        let store = builder.with_retry(retry).build().map_err(|e| RemoteError::Config {
            bucket: url.bucket.clone(),
            endpoint: endpoint.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self { store: Arc::new(store), url: url.clone(), endpoint })
    }

    /// The error for `what` failing with `source`.
    fn failed(&self, what: impl Into<String>, source: object_store::Error) -> RemoteError {
        RemoteError::Request {
            what: what.into(),
            bucket: self.url.bucket.clone(),
            endpoint: self.endpoint.clone(),
            error: Box::new(source),
        }
    }

    /// The object named `name` under the prefix.
    pub fn path(&self, name: &str) -> Path {
        Path::from(self.url.key(name))
    }

    /// `s3://BUCKET/KEY` of `name`, for people.
    pub fn describe(&self, name: &str) -> String {
        self.url.key_url(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_error(text: &str) -> object_store::Error {
        object_store::Error::Generic { store: "S3", source: text.into() }
    }

    #[test]
    fn each_fault_names_the_setting_to_check_on_one_line() {
        let cases = [
            (
                "Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>InvalidAccessKeyId</Code><Message>The key does not exist</Message></Error>",
                "the key was refused",
                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ),
            (
                "Server returned non-2xx status code: 403 Forbidden: <Error><Code>SignatureDoesNotMatch</Code></Error>",
                "the key was refused",
                "AWS_SECRET_ACCESS_KEY",
            ),
            (
                "Server returned non-2xx status code: 403 Forbidden: <Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
                "access denied",
                "the key in AWS_ACCESS_KEY_ID may not do this",
            ),
            (
                "Server returned non-2xx status code: 404 Not Found: NoSuchBucket: The specified bucket does not exist",
                "there is no bucket b at http://e",
                "check the bucket's name",
            ),
            (
                "after 4 retries - HTTP error: error sending request",
                "http://e does not answer (bucket b)",
                "AWS_ENDPOINT_URL_S3",
            ),
            (
                "Server returned non-2xx status code: 500 Internal Server Error: <Error><Code>InternalError</Code></Error>",
                "listing in bucket b at http://e failed",
                "InternalError",
            ),
        ];
        for (answer, first, second) in cases {
            let line = request_failed("listing", "b", "http://e", &s3_error(answer));
            assert!(line.contains(first) && line.contains(second), "{answer} → {line}");
            assert!(!line.contains('<') && !line.contains('\n'), "{line}");
        }
    }
}
