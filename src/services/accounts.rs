//! Platform accounts: password login, rotating refresh tokens, logout.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use tokio::sync::{OnceCell, Semaphore};
use uuid::Uuid;

use crate::config::Limits;
use crate::crypto::{ACCOUNT_TOKEN_TYPE, AccountClaims, Keys, random_token, sha256};
use crate::domain::Role;
use crate::domain::{ClientAddr, Email, Password};
use crate::error::{AppError, AppResult};
use crate::repo::{AccountRow, AccountSessionRow, Database, RefreshTable, StoreRow};
use crate::services::auth::{Rotation, rotate_refresh};
use crate::services::limits::{self, Limit, address_bucket, email_bucket};

/// A freshly issued access + refresh token pair.
#[derive(Debug)]
pub struct IssuedTokens {
    pub session_id: Uuid,
    pub account_id: Uuid,
    pub access_token: String,
    pub refresh_token: String,
    pub access_expires_at: i64,
    pub refresh_expires_at: i64,
    pub created_at: i64,
}

pub struct Accounts {
    db: Database,
    keys: Keys,
    limits: Limits,
    hasher: Hasher,
    /// Verified against when the email is unknown, so both failures cost the same time.
    dummy_hash: OnceCell<String>,
}

pub(crate) fn refresh_reused() -> AppError {
    AppError::Unauthorized {
        code: "refresh_token_reused",
        message: "this refresh token was already used; the session has been revoked".into(),
    }
}

pub(crate) fn invalid_refresh() -> AppError {
    AppError::Unauthorized {
        code: "invalid_refresh_token",
        message: "the refresh token is invalid, expired or revoked".into(),
    }
}

/// A refused password, with the rule it broke.
fn password_error(e: &'static str) -> AppError {
    let hint = match e {
        "too_short" => " (at least 8 characters)",
        "too_long" => " (at most 1024 bytes)",
        _ => "",
    };
    AppError::Validation {
        message: format!("password: {e}{hint}"),
        errors: vec![crate::error::FieldError::new("password", e)],
    }
}

fn invalid_credentials() -> AppError {
    AppError::Unauthorized { code: "invalid_credentials", message: "email or password is wrong".into() }
}

/// argon2id off the async threads, at most `permits` at once: each hash takes 19 MiB and a core
/// for tens of milliseconds, so a flood of logins queues here instead of exhausting memory.
pub(crate) struct Hasher {
    permits: Arc<Semaphore>,
}

