//! Who is calling: account tokens and store API keys, checked against the database on every
//! request so a logout or a revocation takes effect at once, on every instance.

use std::sync::Arc;

use uuid::Uuid;

use crate::crypto::{ACCOUNT_TOKEN_TYPE, AccountClaims, Keys, sha256, unb64};
use crate::error::{AppError, AppResult};
use crate::repo::{Repo, SessionMembership};

pub const API_KEY_PREFIX: &str = "sk_";

/// An account, authenticated by an access token of a live session.
#[derive(Debug, Clone, Copy)]
pub struct AccountAuth {
    pub account_id: Uuid,
    pub session_id: Uuid,
}

#[derive(Debug, Clone)]
pub enum Actor {
    Account { account_id: Uuid, session_id: Uuid, role: String },
    ApiKey { key_id: Uuid },
}

/// An admin of one store: a member account or one of the store's API keys.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    pub store_id: Uuid,
    pub actor: Actor,
}

pub struct Auth {
    repo: Arc<dyn Repo>,
    keys: Keys,
}

fn invalid_token() -> AppError {
    AppError::unauthorized("the bearer token is invalid, expired or revoked")
}

/// The store an API key belongs to is part of the key, so a key of another store is told apart
/// from a wrong key without a lookup outside the store's rows.
pub fn api_key_store(key: &str) -> Option<Uuid> {
    let bytes = unb64(key.strip_prefix(API_KEY_PREFIX)?)?;
    (bytes.len() == 48).then(|| Uuid::from_slice(&bytes[32..]).ok()).flatten()
}

impl Auth {
    pub fn new(repo: Arc<dyn Repo>, keys: Keys) -> Self {
        Self { repo, keys }
    }

    fn account_claims(&self, bearer: &str) -> AppResult<AccountClaims> {
        let claims: AccountClaims = self.keys.verify(bearer).ok_or_else(invalid_token)?;
        if claims.typ != ACCOUNT_TOKEN_TYPE {
            return Err(AppError::Forbidden("this route needs an account token".into()));
        }
        Ok(claims)
    }

    pub async fn account(&self, bearer: &str) -> AppResult<AccountAuth> {
        if bearer.starts_with(API_KEY_PREFIX) {
            return Err(AppError::Forbidden("this route needs an account token, not an API key".into()));
        }
        let claims = self.account_claims(bearer)?;
        if !self.repo.account_session_live(claims.sid, claims.sub).await? {
            return Err(invalid_token());
        }
        Ok(AccountAuth { account_id: claims.sub, session_id: claims.sid })
    }

    pub async fn admin(&self, store_id: Uuid, bearer: &str) -> AppResult<AdminAuth> {
        if bearer.starts_with(API_KEY_PREFIX) {
            let key_store = api_key_store(bearer).ok_or_else(invalid_token)?;
            let key_id = self
                .repo
                .use_api_key(key_store, &sha256(bearer.as_bytes()), crate::now())
                .await?
                .ok_or_else(invalid_token)?;
            if key_store != store_id {
                return Err(AppError::NotFound("store"));
            }
            return Ok(AdminAuth { store_id, actor: Actor::ApiKey { key_id } });
        }
        let claims = self.account_claims(bearer)?;
        match self.repo.membership_via_session(claims.sid, claims.sub, store_id).await? {
            SessionMembership::SessionDead => Err(invalid_token()),
            SessionMembership::NotMember => Err(AppError::NotFound("store")),
            SessionMembership::Member { role } => Ok(AdminAuth {
                store_id,
                actor: Actor::Account { account_id: claims.sub, session_id: claims.sid, role },
            }),
        }
    }
}
