//! `/readyz`'s answer, kept for a second: the route is unauthenticated, so a flood of it must
//! not become a flood of database queries. One check runs at a time; requests that arrive
//! meanwhile wait for it and share its answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// How long an answer is served before the database is asked again.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The newest schema version, or why the server is not ready.
pub type Readiness = Result<i64, String>;

/// The last readiness answer and when it was found.
#[derive(Debug, Clone, Default)]
pub struct ReadinessCache(Arc<Mutex<Option<(Instant, Readiness)>>>);

impl ReadinessCache {
    /// The answer of a check at most [`FRESH_FOR`] old, running `check` when there is none.
    pub async fn get_or_check(&self, check: impl Future<Output = Readiness>) -> Readiness {
        let mut last = self.0.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < FRESH_FOR
        {
            return answer.clone();
        }
        let answer = check.await;
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_flood_of_requests_asks_the_database_once() {
        let cache = ReadinessCache::default();
        let (asked, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(tokio::sync::Notify::new()));
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let (cache, asked, gate) = (cache.clone(), Arc::clone(&asked), Arc::clone(&gate));
            requests.spawn(async move {
                cache
                    .get_or_check(async move {
                        asked.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        Ok(7)
                    })
                    .await
            });
        }
        // The first check is in the database; the rest wait for its answer.
        while asked.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        let answers = requests.join_all().await;
        assert!(answers.iter().all(|answer| *answer == Ok(7)));
        assert_eq!(asked.load(Ordering::SeqCst), 1, "one check answered all 100");
    }
}