impl Hasher {
    pub fn new(concurrency: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(concurrency.max(1))) }
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> AppResult<T> {
        let _permit = self.permits.acquire().await.map_err(AppError::internal)?;
        tokio::task::spawn_blocking(work).await.map_err(AppError::internal)
    }

    pub async fn hash(&self, password: String) -> AppResult<String> {
        self.run(move || Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()))
            .await?
            .map_err(|e| AppError::internal(anyhow::anyhow!("argon2: {e}")))
    }

    pub async fn verify(&self, password: String, phc: String) -> AppResult<bool> {
        self.run(move || {
            let parsed = PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
            Ok::<_, anyhow::Error>(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await?
        .map_err(AppError::internal)
    }
}

impl Accounts {
    pub fn new(db: Database, keys: Keys, limits: Limits) -> Self {
        Self { hasher: Hasher::new(limits.password_hash_concurrency), db, keys, limits, dummy_hash: OnceCell::new() }
    }

    pub async fn create(&self, email: &str, password: &str) -> AppResult<AccountRow> {
        let email = Email::parse(email).map_err(|e| AppError::invalid("email", e))?;
        let password = Password::parse(password).map_err(password_error)?;
        let now = crate::now();
        let account = AccountRow {
            id: Uuid::now_v7(),
            email: email.to_string(),
            password_hash: self.hasher.hash(password.expose().to_string()).await?,
            created_at: now,
            updated_at: now,
        };
        self.db.auto().insert_account(&account, &email.key()).await?;
        Ok(account)
    }

    /// Sets a new password; the account's sessions stay (an operator resets, the owner logs in).
    pub async fn set_password(&self, email: &str, password: &str) -> AppResult<AccountRow> {
        let account = self.by_email(email).await?;
        let password = Password::parse(password).map_err(password_error)?;
        let hash = self.hasher.hash(password.expose().to_string()).await?;
        let now = crate::now();
        self.db.auto().set_password_hash(account.id, &hash, now).await?;
        Ok(AccountRow { password_hash: hash, updated_at: now, ..account })
    }

    pub async fn by_email(&self, email: &str) -> AppResult<AccountRow> {
        let email = Email::parse(email).map_err(|e| AppError::invalid("email", e))?;
        self.db.auto().account_by_email(&email.key()).await?.ok_or(AppError::NotFound("account"))
    }

    /// Failures are limited per email and per client address (§4 "Limits"); the address is
    /// checked first, and a limited attempt costs no password hash.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        user_agent: Option<String>,
        client: Option<ClientAddr>,
    ) -> AppResult<IssuedTokens> {
        let email = Email::parse(email).map_err(|e| AppError::invalid("email", e))?;
        if password.is_empty() {
            return Err(AppError::invalid("password", "required"));
        }
        let window = self.limits.login_limit_window;
        let by_address = client.map(|a| (address_bucket("login", a), self.limits.login_limit_per_address));
        let by_email = (email_bucket("login", &email.key()), self.limits.login_limit_per_email);
        let buckets: Vec<(String, u32)> = by_address.into_iter().chain([by_email]).collect();
        for (bucket, max) in &buckets {
            limits::check_account(&mut self.db.auto(), bucket, Limit { max: *max, window }).await?;
        }
        let account = self.db.auto().account_by_email(&email.key()).await?;
        let phc = match &account {
            Some(a) => a.password_hash.clone(),
            None => self.dummy_hash.get_or_try_init(|| self.hasher.hash(crate::crypto::random_hex(16))).await?.clone(),
        };
        // An over-long password is wrong by definition, but costs the same time as any other.
        let matches = self.hasher.verify(password.chars().take(1024).collect(), phc).await? && password.len() <= 1024;
        let Some(account) = account.filter(|_| matches) else {
            for (bucket, max) in &buckets {
                limits::count_account(&mut self.db.auto(), bucket, Limit { max: *max, window }).await?;
            }
            return Err(invalid_credentials());
        };
        let now = crate::now();
        let refresh_token = random_token();
        let session = AccountSessionRow {
            id: Uuid::now_v7(),
            account_id: account.id,
            user_agent: user_agent.map(|ua| ua.chars().take(512).collect()),
            created_at: now,
            last_used_at: now,
            refresh_expires_at: now + self.limits.refresh_token_ttl.as_secs() as i64,
            revoked_at: None,
        };
        self.db.auto().insert_account_session(&session, &sha256(refresh_token.as_bytes())).await?;
        Ok(self.issue(&session, refresh_token, now))
    }

    pub async fn refresh(&self, refresh_token: &str) -> AppResult<IssuedTokens> {
        let refresh_token = refresh_token.trim();
        if refresh_token.is_empty() {
            return Err(AppError::invalid("refresh_token", "required"));
        }
        crate::services::retrying(|| self.refresh_once(refresh_token)).await
    }

    async fn refresh_once(&self, refresh_token: &str) -> AppResult<IssuedTokens> {
        let now = crate::now();
        let mut tx = self.db.begin().await?;
        let rotation = rotate_refresh(
            &mut tx,
            &self.keys,
            RefreshTable::Accounts,
            refresh_token,
            now,
            self.limits.refresh_reuse_grace.as_secs() as i64,
            now + self.limits.refresh_token_ttl.as_secs() as i64,
        )
        .await?;
        let issued = match rotation {
            Rotation::Rotated { session_id, successor } => {
                let session = tx.account_session(session_id).await?.ok_or_else(invalid_refresh)?;
                Ok(self.issue(&session, successor, now))
            }
            Rotation::Reused => Err(refresh_reused()),
            Rotation::Invalid => Err(invalid_refresh()),
        };
        tx.commit().await?;
        issued
    }

    pub async fn logout(&self, session_id: Uuid) -> AppResult<()> {
        Ok(self.db.auto().revoke_session(RefreshTable::Accounts, session_id, crate::now()).await?)
    }

    pub async fn me(&self, account_id: Uuid) -> AppResult<(AccountRow, Vec<(StoreRow, Role)>)> {
        let mut db = self.db.auto();
        let account = db.account_by_id(account_id).await?.ok_or_else(|| AppError::unauthorized("account is gone"))?;
        let stores = db.stores_of_account(account_id, None, 200).await?;
        Ok((account, stores))
    }

    fn issue(&self, session: &AccountSessionRow, refresh_token: String, now: i64) -> IssuedTokens {
        let access_expires_at = now + self.limits.access_token_ttl.as_secs() as i64;
        let claims = AccountClaims {
            sub: session.account_id,
            sid: session.id,
            typ: ACCOUNT_TOKEN_TYPE.into(),
            iat: now,
            exp: access_expires_at,
        };
        IssuedTokens {
            session_id: session.id,
            account_id: session.account_id,
            access_token: self.keys.sign(&claims),
            refresh_token,
            access_expires_at,
            refresh_expires_at: session.refresh_expires_at,
            created_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_hashes_queue_behind_the_cap() {
        let hasher = Arc::new(Hasher::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let jobs = (0..8).map(|_| {
            let (hasher, running, peak) = (hasher.clone(), running.clone(), peak.clone());
            tokio::spawn(async move {
                hasher
                    .run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(30));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                    .unwrap();
            })
        });
        for job in jobs.collect::<Vec<_>>() {
            job.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2, "never more than the cap at once, and the cap is used");
    }
}
