//! Finding and opening a dump to read (`verify-backup`, `restore-db`): a local file or a
//! backup in a bucket, decrypted on the way when it is an age file.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow};

use crate::crypt::{self, Identities, MaybeDecrypted};
use crate::dump;
use crate::encoding::{HashingReader, ReadDigest};
use crate::remote::fetch::Fetch;
use crate::remote::{Bucket, DumpSource};

/// A dump found.
pub enum Located {
    /// A local file.
    File(PathBuf),
    /// A complete backup in a bucket, read by `remote::fetch`'s protocol.
    Bucket(Box<Fetch>),
}

/// The stored bytes of a dump, for a blocking thread to read.
pub type Raw = Box<dyn Read + Send>;

impl Located {
    /// Finds what `source` names: for a bucket, the newest complete backup or the named one
    /// (which must be complete, i.e. have its manifest).
    pub async fn find(source: &DumpSource) -> anyhow::Result<Self> {
        let source = match source {
            DumpSource::File(path) => return Ok(Self::File(path.clone())),
            DumpSource::Bucket(source) => source,
        };
        let bucket = Bucket::from_env(source.bucket())?;
        Ok(Self::Bucket(Box::new(bucket.find_backup(source).await?)))
    }

    /// Encryption before anything else: an identity file holding none of the public keys a
    /// backup's manifest records is named, with those keys, before a byte of it is read.
    pub fn check_identity(&self, identities: Option<&Identities>) -> anyhow::Result<()> {
        if let (Self::Bucket(fetch), Some(identities)) = (self, identities) {
            fetch.check_identity(identities).with_context(|| format!("cannot open {}", self.label()))?;
        }
        Ok(())
    }

    /// The file's path or the data's s3:// URL.
    pub fn label(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Bucket(fetch) => fetch.location(),
        }
    }

    /// How many bytes are stored (what a progress bar counts towards); `None` if a file's
    /// size cannot be read (opening it will say why).
    pub fn stored_bytes(&self) -> Option<u64> {
        match self {
            Self::File(path) => std::fs::metadata(path).ok().map(|m| m.len()),
            Self::Bucket(fetch) => Some(fetch.manifest().bytes),
        }
    }

    /// The stored bytes, from the start, and what has been read of them.
    pub async fn raw(&self) -> anyhow::Result<(Raw, ReadDigest)> {
        Ok(match self {
            Self::File(path) => {
                let file = File::open(path).with_context(|| format!("could not open {}", path.display()))?;
                let (hashing, digest) = HashingReader::new(file);
                (Box::new(hashing), digest)
            }
            Self::Bucket(fetch) => {
                let (hashing, digest) = fetch.open().await?;
                (Box::new(hashing), digest)
            }
        })
    }

    /// Opens the dump, once: its header is read (and checked) now, its events when the caller
    /// reads them from [`Opened::reader`]. `count` wraps the stored bytes as they are read (a
    /// progress bar's counter).
    pub async fn open(
        &self,
        identities: Option<Arc<Identities>>,
        count: impl FnOnce(Raw) -> Raw + Send + 'static,
    ) -> anyhow::Result<Opened> {
        let (raw, digest) = self.raw().await?;
        let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<dump::CompressedReader<Raw>> {
            Ok(dump::open(compressed(count(raw), identities.as_ref())?)?)
        })
        .await??;
        Ok(Opened { reader, digest })
    }

    /// Checks what was read against the bucket's manifest (a file has none to check against).
    pub fn check_stored(&self, digest: &ReadDigest) -> anyhow::Result<()> {
        if let Self::Bucket(fetch) = self {
            fetch.check_read(digest)?;
        }
        Ok(())
    }
}

/// A dump opened once: the reader, past its header, and what has been read of the stored bytes.
pub struct Opened {
    /// The dump's reader: its header read, its events next.
    pub reader: dump::CompressedReader<Raw>,
    /// What has been read of the stored bytes, for [`Located::check_stored`] at the end.
    pub digest: ReadDigest,
}

/// The dump's compressed bytes: `raw` as it is, or decrypted when it is an age file (which
/// needs `identities`). For a blocking thread: it reads.
pub fn compressed(raw: Raw, identities: Option<&Arc<Identities>>) -> anyhow::Result<Raw> {
    let mut buffered = BufReader::with_capacity(256 * 1024, raw);
    if !crypt::peek(&mut buffered)? {
        return Ok(Box::new(MaybeDecrypted::Plain(buffered)));
    }
    let identities = identities
        .ok_or_else(|| anyhow!("the dump is encrypted: pass --identity FILE (or set BACKUP_AGE_IDENTITY_FILE)"))?;
    Ok(Box::new(MaybeDecrypted::Age(Box::new(identities.decrypt(buffered)?))))
}

/// Reads the identity file, if one is given.
pub fn identities(path: Option<&std::path::Path>) -> anyhow::Result<Option<Arc<Identities>>> {
    Ok(path.map(Identities::from_file).transpose()?.map(Arc::new))
}
