//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use super::metrics::Metrics;
use crate::config::SigningSecrets;

/// The shared context handed to handlers with `with_state`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database pool.
    pub pool: PgPool,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The secrets app requests are signed with.
    pub signing_secrets: SigningSecrets,
    /// How long `/readyz` waits for the database before calling it unreachable.
    pub readiness_timeout: Duration,
}

impl AppState {
    /// State over `pool` with fresh metrics.
    pub fn new(pool: PgPool, signing_secrets: SigningSecrets) -> Self {
        Self { pool, metrics: Arc::new(Metrics::default()), signing_secrets, readiness_timeout: Duration::from_secs(3) }
    }
}
