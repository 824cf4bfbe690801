//! Business rules, one module per capability. A method is one unit of work.

pub mod accounts;
pub mod auth;
pub mod profiles;
pub mod seed;
pub mod stores;
pub mod taxonomies;

use std::sync::Arc;

use crate::config::Limits;
use crate::crypto::Keys;
use crate::repo::Repo;

/// Every service, sharing one repository and one key set.
pub struct Services {
    pub accounts: accounts::Accounts,
    pub auth: auth::Auth,
    pub profiles: profiles::Profiles,
    pub stores: stores::Stores,
    pub taxonomies: taxonomies::Taxonomies,
}

impl Services {
    pub fn new(repo: Arc<dyn Repo>, keys: Keys, limits: Limits) -> Self {
        Self {
            accounts: accounts::Accounts::new(repo.clone(), keys.clone(), limits),
            auth: auth::Auth::new(repo.clone(), keys),
            profiles: profiles::Profiles::new(repo.clone()),
            stores: stores::Stores::new(repo.clone()),
            taxonomies: taxonomies::Taxonomies::new(repo),
        }
    }
}
