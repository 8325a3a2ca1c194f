//! Idempotency keys: an upload sent again with the same `Idempotency-Key` gets its first
//! answer, and with another document a conflict. The answer is stored with the backup in the
//! upload's transaction (`store_backup_v4`), so a retry after a crash or a lost response finds
//! it; keys are remembered for [`KEY_LIFETIME`], then swept, whether or not their user uploads
//! again.

use std::time::Duration;

use sqlx::PgPool;

use crate::db;

/// How long a key is remembered: the API promises at least 24 hours. The sweep runs every
/// [`SWEEP_EVERY`], so a key goes at most that much later.
pub const KEY_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// How often `serve` sweeps expired keys.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60 * 60);
/// Keys deleted per statement: short transactions beside the live uploads.
const SWEEP_BATCH: i64 = 1000;

/// An `Idempotency-Key`: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key, if `text` is one.
    pub fn parse(text: &str) -> Option<Self> {
        ((1..=255).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic())).then(|| Self(text.to_owned()))
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Deletes every key older than [`KEY_LIFETIME`], in batches; how many went.
pub async fn sweep(pool: &PgPool) -> Result<u64, db::Error> {
    let mut swept = 0;
    loop {
        let deleted = db::idempotency::delete_expired(pool, KEY_LIFETIME, SWEEP_BATCH).await?;
        swept += deleted;
        if deleted < SWEEP_BATCH as u64 {
            return Ok(swept);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_one_to_255_visible_ascii_characters() {
        assert_eq!(IdempotencyKey::parse("retry-7f3a").map(|k| k.as_str().to_owned()), Some("retry-7f3a".into()));
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_some());
        for bad in ["", " ", "has space", "tab\t", "ünï", &"k".repeat(256)] {
            assert_eq!(IdempotencyKey::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_are_remembered_at_least_the_24_hours_the_api_promises() {
        assert!(KEY_LIFETIME >= Duration::from_secs(24 * 60 * 60));
        assert!(SWEEP_EVERY < KEY_LIFETIME);
    }
}
