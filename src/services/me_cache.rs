//! getMe answers kept in memory, by session (Postgres). An answer is served again only after a
//! one-row read finds its profile's version where it was when the answer was read: the version
//! moves in the same transaction as every change to what getMe shows
//! (migrations/postgres/0016_profile_versions.sql), so a change committed through any instance,
//! a revocation included, is seen by the next request. Time is the one thing that changes the
//! answer without a write: an entry is good only until the earliest expiry of the sessions it
//! lists (the caller's own among them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::auth::ProfileToken;
use super::sessions::Me;

struct Entry {
    store_id: Uuid,
    profile_id: Uuid,
    version: i64,
    /// Good while `now < valid_until`.
    valid_until: i64,
    me: Arc<Me>,
}

/// A bounded map from session id to its last getMe answer.
pub struct MeCache {
    entries: Mutex<HashMap<Uuid, Entry>>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What [`MeCache::get`] found.
pub struct Remembered {
    pub version: i64,
    pub me: Arc<Me>,
}

impl MeCache {
    /// `None` when `capacity` is 0 (no cache).
    pub fn new(capacity: usize) -> Option<Self> {
        (capacity > 0).then(|| Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// The session's remembered answer if it is still good at `now` (its version unchecked).
    pub fn get(&self, token: &ProfileToken, now: i64) -> Option<Remembered> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = entries.get(&token.session_id)?;
        (e.store_id == token.store_id && e.profile_id == token.profile_id && now < e.valid_until)
            .then(|| Remembered { version: e.version, me: e.me.clone() })
    }

    /// Remembers the answer read at `version`, good until `valid_until`. When full, an arbitrary
    /// entry makes room (a `HashMap`'s iteration order is unrelated to age or use).
    pub fn put(&self, token: &ProfileToken, version: i64, valid_until: i64, me: Arc<Me>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity
            && !entries.contains_key(&token.session_id)
            && let Some(victim) = entries.keys().next().copied()
        {
            entries.remove(&victim);
        }
        let entry = Entry { store_id: token.store_id, profile_id: token.profile_id, version, valid_until, me };
        entries.insert(token.session_id, entry);
    }

    pub fn forget(&self, session_id: Uuid) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(&session_id);
    }

    pub fn count_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Answers served from memory and answers read in full, since start.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    /// Entries held.
    pub fn entries(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::{ProfileDetails, ProfileRow};

    fn token(session: u128) -> ProfileToken {
        ProfileToken {
            store_id: Uuid::from_u128(1),
            profile_id: Uuid::from_u128(2),
            session_id: Uuid::from_u128(session),
        }
    }

    fn me() -> Arc<Me> {
        let profile = ProfileRow {
            store_id: Uuid::from_u128(1),
            id: Uuid::from_u128(2),
            email: None,
            verified: false,
            status: crate::domain::Status::Active,
            created_at: 0,
            updated_at: 0,
        };
        let details = ProfileDetails { profile, values: vec![], promo_usage: vec![], sessions: vec![], codes: vec![] };
        Arc::new(Me::new(details))
    }

    #[test]
    fn entries_expire_match_their_token_and_stay_within_capacity() {
        let cache = MeCache::new(2).expect("a cache");
        cache.put(&token(10), 7, 100, me());
        assert_eq!(cache.get(&token(10), 99).map(|r| r.version), Some(7));
        assert!(cache.get(&token(10), 100).is_none(), "good only before valid_until");
        let mut other_profile = token(10);
        other_profile.profile_id = Uuid::from_u128(3);
        assert!(cache.get(&other_profile, 0).is_none(), "a token of another profile finds nothing");
        cache.put(&token(11), 1, 100, me());
        cache.put(&token(12), 1, 100, me());
        assert_eq!(cache.entries(), 2, "a full cache makes room");
        assert!(cache.get(&token(12), 0).is_some(), "the newest entry is kept");
        cache.forget(Uuid::from_u128(12));
        assert!(cache.get(&token(12), 0).is_none());
        assert!(MeCache::new(0).is_none(), "0 entries: no cache");
    }
}
