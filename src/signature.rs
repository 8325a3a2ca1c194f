//! The app signature (v1): one implementation, used by the server to verify and by the
//! `request` and `smoke-test` clients to sign.
//!
//! ```text
//! X-DailyReps-Timestamp: <unix seconds>
//! X-DailyReps-Signature: v1=<hex HMAC-SHA256(secret, message)>
//! message = "v1\n" + timestamp + "\n" + METHOD + "\n" + path_and_query + "\n" + hex(SHA-256(raw body))
//! ```

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::SigningSecrets;
use crate::encoding::{hex, parse_hex, sha256};

/// Header carrying the signing time.
pub const TIMESTAMP_HEADER: &str = "x-dailyreps-timestamp";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-dailyreps-signature";
/// How far a timestamp may be from the server's clock, in seconds.
pub const MAX_SKEW_SECONDS: i64 = 300;

const VERSION_PREFIX: &str = "v1=";

/// Why a request's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// One of the two headers is absent.
    #[error("the X-DailyReps-Timestamp and X-DailyReps-Signature headers are required")]
    Missing,
    /// Malformed, or no secret produces it.
    #[error("the request signature does not match")]
    Bad,
    /// The timestamp is too far from the server's clock.
    #[error("the signature timestamp is more than 300 seconds from the server's clock")]
    Stale,
}

fn mac(secret: &[u8], timestamp: &str, method: &str, path_and_query: &str, body_sha256: &[u8; 32]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    for part in ["v1\n", timestamp, "\n", method, "\n", path_and_query, "\n", &hex(body_sha256)] {
        mac.update(part.as_bytes());
    }
    mac
}

/// The `X-DailyReps-Signature` value for a request.
pub fn sign(secret: &[u8], timestamp: i64, method: &str, path_and_query: &str, body: &[u8]) -> String {
    let tag = mac(secret, &timestamp.to_string(), method, path_and_query, &sha256(body)).finalize().into_bytes();
    format!("{VERSION_PREFIX}{}", hex(&tag))
}

/// What the server received, as it needs it for checking.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// `X-DailyReps-Timestamp`, if sent.
    pub timestamp: Option<&'a str>,
    /// `X-DailyReps-Signature`, if sent.
    pub signature: Option<&'a str>,
    /// The request method.
    pub method: &'a str,
    /// The path and query as sent.
    pub path_and_query: &'a str,
    /// SHA-256 of the raw body as sent.
    pub body_sha256: &'a [u8; 32],
}

/// Checks a request against every secret (any one may match), in constant time per secret.
pub fn verify(secrets: &SigningSecrets, received: &Received<'_>, now_unix: i64) -> Result<(), SignatureError> {
    let (Some(timestamp), Some(signature)) = (received.timestamp, received.signature) else {
        return Err(SignatureError::Missing);
    };
    let tag = signature.strip_prefix(VERSION_PREFIX).and_then(|tag| parse_hex(tag, 32)).ok_or(SignatureError::Bad)?;
    let signed_at: i64 = timestamp.parse().map_err(|_| SignatureError::Bad)?;
    let matches = secrets.iter().any(|secret| {
        mac(secret, timestamp, received.method, received.path_and_query, received.body_sha256)
            .verify_slice(&tag)
            .is_ok()
    });
    if !matches {
        return Err(SignatureError::Bad);
    }
    // Checked after the MAC, so a forger learns nothing from the timestamp answer.
    // Checked: a timestamp near i64::MIN must not wrap around into the window.
    if now_unix.checked_sub(signed_at).is_none_or(|skew| skew.unsigned_abs() > MAX_SKEW_SECONDS.unsigned_abs()) {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn check(secrets: &str, signature: &str, timestamp: i64, now: i64, body: &[u8]) -> Result<(), SignatureError> {
        let secrets = SigningSecrets::parse(secrets).unwrap();
        let timestamp = timestamp.to_string();
        let received = Received {
            timestamp: Some(&timestamp),
            signature: Some(signature),
            method: "POST",
            path_and_query: "/api/backup?x=1",
            body_sha256: &sha256(body),
        };
        verify(&secrets, &received, now)
    }

    #[test]
    fn a_signature_matches_an_independent_computation() {
        // H=$(printf '{}' | sha256sum | cut -d' ' -f1)
        // printf "v1\n1700000000\nPOST\n/api/backup?x=1\n%s" "$H" | openssl dgst -sha256 -hmac "$SECRET"
        let expected = "v1=c224cc6c5300c3340ac550e0b4b3f38948ca94ab97795f31afde65feae7ee6f4";
        assert_eq!(sign(SECRET.as_bytes(), 1_700_000_000, "POST", "/api/backup?x=1", b"{}"), expected);
    }

    #[test]
    fn verify_accepts_any_configured_secret_within_the_window() {
        let signature = sign(SECRET.as_bytes(), 1000, "POST", "/api/backup?x=1", b"{}");
        assert_eq!(check(SECRET, &signature, 1000, 1300, b"{}"), Ok(()));
        let rotated = format!("{},{SECRET}", "z".repeat(40));
        assert_eq!(check(&rotated, &signature, 1000, 700, b"{}"), Ok(()));
        assert_eq!(check(SECRET, &signature, 1000, 1301, b"{}"), Err(SignatureError::Stale));
        assert_eq!(check(SECRET, &signature, 1000, 699, b"{}"), Err(SignatureError::Stale));
        // Validly signed timestamps whose distance from now overflows an i64.
        let now = 1_764_400_000;
        for timestamp in [i64::MIN, i64::MIN + now, i64::MAX] {
            let signed = sign(SECRET.as_bytes(), timestamp, "POST", "/api/backup?x=1", b"{}");
            assert_eq!(check(SECRET, &signed, timestamp, now, b"{}"), Err(SignatureError::Stale), "{timestamp}");
        }
    }

    #[test]
    fn verify_refuses_tampering_and_garbage() {
        let signature = sign(SECRET.as_bytes(), 1000, "POST", "/api/backup?x=1", b"{}");
        assert_eq!(check(SECRET, &signature, 1000, 1000, b"{ }"), Err(SignatureError::Bad));
        assert_eq!(check(SECRET, &signature, 1001, 1000, b"{}"), Err(SignatureError::Bad));
        assert_eq!(check(&"y".repeat(32), &signature, 1000, 1000, b"{}"), Err(SignatureError::Bad));
        for garbage in ["", "v1=", "v2=00", &signature.to_uppercase(), &signature[..signature.len() - 2], "v1=zz"] {
            assert_eq!(check(SECRET, garbage, 1000, 1000, b"{}"), Err(SignatureError::Bad), "{garbage:?}");
        }
        let received = Received {
            timestamp: None,
            signature: Some(&signature),
            method: "POST",
            path_and_query: "/",
            body_sha256: &[0; 32],
        };
        assert_eq!(verify(&SigningSecrets::parse(SECRET).unwrap(), &received, 0), Err(SignatureError::Missing));
    }
}
