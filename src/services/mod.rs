//! Business rules, one module per capability; no HTTP types, no SQL. A public method is one unit
//! of work: it opens the transaction (`Database::begin`), reads what its decision depends on
//! inside it, with the locks it needs, writes, and commits.

pub mod accounts;
pub mod audiences;
pub mod auth;
pub mod checkout;
pub mod consents;
pub mod events;
pub mod exports;
pub mod imports;
pub mod limits;
pub mod me_cache;
pub mod outbox;
pub mod payments;
pub mod profiles;
pub mod seed;
pub mod segments;
pub mod sessions;
pub mod stores;
pub mod taxonomies;
pub mod templates;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::Config;
use crate::crypto::Keys;
use crate::error::{AppError, AppResult};
use crate::payments::PaymentGateway;
use crate::repo::Database;

/// Every service, sharing one database handle and one key set.
pub struct Services {
    pub accounts: accounts::Accounts,
    pub audiences: audiences::Audiences,
    pub auth: auth::Auth,
    pub consents: consents::Consents,
    pub events: events::Events,
    pub exports: exports::Exports,
    pub imports: imports::Imports,
    pub outbox: outbox::Outbox,
    pub payments: payments::Payments,
    pub profiles: profiles::Profiles,
    pub segments: segments::Segments,
    pub sessions: sessions::Sessions,
    pub stores: stores::Stores,
    pub taxonomies: taxonomies::Taxonomies,
    pub templates: templates::Templates,
}

impl Services {
    pub fn new(
        db: Database,
        keys: Keys,
        config: &Config,
        mail_wake: Arc<Notify>,
        webhook_wake: Arc<Notify>,
        gateway: Option<Arc<dyn PaymentGateway>>,
    ) -> Self {
        let limits = config.limits.clone();
        let mail_from = config.mail_from.clone();
        Self {
            audiences: audiences::Audiences::new(
                db.clone(),
                keys.clone(),
                limits.clone(),
                config.public_base_url.clone(),
                mail_from.clone(),
                mail_wake.clone(),
                gateway.clone(),
            ),
            accounts: accounts::Accounts::new(db.clone(), keys.clone(), limits.clone()),
            auth: auth::Auth::new(db.clone(), keys.clone()),
            consents: consents::Consents::new(db.clone()),
            events: events::Events::new(
                db.clone(),
                keys.clone(),
                config.webhooks_allow_private,
                config.limits.event_feed_delay.as_secs() as i64,
                webhook_wake,
            ),
            outbox: outbox::Outbox::new(db.clone()),
            payments: payments::Payments::new(db.clone(), gateway),
            profiles: profiles::Profiles::new(db.clone()),
            segments: segments::Segments::new(db.clone()),
            exports: exports::Exports::new(db.clone()),
            imports: imports::Imports::new(db.clone()),
            sessions: sessions::Sessions::new(db.clone(), keys, limits, mail_from, mail_wake),
            stores: stores::Stores::new(db.clone(), config.cors_origin_cache),
            taxonomies: taxonomies::Taxonomies::new(db.clone()),
            templates: templates::Templates::new(db, config.public_base_url.clone()),
        }
    }
}

/// Attempts of a unit of work that the database gives up for a concurrent one.
const ATTEMPTS: u32 = 4;

/// Runs a unit of work again when the database gave it up so that a concurrent one could proceed
/// (a deadlock or serialization failure on Postgres, a busy database on SQLite); after
/// [`ATTEMPTS`] it answers 503 `contention`. Safe because a failed unit left nothing behind.
pub(crate) async fn retrying<T, F, Fut>(mut unit: F) -> AppResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = AppResult<T>>,
{
    let mut attempt = 1;
    loop {
        match unit().await {
            Err(AppError::Contention) if attempt < ATTEMPTS => {
                let jitter = u64::from(rand::random::<u8>() % 20);
                tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt) + jitter)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}
