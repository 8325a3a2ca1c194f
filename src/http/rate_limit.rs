//! Per-machine rate limits (the SPEC allows protective limits to be per machine): account
//! registrations and requests per client IP, and requests per user (by bearer token).

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::Limits;

/// How often (in checks) forgotten keys are swept, so the maps do not grow without bound.
const SWEEP_EVERY: u64 = 4096;

/// Limited: try again after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

/// One keyed limiter, or none when its rate is 0 (unlimited).
#[derive(Debug)]
struct Limiter<K: Hash + Eq + Clone> {
    inner: Option<DefaultKeyedRateLimiter<K>>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn per_minute(rate: u32) -> Self {
        let inner = NonZeroU32::new(rate).map(|rate| DefaultKeyedRateLimiter::keyed(Quota::per_minute(rate)));
        Self { inner, checks: AtomicU64::new(0) }
    }

    fn check(&self, key: &K) -> Result<(), RetryAfter> {
        let Some(limiter) = &self.inner else { return Ok(()) };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            RetryAfter(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        })
    }
}

/// The server's rate limits.
#[derive(Debug)]
pub struct RateLimits {
    register: Limiter<IpAddr>,
    per_ip: Limiter<IpAddr>,
    per_token: Limiter<[u8; 32]>,
}

impl RateLimits {
    /// Limits at the configured rates.
    pub fn new(limits: &Limits) -> Self {
        Self {
            register: Limiter::per_minute(limits.register_per_minute),
            per_ip: Limiter::per_minute(limits.ip_per_minute),
            per_token: Limiter::per_minute(limits.user_per_minute),
        }
    }

    /// One account registration from `ip`.
    pub fn register(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        self.register.check(&ip)
    }

    /// One API request from `ip`.
    pub fn request_from(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        self.per_ip.check(&ip)
    }

    /// One API request with the bearer token hashing to `token`: the per-user limit, counted
    /// before the token is looked up (a token is one account's).
    pub fn request_by(&self, token: &[u8; 32]) -> Result<(), RetryAfter> {
        self.per_token.check(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_limited_after_its_quota_and_others_are_not() {
        let limiter = Limiter::per_minute(2);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        assert!(limiter.check(&a).is_ok() && limiter.check(&a).is_ok());
        let RetryAfter(seconds) = limiter.check(&a).unwrap_err();
        assert!((1..=30).contains(&seconds), "{seconds}");
        assert!(limiter.check(&b).is_ok());
    }

    #[test]
    fn zero_means_unlimited() {
        let limiter = Limiter::per_minute(0);
        assert!((0..10_000).all(|_| limiter.check(&1u8).is_ok()));
    }
}
