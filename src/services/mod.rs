//! Business rules, one module per capability. A method is one unit of work.

pub mod accounts;
pub mod audiences;
pub mod auth;
pub mod checkout;
pub mod limits;
pub mod payments;
pub mod profiles;
pub mod seed;
pub mod sessions;
pub mod stores;
pub mod taxonomies;
pub mod templates;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::Config;
use crate::crypto::Keys;
use crate::payments::PaymentGateway;
use crate::repo::Repo;

/// Every service, sharing one repository and one key set.
pub struct Services {
    pub accounts: accounts::Accounts,
    pub audiences: audiences::Audiences,
    pub auth: auth::Auth,
    pub payments: payments::Payments,
    pub profiles: profiles::Profiles,
    pub sessions: sessions::Sessions,
    pub stores: stores::Stores,
    pub taxonomies: taxonomies::Taxonomies,
    pub templates: templates::Templates,
}

impl Services {
    pub fn new(
        repo: Arc<dyn Repo>,
        keys: Keys,
        config: &Config,
        mail_wake: Arc<Notify>,
        gateway: Option<Arc<dyn PaymentGateway>>,
    ) -> Self {
        let limits = config.limits.clone();
        let mail_from = config.mail_from.clone();
        Self {
            audiences: audiences::Audiences::new(
                repo.clone(),
                keys.clone(),
                limits.clone(),
                config.public_base_url.clone(),
                mail_from.clone(),
                mail_wake.clone(),
                gateway.clone(),
            ),
            accounts: accounts::Accounts::new(repo.clone(), keys.clone(), limits.clone()),
            auth: auth::Auth::new(repo.clone(), keys.clone()),
            payments: payments::Payments::new(repo.clone(), gateway),
            profiles: profiles::Profiles::new(repo.clone()),
            sessions: sessions::Sessions::new(repo.clone(), keys, limits, mail_from, mail_wake),
            stores: stores::Stores::new(repo.clone(), config.cors_origin_cache),
            taxonomies: taxonomies::Taxonomies::new(repo.clone()),
            templates: templates::Templates::new(repo),
        }
    }
}
