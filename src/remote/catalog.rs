//! What the bucket holds: manifests (a backup exists only once its manifest does), the data
//! they describe, and records of uploads in progress.

use std::collections::HashSet;

use futures_util::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Bucket, RemoteError};
use crate::dump::naming;

/// The manifest of a backup in a bucket, written last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// This layout's version.
    pub format_version: u32,
    /// The data object's name under the prefix.
    pub data: String,
    /// When the snapshot was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The version of the tool that took it.
    pub server_version: String,
    /// The PostgreSQL server's version.
    pub postgres_version: String,
    /// The dumped database's newest migration.
    pub schema_version: i64,
    /// Rows per table, as the dump's own manifest has them.
    pub tables: Vec<TableCount>,
    /// Size of the stored data object.
    pub bytes: u64,
    /// Hex SHA-256 of the stored bytes (encrypted, when encrypted).
    pub sha256: String,
    /// Whether the data is an age file.
    pub encrypted: bool,
    /// The age public keys it is encrypted to (any one's identity opens it), so a restore can
    /// say at once whether an identity file is one of them. Absent in manifests written before
    /// they were recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
}

/// A table's rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    /// Table name.
    pub name: String,
    /// Rows.
    pub rows: u64,
}

/// The layout version this tool writes.
pub const MANIFEST_FORMAT: u32 = 1;
/// The largest manifest read (ours are well under 1 KiB): a bucket's objects are untrusted.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
const MANIFEST_SUFFIX: &str = ".manifest.json";
const UPLOAD_SUFFIX: &str = ".upload.json";

/// A complete backup: its manifest's name and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The manifest object's name under the prefix.
    pub manifest_name: String,
    /// What it says.
    pub manifest: Manifest,
}

/// An upload in progress, recorded before its first part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// The data object's name under the prefix.
    pub data: String,
    /// The multipart upload's id.
    pub upload_id: String,
}

/// The names of one backup's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The data object's name (the dump, perhaps encrypted).
    pub data: String,
    /// The manifest object's name (written last: its presence makes the backup complete).
    pub manifest: String,
    /// The record of its upload.
    pub upload: String,
}

impl Names {
    /// The names of the backup taken at `at`.
    pub fn of(at: OffsetDateTime, encrypted: bool) -> Self {
        let stem = naming::stem(at);
        let extension = if encrypted { ".age" } else { "" };
        Self {
            data: format!("{stem}{}{extension}", naming::SUFFIX),
            manifest: format!("{stem}{MANIFEST_SUFFIX}"),
            upload: format!("{stem}{UPLOAD_SUFFIX}"),
        }
    }
}

/// Whether `name` is a data object's name this tool writes.
pub fn is_data_name(name: &str) -> bool {
    naming::parse_stem(name).is_some_and(|(_, rest)| rest == naming::SUFFIX || rest == ".sql.zst.age")
}

/// The newest of `complete` (newest first) that is not dated ahead of `now`: what `latest`
/// means. One dated ahead (a clock that was wrong, a copy renamed) is never taken silently:
/// it is logged as a warning.
pub fn newest(complete: &[Listed], now: OffsetDateTime) -> Option<&Listed> {
    let (ahead, rest): (Vec<&Listed>, Vec<&Listed>) =
        complete.iter().partition(|listed| super::retention::is_ahead(listed.manifest.created_at, now));
    for listed in ahead {
        let at = listed.manifest.created_at.format(&time::format_description::well_known::Rfc3339);
        tracing::warn!(
            "{} is dated {}, ahead of this machine's clock: it is not taken as the newest",
            listed.manifest.data,
            at.unwrap_or_default()
        );
    }
    rest.into_iter().next()
}

/// The stem of a manifest's name (`dailyreps-<time>` of `dailyreps-<time>.manifest.json`).
pub fn manifest_stem(name: &str) -> Option<&str> {
    name.strip_suffix(MANIFEST_SUFFIX).filter(|stem| naming::parse_stem(stem).is_some_and(|(_, rest)| rest.is_empty()))
}

impl Bucket {
    /// The names of the objects directly under the prefix that this tool wrote, with their
    /// sizes and last-modified times.
    pub async fn ours(&self) -> Result<Vec<(String, u64, OffsetDateTime)>, RemoteError> {
        let prefix = (!self.url.prefix.is_empty()).then(|| object_store::path::Path::from(self.url.prefix.as_str()));
        let listing = self.store.list_with_delimiter(prefix.as_ref()).await;
        let listing = listing.map_err(|e| self.failed(format!("listing {}", self.url), e))?;
        Ok(listing
            .objects
            .into_iter()
            .filter_map(|object| {
                let name = object.location.filename()?.to_owned();
                naming::parse_stem(&name)?;
                let modified = OffsetDateTime::from_unix_timestamp(object.last_modified.timestamp()).ok()?;
                Some((name, object.size, modified))
            })
            .collect())
    }

    /// Every complete backup (one whose manifest reads), newest snapshot first. A manifest that
    /// does not read (damaged, planted, of a newer layout) is skipped with a warning: one bad
    /// object must not hide the good backups beside it.
    pub async fn complete(&self) -> Result<Vec<Listed>, RemoteError> {
        self.complete_in(&self.ours().await?).await
    }

