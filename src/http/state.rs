//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use super::metrics::Metrics;
use super::rate_limit::RateLimits;
use super::readiness::ReadinessCache;
use crate::backups::{self, Backups};
use crate::config::ApiSettings;
use crate::memory::MemoryBudget;

/// The shared context handed to handlers with `with_state`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database pool.
    pub pool: PgPool,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: Arc<ApiSettings>,
    /// What bodies and documents in flight may hold.
    pub budget: MemoryBudget,
    /// Per-machine rate limits.
    pub rate_limits: Arc<RateLimits>,
    /// How long `/readyz` waits for the database before calling it unreachable.
    pub readiness_timeout: Duration,
    /// `/readyz`'s last answer, served for a second.
    pub readiness: ReadinessCache,
    /// The backups service the backup routes translate to and from.
    pub backups: Backups,
}

impl AppState {
    /// State over `pool` with fresh metrics, budget and rate limits.
    pub fn new(pool: PgPool, settings: ApiSettings) -> Self {
        let limits = &settings.limits;
        let budget = MemoryBudget::for_documents(limits.memory_budget_bytes, limits.max_backup_bytes);
        let policy = backups::StoragePolicy {
            max_backup_bytes: limits.max_backup_bytes,
            max_backups_kept: limits.max_backups_kept,
        };
        Self {
            backups: Backups::new(pool.clone(), budget.clone(), policy),
            pool,
            metrics: Arc::new(Metrics::default()),
            budget,
            rate_limits: Arc::new(RateLimits::new(limits)),
            settings: Arc::new(settings),
            readiness_timeout: Duration::from_secs(3),
            readiness: ReadinessCache::default(),
        }
    }
}
