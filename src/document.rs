//! A backup document as uploaded: decoding (`Content-Encoding: gzip`, with a cap) and the
//! check that it is a JSON object, without building a tree of it.

use std::io::Read;

use bytes::Bytes;
use serde::de::IgnoredAny;

/// Why a body is not an acceptable backup document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Larger than the limit once decoded.
    #[error("the document is larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Claims gzip but is not.
    #[error("the body is not valid gzip")]
    BadGzip,
    /// Not JSON.
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    /// JSON, but not an object.
    #[error("a backup must be a JSON object")]
    NotAnObject,
}

/// How the body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// As is.
    Identity,
    /// gzip.
    Gzip,
}

/// Decodes `raw`, refusing to produce more than `limit` bytes (so a gzip bomb costs at most
/// `limit` bytes of memory).
pub fn decode(raw: Bytes, encoding: Encoding, limit: usize) -> Result<Bytes, DocumentError> {
    match encoding {
        Encoding::Identity if raw.len() > limit => Err(DocumentError::TooLarge { limit }),
        Encoding::Identity => Ok(raw),
        Encoding::Gzip => {
            let mut decoded = Vec::with_capacity((raw.len() * 4).min(limit));
            let mut decoder = flate2::read::MultiGzDecoder::new(raw.as_ref()).take(limit as u64 + 1);
            decoder.read_to_end(&mut decoded).map_err(|_| DocumentError::BadGzip)?;
            if decoded.len() > limit {
                return Err(DocumentError::TooLarge { limit });
            }
            Ok(Bytes::from(decoded))
        }
    }
}

/// Checks that `document` is one JSON object (UTF-8, syntactically valid), allocating nothing
/// for its contents; returns it as text.
pub fn validate(document: &[u8]) -> Result<&str, DocumentError> {
    let text = std::str::from_utf8(document).map_err(|e| DocumentError::InvalidJson(format!("not UTF-8 ({e})")))?;
    serde_json::from_str::<IgnoredAny>(text).map_err(|e| DocumentError::InvalidJson(e.to_string()))?;
    // Valid JSON whose first significant byte is `{` is an object.
    match document.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(text),
        _ => Err(DocumentError::NotAnObject),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        Bytes::from(encoder.finish().unwrap())
    }

    #[test]
    fn gzip_is_decoded_within_the_limit() {
        let doc = br#"{"workouts": [1, 2, 3]}"#;
        assert_eq!(decode(gzip(doc), Encoding::Gzip, 100).unwrap(), Bytes::from_static(doc));
        assert_eq!(decode(gzip(doc), Encoding::Gzip, doc.len()).unwrap().len(), doc.len());
        assert_eq!(
            decode(gzip(doc), Encoding::Gzip, doc.len() - 1),
            Err(DocumentError::TooLarge { limit: doc.len() - 1 })
        );
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![b' '; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        assert_eq!(decode(bomb, Encoding::Gzip, 1 << 20), Err(DocumentError::TooLarge { limit: 1 << 20 }));
    }

    #[test]
    fn identity_is_limited_and_garbage_gzip_refused() {
        assert_eq!(decode(Bytes::from_static(b"{}"), Encoding::Identity, 1), Err(DocumentError::TooLarge { limit: 1 }));
        assert_eq!(decode(Bytes::from_static(b"not gzip"), Encoding::Gzip, 100), Err(DocumentError::BadGzip));
        let truncated = gzip(br#"{"a": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}"#).slice(..20);
        assert_eq!(decode(truncated, Encoding::Gzip, 100), Err(DocumentError::BadGzip));
    }

    #[test]
    fn only_json_objects_are_documents() {
        assert_eq!(validate(b" \n{\"a\": [1, {\"b\": null}]}\n "), Ok(" \n{\"a\": [1, {\"b\": null}]}\n "));
        assert_eq!(validate("{\"ünï\": \"😀\"}".as_bytes()), Ok("{\"ünï\": \"😀\"}"));
        for not_object in [&b"[]"[..], b"1", b"\"s\"", b"null", b" true "] {
            assert_eq!(validate(not_object), Err(DocumentError::NotAnObject), "{not_object:?}");
        }
        for invalid in [&b""[..], b"{", b"{\"a\":}", b"{} {}", b"{\"a\": \"\xff\"}"] {
            assert!(matches!(validate(invalid), Err(DocumentError::InvalidJson(_))), "{invalid:?}");
        }
    }
}
