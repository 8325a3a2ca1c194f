//! The backups service: the rules of storing, fetching, listing and deleting users' backup
//! documents, between the HTTP routes (which only translate HTTP to and from it) and
//! `db::backups` (the SQL). Where each rule lives:
//!
//! - what a document is (a JSON object, gzip decoded with a cap): `crate::document`;
//! - the upload's steps, and the memory each holds: [`upload`];
//! - the chunk sizes: [`chunking`];
//! - how long idempotency keys are remembered, and their sweep: [`idempotency`];
//! - how many backups a user keeps: [`StoragePolicy::max_backups_kept`] (`MAX_BACKUPS_KEPT`,
//!   default 30, declared with the other settings in `cli::ServeArgs`), applied in the store's
//!   transaction by `store_backup_v4` (src/db/sql/), which takes it as a parameter;
//! - a download never answers bytes that are not what was uploaded: [`download`].

pub mod chunking;
mod download;
pub mod idempotency;
mod upload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::PgPool;
use uuid::Uuid;

pub use self::download::Download;
pub use self::upload::{NewUpload, Receipt};
use crate::db;
pub use crate::db::backups::{After, BackupMeta, Which};
use crate::document::DocumentError;
use crate::memory::MemoryBudget;

/// The per-user policy the service applies.
#[derive(Debug, Clone, Copy)]
pub struct StoragePolicy {
    /// The largest document, decoded (`MAX_BACKUP_BYTES`).
    pub max_backup_bytes: usize,
    /// Backups kept per user, the newest (`MAX_BACKUPS_KEPT`).
    pub max_backups_kept: u32,
}

/// Why the service could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The memory budget has no room now: try again shortly.
    #[error("the memory budget has no room now")]
    Busy,
    /// The upload is not an acceptable document.
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// The idempotency key was used before with another document.
    #[error("the idempotency key was used with another document")]
    KeyConflict,
    /// No such user: an unknown token, or an account deleted while the request was on its way.
    #[error("no such user")]
    NoUser,
    /// A backup's chunks do not reassemble to what was uploaded (a damaged or lost chunk).
    #[error("backup {0} does not match its SHA-256: a chunk is damaged")]
    Damaged(Uuid),
    /// The database failed or refused.
    #[error(transparent)]
    Database(#[from] db::Error),
}

/// The service. Cheap to clone: every machine's handlers share one.
#[derive(Debug, Clone)]
pub struct Backups {
    pool: PgPool,
    budget: MemoryBudget,
    policy: StoragePolicy,
    storage_full: Arc<AtomicBool>,
}

impl Backups {
    /// The service over `pool`, holding memory from `budget`.
    pub fn new(pool: PgPool, budget: MemoryBudget, policy: StoragePolicy) -> Self {
        Self { pool, budget, policy, storage_full: Arc::default() }
    }

    /// Whether this machine's last upload found the database's volume full (SQLSTATE 53100).
    pub fn storage_full(&self) -> bool {
        self.storage_full.load(Ordering::Relaxed)
    }

    /// Up to `limit` of the user's backups, newest first, after `after`.
    pub async fn list(&self, user_id: Uuid, after: Option<After>, limit: i64) -> Result<Vec<BackupMeta>, Error> {
        Ok(db::backups::list(&self.pool, user_id, after, limit).await?)
    }

    /// Deletes one of the user's backups; whether it existed.
    pub async fn delete(&self, user_id: Uuid, id: Uuid) -> Result<bool, Error> {
        Ok(db::backups::delete(&self.pool, user_id, id).await?)
    }
}