    /// [`Self::complete`] of a listing already made by [`Self::ours`].
    pub async fn complete_in(&self, ours: &[(String, u64, OffsetDateTime)]) -> Result<Vec<Listed>, RemoteError> {
        let manifests: Vec<String> =
            ours.iter().map(|(name, _, _)| name.clone()).filter(|n| n.ends_with(MANIFEST_SUFFIX)).collect();
        let read: Vec<Option<Listed>> = futures_util::stream::iter(manifests)
            .map(|name| async move {
                match self.manifest(&name).await {
                    Ok(manifest) => Ok(Some(Listed { manifest_name: name, manifest })),
                    Err(RemoteError::Invalid(reason)) => {
                        tracing::warn!("{reason}; skipped it");
                        Ok(None)
                    }
                    Err(error) => Err(error),
                }
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let mut listed: Vec<Listed> = read.into_iter().flatten().collect();
        listed.sort_by_key(|listed| std::cmp::Reverse(listed.manifest.created_at));
        Ok(listed)
    }

    /// The backup whose data object is `data`, from its own manifest alone (no other object
    /// of the bucket is read, so none can stand in its way).
    pub async fn named(&self, data: &str) -> Result<Listed, RemoteError> {
        let not_complete =
            || RemoteError::Invalid(format!("{} is not a complete backup (no manifest names it)", self.describe(data)));
        let (_, rest) = naming::parse_stem(data).ok_or_else(not_complete)?;
        let manifest_name = format!("{}{MANIFEST_SUFFIX}", &data[..data.len() - rest.len()]);
        let manifest = match self.manifest(&manifest_name).await {
            Err(RemoteError::Request { error, .. }) if matches!(*error, object_store::Error::NotFound { .. }) => {
                return Err(not_complete());
            }
            read => read?,
        };
        if manifest.data != data {
            return Err(not_complete());
        }
        Ok(Listed { manifest_name, manifest })
    }

    /// Reads and checks one manifest.
    pub async fn manifest(&self, name: &str) -> Result<Manifest, RemoteError> {
        let bytes = self.small_object(name).await?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            RemoteError::Invalid(format!("{} is not a manifest of this tool: {e}", self.describe(name)))
        })?;
        let stem = name.trim_end_matches(MANIFEST_SUFFIX);
        if manifest.format_version > MANIFEST_FORMAT {
            return Err(RemoteError::Invalid(format!(
                "{} is of manifest format {}, newer than this tool's ({MANIFEST_FORMAT}); use a newer dailyreps-backup-server",
                self.describe(name),
                manifest.format_version
            )));
        }
        if !is_data_name(&manifest.data) || !manifest.data.starts_with(stem) {
            return Err(RemoteError::Invalid(format!("{} names no data of its own", self.describe(name))));
        }
        Ok(manifest)
    }

    /// An object of at most [`MAX_MANIFEST_BYTES`].
    async fn small_object(&self, name: &str) -> Result<bytes::Bytes, RemoteError> {
        let path = self.path(name);
        let got = self.store.get(&path).await.map_err(|e| self.failed(format!("reading {name}"), e))?;
        if got.meta.size > MAX_MANIFEST_BYTES {
            return Err(RemoteError::Invalid(format!("{} is larger than any manifest", self.describe(name))));
        }
        got.bytes().await.map_err(|e| self.failed(format!("reading {name}"), e))
    }

    /// Writes a manifest, only if none exists under that name.
    pub async fn create_manifest(&self, name: &str, manifest: &Manifest) -> Result<(), RemoteError> {
        let body = serde_json::to_vec_pretty(manifest).map_err(|e| RemoteError::Invalid(e.to_string()))?;
        let options = PutOptions { mode: PutMode::Create, ..Default::default() };
        self.store
            .put_opts(&self.path(name), PutPayload::from(body), options)
            .await
            .map(drop)
            .map_err(|e| self.failed(format!("writing {name}"), e))
    }

    /// Records an upload in progress.
    pub async fn record_upload(&self, name: &str, record: &UploadRecord) -> Result<(), RemoteError> {
        let body = serde_json::to_vec(record).map_err(|e| RemoteError::Invalid(e.to_string()))?;
        self.store
            .put(&self.path(name), PutPayload::from(body))
            .await
            .map(drop)
            .map_err(|e| self.failed(format!("writing {name}"), e))
    }

    /// The uploads that earlier runs recorded and never finished, with their records' names.
    /// A record beside a manifest is of a finished backup whose record a key that may not
    /// delete left behind: not unfinished.
    pub async fn unfinished_uploads(&self) -> Result<Vec<(String, UploadRecord)>, RemoteError> {
        self.unfinished_in(&self.ours().await?).await
    }

    /// [`Self::unfinished_uploads`] of a listing already made by [`Self::ours`].
    pub async fn unfinished_in(
        &self,
        ours: &[(String, u64, OffsetDateTime)],
    ) -> Result<Vec<(String, UploadRecord)>, RemoteError> {
        let names: HashSet<&str> = ours.iter().map(|(name, _, _)| name.as_str()).collect();
        let mut unfinished = Vec::new();
        for name in &names {
            if let Some(stem) = name.strip_suffix(UPLOAD_SUFFIX)
                && !names.contains(format!("{stem}{MANIFEST_SUFFIX}").as_str())
            {
                let record = match self.small_object(name).await {
                    Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                        RemoteError::Invalid(format!("{} is not a record of an upload: {e}", self.describe(name)))
                    }),
                    Err(error) => Err(error),
                };
                match record {
                    Ok(record) => unfinished.push(((*name).to_owned(), record)),
                    Err(RemoteError::Invalid(reason)) => tracing::warn!("{reason}; skipped it"),
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(unfinished)
    }

    /// Deletes one of our objects.
    pub async fn delete(&self, name: &str) -> Result<(), RemoteError> {
        self.store.delete(&self.path(name)).await.map_err(|e| self.failed(format!("deleting {name}"), e))
    }
}
