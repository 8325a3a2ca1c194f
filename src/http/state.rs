//! What every handler shares.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use sqlx::PgPool;

use super::budget::MemoryBudget;
use super::connections::ConnectionLimits;
use super::metrics::Metrics;
use super::rate_limit::RateLimits;
use super::readiness::ReadinessCache;
use crate::config::{AllowedOrigins, Limits, SigningSecrets};

/// The API's settings, validated.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The secrets app requests are signed with.
    pub signing_secrets: SigningSecrets,
    /// Sizes, retention, budget and rates.
    pub limits: Limits,
    /// Origins allowed cross-origin access.
    pub allowed_origins: AllowedOrigins,
    /// Header timeout and connection cap of the API listener.
    pub connections: ConnectionLimits,
}

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
    /// Whether this machine's last upload found the database's volume full (SQLSTATE 53100):
    /// `/readyz` says so, while downloads still work.
    pub storage_full: Arc<AtomicBool>,
}

impl AppState {
    /// State over `pool` with fresh metrics, budget and rate limits.
    pub fn new(pool: PgPool, settings: ApiSettings) -> Self {
        Self {
            pool,
            metrics: Arc::new(Metrics::default()),
            budget: MemoryBudget::for_documents(settings.limits.memory_budget_bytes, settings.limits.max_backup_bytes),
            rate_limits: Arc::new(RateLimits::new(&settings.limits)),
            settings: Arc::new(settings),
            readiness_timeout: Duration::from_secs(3),
            readiness: ReadinessCache::default(),
            storage_full: Arc::new(AtomicBool::new(false)),
        }
    }
}
