//! The memory budget: what request bodies and documents in flight may hold together.
//!
//! The server lives in 256 MB. Rather than growing until the kernel kills it, a request that
//! would take the budget past its size is answered 503 with `Retry-After`.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes per permit: the budget is counted in KiB so a large budget fits the semaphore.
const UNIT: usize = 1024;

/// A shared byte budget.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_units: usize,
}

/// Bytes held from the budget until dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

impl MemoryBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        let total_units = bytes.div_ceil(UNIT).min(Semaphore::MAX_PERMITS);
        Self { permits: Arc::new(Semaphore::new(total_units)), total_units }
    }

    /// Holds `bytes` of the budget, or `None` when they are not free now.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).ok()?;
        if units as usize > self.total_units {
            return None;
        }
        let permit = Arc::clone(&self.permits).try_acquire_many_owned(units).ok()?;
        Some(Reservation { _permit: permit })
    }

    /// Bytes reserved right now.
    pub fn in_use_bytes(&self) -> usize {
        (self.total_units - self.permits.available_permits()) * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_refused_beyond_the_budget_and_returned_on_drop() {
        let budget = MemoryBudget::new(10 * UNIT);
        let six = budget.try_reserve(6 * UNIT).unwrap();
        assert_eq!(budget.in_use_bytes(), 6 * UNIT);
        assert!(budget.try_reserve(5 * UNIT).is_none());
        let four = budget.try_reserve(4 * UNIT - 100).unwrap();
        assert!(budget.try_reserve(1).is_none());
        drop((six, four));
        assert_eq!(budget.in_use_bytes(), 0);
        assert!(budget.try_reserve(11 * UNIT).is_none(), "more than the whole budget");
    }
}
