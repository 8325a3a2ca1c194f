//! A download: the token's user's backup, with room held for its document before a byte of it
//! is read, and never bytes other than those uploaded.

use bytes::Bytes;

use super::{Backups, Error};
use crate::db::backups::{BackupMeta, Fetched, Which};
use crate::encoding::sha256_of_parts;
use crate::memory::{Held, MemoryBudget};

/// A download first reads documents up to this size in the same statement that finds them;
/// a larger one is read once its size is known and room for it is held.
const INLINE_DOCUMENT_BYTES: usize = 256 * 1024;
/// Tries at holding room for the latest backup, should a larger one arrive in between.
const DOWNLOAD_TRIES: usize = 3;

/// A backup's document, checked against its SHA-256, with its room held until it is sent.
#[derive(Debug)]
pub struct Download {
    /// Id, time, size and hash.
    pub meta: BackupMeta,
    chunks: Vec<String>,
    held: Held,
}

impl Download {
    /// The document's length in bytes.
    pub fn content_length(&self) -> usize {
        self.chunks.iter().map(String::len).sum()
    }

    /// The document's parts, in order, to send: the room held goes back once the last of them
    /// is sent or dropped.
    pub fn into_parts(self) -> impl Iterator<Item = Bytes> + Send {
        MemoryBudget::held_chunks(self.chunks, self.held)
    }
}

impl Backups {
    /// The backup of the user a token belongs to (found with the user in one statement),
    /// `None` when they have no such backup. Small documents come in that first statement, a
    /// larger one in a second once its size is known and room for it is held.
    pub async fn download(&self, token_hash: &[u8; 32], which: Which) -> Result<Option<Download>, Error> {
        let mut room = INLINE_DOCUMENT_BYTES.min(self.policy.max_backup_bytes);
        for _ in 0..DOWNLOAD_TRIES {
            let held = self.budget.hold_for_fetching(room).ok_or(Error::Busy)?;
            match crate::db::backups::fetch(&self.pool, token_hash, which, room).await?.ok_or(Error::NoUser)? {
                None => return Ok(None),
                Some(Fetched::Backup(backup)) => {
                    // Never wrong bytes: chunks that do not reassemble to what was uploaded (a
                    // damaged or lost chunk) are an error, not an answer.
                    if sha256_of_parts(backup.chunks.iter().map(String::as_bytes)) != backup.meta.sha256.as_slice() {
                        return Err(Error::Damaged(backup.meta.id));
                    }
                    return Ok(Some(Download { meta: backup.meta, chunks: backup.chunks, held }));
                }
                Some(Fetched::TooLarge(meta)) => room = usize::try_from(meta.size_bytes).unwrap_or(usize::MAX),
            }
        }
        // The latest backup grew each time room was made for it: a busy account; try again.
        Err(Error::Busy)
    }
}
