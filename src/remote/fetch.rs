//! Reading a backup back from a bucket, in the order that makes what is read trustworthy:
//!
//! 1. find it: the newest complete backup, or the one named, which must be complete (data
//!    without its manifest is no backup);
//! 2. before a byte is read: the identity against the recipients its manifest records
//!    ([`Fetch::check_identity`]), and the object's size against the manifest's, so a truncated
//!    or replaced object is named as such rather than failing as "not zstd";
//! 3. read it, hashing what is read;
//! 4. once read: the bytes against the manifest's size and SHA-256 ([`Fetch::check_read`]).

use time::OffsetDateTime;

use super::catalog::{Manifest, newest};
use super::download::ObjectReader;
use super::{Bucket, RemoteError, Source};
use crate::crypt::{CryptError, Identities};
use crate::encoding::{HashingReader, ReadDigest, hex};

/// A complete backup found in a bucket.
#[derive(Debug, Clone)]
pub struct Fetch {
    bucket: Bucket,
    manifest: Manifest,
}

impl Bucket {
    /// Finds what `source` names in this bucket: the newest complete backup, or the one named.
    pub async fn find_backup(self, source: &Source) -> Result<Fetch, RemoteError> {
        let found = match source {
            Source::Latest(url) => {
                let complete = self.complete().await?;
                newest(&complete, OffsetDateTime::now_utc())
                    .cloned()
                    .ok_or_else(|| RemoteError::Invalid(format!("{url} holds no complete backup")))?
            }
            Source::Named(_, name) => self.named(name).await?,
        };
        Ok(Fetch { bucket: self, manifest: found.manifest })
    }
}

impl Fetch {
    /// The backup's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The data's `s3://` URL.
    pub fn location(&self) -> String {
        self.bucket.describe(&self.manifest.data)
    }

    /// Whether `identities` open the backup: an identity file holding none of the public keys
    /// its manifest records is named, with those keys, before a byte is read.
    pub fn check_identity(&self, identities: &Identities) -> Result<(), CryptError> {
        if self.manifest.encrypted { identities.check_opens(&self.manifest.recipients) } else { Ok(()) }
    }

    /// The stored bytes from the start, hashed as they are read, once their size is the
    /// manifest's.
    pub async fn open(&self) -> Result<(HashingReader<ObjectReader>, ReadDigest), RemoteError> {
        let stored = self.bucket.size(&self.manifest.data).await?;
        if stored != self.manifest.bytes {
            return Err(RemoteError::Invalid(format!(
                "{}: the object holds {stored} bytes where its manifest says {} (truncated or replaced)",
                self.location(),
                self.manifest.bytes
            )));
        }
        Ok(HashingReader::new(self.bucket.open(&self.manifest.data).await?))
    }

    /// Checks what was read against the manifest's size and SHA-256.
    pub fn check_read(&self, digest: &ReadDigest) -> Result<(), RemoteError> {
        let (bytes, sha256) = digest.value();
        if bytes != self.manifest.bytes || hex(&sha256) != self.manifest.sha256 {
            return Err(RemoteError::Invalid(format!(
                "{}: the stored bytes differ from its manifest's size and SHA-256",
                self.location()
            )));
        }
        Ok(())
    }
}
