//! Stores, their settings and their API keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::crypto::{b64, random_bytes, sha256};
use crate::domain::Role;
use crate::domain::{Email, Name, OriginPattern, double_option};
use crate::error::{AppError, AppResult, FieldError};
use crate::repo::{ApiKeyRow, Database, StoreRow};
use crate::services::auth::API_KEY_PREFIX;

/// Settings to change; absent fields stay, `null` clears `from_email` / `from_name`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateStore {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub from_email: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub from_name: Option<Option<String>>,
    /// Browser origins, `https://shop.example.com`.
    pub allowed_origins: Option<Vec<String>>,
    /// Keep subscribers' full IP addresses in the consent ledger (default false: /24 for IPv4,
    /// /48 for IPv6).
    pub consent_full_ip: Option<bool>,
}

/// An API key as created: the secret exists only in this value.
pub struct NewApiKey {
    pub key: ApiKeyRow,
    pub secret: String,
}

pub struct Stores {
    db: Database,
    origins: OriginCache,
}

/// Each store's `allowed_origins` for CORS, kept briefly so a browser's every request does not
/// cost a query. A change shows after at most the cache's lifetime, on every instance.
struct OriginCache {
    ttl: Duration,
    entries: Mutex<HashMap<Uuid, CachedOrigins>>,
}

/// When they were read, and the patterns.
type CachedOrigins = (Instant, Arc<[OriginPattern]>);

/// Past this many stores the cache starts over rather than grow without bound.
const ORIGIN_CACHE_MAX: usize = 10_000;

fn check<T>(errors: &mut Vec<FieldError>, field: &str, r: Result<T, &'static str>) -> Option<T> {
    r.map_err(|e| errors.push(FieldError::new(field, e))).ok()
}

impl Stores {
    pub fn new(db: Database, origin_cache_ttl: Duration) -> Self {
        Self { db, origins: OriginCache { ttl: origin_cache_ttl, entries: Mutex::default() } }
    }

    /// The store's `allowed_origins`, cached; none for an unknown store.
    pub async fn allowed_origins(&self, store_id: Uuid) -> AppResult<Arc<[OriginPattern]>> {
        let cache = &self.origins;
        if !cache.ttl.is_zero()
            && let Some((at, origins)) = cache.entries.lock().expect("origin cache").get(&store_id)
            && at.elapsed() < cache.ttl
        {
            return Ok(origins.clone());
        }
        let origins: Arc<[OriginPattern]> = match self.db.auto().store(store_id).await? {
            Some(store) => store.allowed_origins.iter().filter_map(|o| OriginPattern::parse(o).ok()).collect(),
            None => Arc::new([]),
        };
        if !cache.ttl.is_zero() {
            let mut entries = cache.entries.lock().expect("origin cache");
            if entries.len() >= ORIGIN_CACHE_MAX {
                entries.clear();
            }
            entries.insert(store_id, (Instant::now(), origins.clone()));
        }
        Ok(origins)
    }

    pub async fn create(&self, owner: Uuid, name: &str) -> AppResult<StoreRow> {
        let name = Name::parse(name).map_err(|e| AppError::invalid("name", e))?;
        let now = crate::now();
        let store = StoreRow {
            id: Uuid::now_v7(),
            name: name.into_inner(),
            from_email: None,
            from_name: None,
            allowed_origins: vec![],
            consent_full_ip: false,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.db.begin().await?;
        tx.insert_store(&store).await?;
        tx.insert_member(store.id, owner, Role::Owner, now).await?;
        tx.commit().await?;
        Ok(store)
    }

    pub async fn of_account(
        &self,
        account_id: Uuid,
        after: Option<Uuid>,
        limit: u32,
    ) -> AppResult<Vec<(StoreRow, Role)>> {
        Ok(self.db.auto().stores_of_account(account_id, after, limit).await?)
    }

    /// Every store of the platform, by id (the operator's view; the CLI).
    pub async fn all(&self, after: Option<Uuid>, limit: u32) -> AppResult<Vec<StoreRow>> {
        Ok(self.db.auto().stores(after, limit).await?)
    }

    pub async fn get(&self, store_id: Uuid) -> AppResult<StoreRow> {
        self.db.auto().store(store_id).await?.ok_or(AppError::NotFound("store"))
    }

    pub async fn update(&self, store_id: Uuid, patch: UpdateStore) -> AppResult<StoreRow> {
        let mut errors = vec![];
        let name = patch.name.map(|n| check(&mut errors, "name", Name::parse(&n)));
        let from_email = patch
            .from_email
            .map(|e| e.and_then(|e| check(&mut errors, "from_email", Email::parse(&e)).map(|e| e.to_string())));
        let from_name = patch
            .from_name
            .map(|n| n.and_then(|n| check(&mut errors, "from_name", Name::parse(&n)).map(Name::into_inner)));
        let origins = patch.allowed_origins.map(|list| {
            if list.len() > 50 {
                errors.push(FieldError::new("allowed_origins", "too_many"));
            }
            list.iter()
                .enumerate()
                .filter_map(|(i, o)| check(&mut errors, &format!("allowed_origins[{i}]"), OriginPattern::parse(o)))
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
        });
        if !errors.is_empty() {
            return Err(AppError::validation(errors));
        }
        let mut tx = self.db.begin().await?;
        let mut store = tx.lock_store(store_id).await?.ok_or(AppError::NotFound("store"))?;
        if let Some(Some(name)) = name {
            store.name = name.into_inner();
        }
        if let Some(v) = from_email {
            store.from_email = v;
        }
        if let Some(v) = from_name {
            store.from_name = v;
        }
        if let Some(v) = origins {
            store.allowed_origins = v;
        }
        if let Some(v) = patch.consent_full_ip {
            store.consent_full_ip = v;
        }
        store.updated_at = crate::now();
        tx.update_store(&store).await?;
        tx.commit().await?;
        Ok(store)
    }

    pub async fn create_api_key(&self, store_id: Uuid, name: &str) -> AppResult<NewApiKey> {
        let name = Name::parse(name).map_err(|e| AppError::invalid("name", e))?;
        // Random part first, so the shown prefix tells keys apart; the store id last.
        let mut raw = [0u8; 48];
        raw[..32].copy_from_slice(&random_bytes::<32>());
        raw[32..].copy_from_slice(store_id.as_bytes());
        let secret = format!("{API_KEY_PREFIX}{}", b64(&raw));
        let key = ApiKeyRow {
            store_id,
            id: Uuid::now_v7(),
            name: name.into_inner(),
            prefix: secret[..API_KEY_PREFIX.len() + 8].to_string(),
            created_at: crate::now(),
            last_used_at: None,
            revoked_at: None,
        };
        self.db.auto().insert_api_key(&key, &sha256(secret.as_bytes())).await?;
        Ok(NewApiKey { key, secret })
    }

    pub async fn api_keys(&self, store_id: Uuid, after: Option<Uuid>, limit: u32) -> AppResult<Vec<ApiKeyRow>> {
        Ok(self.db.auto().api_keys(store_id, after, limit).await?)
    }

    pub async fn revoke_api_key(&self, store_id: Uuid, id: Uuid) -> AppResult<()> {
        if self.db.auto().revoke_api_key(store_id, id, crate::now()).await? {
            Ok(())
        } else {
            Err(AppError::NotFound("api key"))
        }
    }
}
