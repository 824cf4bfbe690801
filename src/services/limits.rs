//! Fixed-window rate limits kept in the database (CONTRACT §4 "Limits"), so they hold with any
//! number of instances. Buckets name what is counted; an email is counted by a hash of it, so the
//! table holds no address.

use std::time::Duration;

use uuid::Uuid;

use crate::crypto::{b64, sha256};
use crate::domain::ClientAddr;
use crate::error::{AppError, AppResult};
use crate::repo::{RepoError, Tx};

/// The fixed window that `now` falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    /// Seconds until the window ends (at least 1).
    pub retry_after: u64,
}

impl Window {
    pub fn at(now: i64, length: Duration) -> Self {
        let len = length.as_secs().max(1) as i64;
        let start = now - now.rem_euclid(len);
        Self { start, retry_after: (start + len - now).max(1) as u64 }
    }

    pub fn exceeded(self) -> AppError {
        AppError::TooManyRequests { retry_after: self.retry_after }
    }
}

/// A bucket for an email: the kind of limit plus a hash of the lower-cased address.
pub fn email_bucket(kind: &str, email_key: &str) -> String {
    format!("{kind}-email:{}", b64(&sha256(email_key.as_bytes())[..16]))
}

pub fn address_bucket(kind: &str, addr: ClientAddr) -> String {
    format!("{kind}-ip:{addr}")
}

/// One limit: at most `max` hits per `window`.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub max: u32,
    pub window: Duration,
}

/// Counts a hit on a store's bucket; 429 once it is over the limit, 404 for an unknown store.
/// Inside a transaction the hit is undone with it.
pub async fn hit(tx: &mut Tx, store_id: Uuid, bucket: &str, limit: Limit) -> AppResult<()> {
    let window = Window::at(crate::now(), limit.window);
    match tx.hit_rate_limit(store_id, bucket, window.start).await {
        Err(RepoError::MissingReference) => Err(AppError::NotFound("store")),
        Ok(hits) if hits > i64::from(limit.max) => Err(window.exceeded()),
        other => other.map(drop).map_err(Into::into),
    }
}

/// 429 when a bucket outside any store has already reached its limit; counts nothing.
pub async fn check_account(tx: &mut Tx, bucket: &str, limit: Limit) -> AppResult<()> {
    let window = Window::at(crate::now(), limit.window);
    if tx.account_rate_limit(bucket, window.start).await? >= i64::from(limit.max) {
        return Err(window.exceeded());
    }
    Ok(())
}

/// Counts a hit on a bucket outside any store.
pub async fn count_account(tx: &mut Tx, bucket: &str, limit: Limit) -> AppResult<()> {
    let window = Window::at(crate::now(), limit.window);
    Ok(tx.hit_account_rate_limit(bucket, window.start).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_fixed_and_retry_after_is_positive() {
        let w = Window::at(1_000_000_123, Duration::from_secs(60));
        assert_eq!(w.start, 1_000_000_080);
        assert_eq!(w.retry_after, 17);
        assert_eq!(Window::at(1_000_000_080, Duration::from_secs(60)).retry_after, 60);
    }

    #[test]
    fn email_buckets_hide_the_address() {
        let b = email_bucket("code", "ann@example.com");
        assert!(b.starts_with("code-email:") && !b.contains("ann"));
        assert_eq!(b, email_bucket("code", "ann@example.com"));
    }
}
