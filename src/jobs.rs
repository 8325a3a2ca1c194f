//! The upkeep `serve` runs beside the API, on every machine (each step is safe to run on two at
//! once): the sweep of expired idempotency keys, and the database's size recorded once a day
//! for `inspect health`'s growth figures.

use std::time::Duration;

use sqlx::PgPool;

use crate::backups::idempotency;
use crate::db;

/// How often the day is checked for a size sample.
const SIZE_CHECK_EVERY: Duration = Duration::from_secs(60 * 60);

/// Runs the jobs until `stop`: each first at once, then on its interval.
pub async fn run(pool: PgPool, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut sweep = tokio::time::interval(idempotency::SWEEP_EVERY);
    let mut size = tokio::time::interval(SIZE_CHECK_EVERY);
    let mut sampled_on = None;
    loop {
        tokio::select! {
            _ = sweep.tick() => match idempotency::sweep(&pool).await {
                Ok(0) => {}
                Ok(swept) => tracing::info!(swept, "swept expired idempotency keys"),
                Err(error) => tracing::warn!(error = %error, "could not sweep expired idempotency keys"),
            },
            _ = size.tick() => {
                let today = time::OffsetDateTime::now_utc().date();
                if sampled_on != Some(today) {
                    match db::database_health::record_size(&pool).await {
                        Ok(()) => sampled_on = Some(today),
                        Err(error) => tracing::warn!(error = %error, "could not record the database's size"),
                    }
                }
            }
            () = &mut stop => return,
        }
    }
}
