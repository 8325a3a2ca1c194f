//! An upload, start to end: decode within the memory budget, check it is a JSON object, cut it
//! into chunks, ask which the user has stored, and store the rest in one call; again with every
//! chunk should one found stored be gone by then.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use uuid::Uuid;

use super::idempotency::IdempotencyKey;
use super::{Backups, Error, chunking};
use crate::db;
use crate::db::backups::{BackupMeta, NewBackup, StoreOutcome, Stored};
use crate::document::{self, DocumentError, Encoding};
use crate::encoding::sha256;
use crate::memory::Held;

/// JSON usually compresses 5–20×; a first decode is allowed this ratio before the full limit
/// is held, so an ordinary gzip upload does not hold the whole maximum of the budget.
const EXPECTED_GZIP_RATIO: usize = 32;
/// A gzip body first gets room for at least this much, whatever its ratio.
const SMALLEST_FIRST_DECODE: usize = 64 * 1024;
/// Documents up to this size go to the database whole, with no question first: a round trip
/// costs more than sending them (`store_backup_v4` skips the chunks already stored). Measured
/// (bench/README.md, "Where to stop asking"): below 128 KiB, asking cost 5% of the rate on
/// histories that share most chunks and 9% on documents that share none; above it, it paid
/// for itself.
const ASK_ABOVE_BYTES: usize = 128 * 1024;

/// An upload's body as it arrived.
#[derive(Debug, Clone)]
pub struct NewUpload<'a> {
    /// The body, as sent.
    pub body: Bytes,
    /// Its `Content-Encoding`.
    pub encoding: Encoding,
    /// SHA-256 of the body as sent (the signature check hashed it already): the document's own
    /// when it is not encoded.
    pub body_sha256: [u8; 32],
    /// The request's `Idempotency-Key`.
    pub idempotency_key: Option<&'a IdempotencyKey>,
}

/// What an upload came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The backup holding the document.
    pub backup: BackupMeta,
    /// The document equalled the latest backup, which is answered instead.
    pub deduplicated: bool,
    /// The answer of an earlier upload with the same key and document.
    pub replayed: bool,
}

impl Receipt {
    fn from(stored: Stored, replayed: bool) -> Self {
        Self { backup: stored.meta, deduplicated: stored.deduplicated, replayed }
    }
}

impl Backups {
    /// Stores the user's upload, unless it equals their latest backup; applies retention; or
    /// answers a repeated idempotency key. Answered only once committed.
    pub async fn upload(&self, user_id: Uuid, upload: NewUpload<'_>) -> Result<Receipt, Error> {
        let (document, _decoded) = self.decode(&upload.body, upload.encoding)?;
        let text = document::validate(&document)?;
        let digest = match upload.encoding {
            Encoding::Identity => upload.body_sha256,
            Encoding::Gzip => sha256(text.as_bytes()),
        };
        let size_bytes = i32::try_from(text.len()).map_err(|e| db::Error::Other(sqlx::Error::Encode(Box::new(e))))?;
        let keep = i32::try_from(self.policy.max_backups_kept).unwrap_or(i32::MAX);
        let chunks: Vec<(&str, [u8; 32])> = chunking::chunks(text).map(|c| (c, sha256(c.as_bytes()))).collect();
        let hashes: Vec<&[u8]> = chunks.iter().map(|(_, hash)| hash.as_slice()).collect();
        let mut stored = if text.len() > ASK_ABOVE_BYTES {
            db::backups::stored_chunks(&self.pool, user_id, &hashes).await?
        } else {
            HashSet::new()
        };
        let id = Uuid::new_v4();
        loop {
            let (new_hashes, new_data) = to_send(&chunks, &stored);
            // Room for the driver's copies of what goes to the database: the chunks the user has
            // not stored (two of a mature history's hundred), not the whole document.
            let _storing =
                self.budget.hold_for_storing(new_data.iter().map(|data| data.len()).sum()).ok_or(Error::Busy)?;
            let new = NewBackup {
                id,
                user_id,
                size_bytes,
                sha256: &digest,
                chunks: &hashes,
                new_hashes: &new_hashes,
                new_data: &new_data,
                keep,
                idempotency_key: upload.idempotency_key.map(IdempotencyKey::as_str),
            };
            let result = db::backups::store(&self.pool, &new).await;
            match &result {
                Ok(_) => self.storage_full.store(false, Ordering::Relaxed),
                Err(db::Error::StorageFull(_)) => self.storage_full.store(true, Ordering::Relaxed),
                Err(_) => {}
            }
            let result = result?;
            if result.healed > 0 {
                tracing::warn!(
                    %user_id,
                    healed = result.healed,
                    "stored chunks did not match the bytes uploaded under their SHA-256 (damaged); healed them from the upload"
                );
            }
            return match result.outcome {
                StoreOutcome::Stored(stored) => Ok(Receipt::from(stored, false)),
                StoreOutcome::Replayed(stored) => Ok(Receipt::from(stored, true)),
                StoreOutcome::KeyConflict => Err(Error::KeyConflict),
                StoreOutcome::NoUser => Err(Error::NoUser),
                // A chunk found stored was freed since, or is damaged: send every chunk, which
                // cannot come back to this.
                StoreOutcome::MissingChunks if !stored.is_empty() => {
                    stored.clear();
                    continue;
                }
                StoreOutcome::MissingChunks => Err(Error::Database(db::Error::Other(sqlx::Error::Protocol(
                    "store_backup_v4 found chunks missing with every chunk sent".into(),
                )))),
            };
        }
    }

    /// The document of a body, holding room for it when decoding makes a copy. A gzip body
    /// first gets room for a usual compression ratio; only a document that needs more gets the
    /// whole limit.
    fn decode(&self, body: &Bytes, encoding: Encoding) -> Result<(Bytes, Option<Held>), Error> {
        let limit = self.policy.max_backup_bytes;
        if encoding == Encoding::Identity {
            // The body is the document, and already held by the body layer.
            return Ok((document::decode(body.clone(), encoding, limit)?, None));
        }
        let first_try = limit.min(body.len().saturating_mul(EXPECTED_GZIP_RATIO).max(SMALLEST_FIRST_DECODE));
        let held = self.budget.hold(first_try).ok_or(Error::Busy)?;
        match document::decode(body.clone(), encoding, first_try) {
            Err(DocumentError::TooLarge { .. }) if first_try < limit => {
                drop(held);
                let held = self.budget.hold(limit).ok_or(Error::Busy)?;
                Ok((document::decode(body.clone(), encoding, limit)?, Some(held)))
            }
            decoded => Ok((decoded?, Some(held))),
        }
    }
}

/// The chunks a store sends, as hashes and texts: each the user has not stored, once.
fn to_send<'a>(chunks: &'a [(&'a str, [u8; 32])], stored: &HashSet<[u8; 32]>) -> (Vec<&'a [u8]>, Vec<&'a str>) {
    let mut seen = HashSet::new();
    chunks
        .iter()
        .filter(|(_, hash)| !stored.contains(hash) && seen.insert(hash))
        .map(|(data, hash)| (hash.as_slice(), *data))
        .unzip()
}
