//! Platform accounts: password login, rotating refresh tokens, logout.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::config::Limits;
use crate::crypto::{ACCOUNT_TOKEN_TYPE, AccountClaims, Keys, random_token, sha256};
use crate::domain::{Email, Password};
use crate::error::{AppError, AppResult};
use crate::repo::{AccountRow, AccountSessionRow, RefreshRotation, Repo, RotateOutcome, StoreRow};

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
    repo: Arc<dyn Repo>,
    keys: Keys,
    limits: Limits,
    /// Verified against when the email is unknown, so both failures cost the same time.
    dummy_hash: OnceCell<String>,
}

fn invalid_credentials() -> AppError {
    AppError::Unauthorized { code: "invalid_credentials", message: "email or password is wrong".into() }
}

async fn hash_password(password: String) -> AppResult<String> {
    tokio::task::spawn_blocking(move || Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()))
        .await
        .map_err(AppError::internal)?
        .map_err(|e| AppError::internal(anyhow::anyhow!("argon2: {e}")))
}

async fn verify_password(password: String, phc: String) -> AppResult<bool> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
        Ok::<_, anyhow::Error>(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .map_err(AppError::internal)?
    .map_err(AppError::internal)
}

impl Accounts {
    pub fn new(repo: Arc<dyn Repo>, keys: Keys, limits: Limits) -> Self {
        Self { repo, keys, limits, dummy_hash: OnceCell::new() }
    }

    pub async fn create(&self, email: &str, password: &str) -> AppResult<AccountRow> {
        let email = Email::parse(email).map_err(|e| AppError::invalid("email", e))?;
        let password = Password::parse(password).map_err(|e| AppError::invalid("password", e))?;
        let now = crate::now();
        let account = AccountRow {
            id: Uuid::now_v7(),
            email: email.to_string(),
            password_hash: hash_password(password.expose().to_string()).await?,
            created_at: now,
            updated_at: now,
        };
        match self.repo.insert_account(&account, &email.key()).await {
            Err(crate::repo::RepoError::Conflict) => {
                Err(AppError::Conflict { code: "email_taken", message: "an account with this email exists".into() })
            }
            other => other.map(|_| account).map_err(Into::into),
        }
    }

    pub async fn by_email(&self, email: &str) -> AppResult<AccountRow> {
        let email = Email::parse(email).map_err(|e| AppError::invalid("email", e))?;
        self.repo.account_by_email(&email.key()).await?.ok_or(AppError::NotFound("account"))
    }

    pub async fn login(&self, email: &str, password: &str, user_agent: Option<String>) -> AppResult<IssuedTokens> {
        let email = Email::parse(email).map_err(|e| AppError::invalid("email", e))?;
        if password.is_empty() {
            return Err(AppError::invalid("password", "required"));
        }
        if password.len() > 1024 {
            return Err(invalid_credentials());
        }
        let account = self.repo.account_by_email(&email.key()).await?;
        let phc = match &account {
            Some(a) => a.password_hash.clone(),
            None => self.dummy_hash.get_or_try_init(|| hash_password(crate::crypto::random_hex(16))).await?.clone(),
        };
        let matches = verify_password(password.to_string(), phc).await?;
        let Some(account) = account.filter(|_| matches) else {
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
        self.repo.create_account_session(&session, &sha256(refresh_token.as_bytes())).await?;
        Ok(self.issue(&session, refresh_token, now))
    }

    pub async fn refresh(&self, refresh_token: &str) -> AppResult<IssuedTokens> {
        if refresh_token.trim().is_empty() {
            return Err(AppError::invalid("refresh_token", "required"));
        }
        let now = crate::now();
        let replacement = random_token();
        let rotation = RefreshRotation {
            presented: sha256(refresh_token.as_bytes()),
            replacement: sha256(replacement.as_bytes()),
            now,
            grace_secs: self.limits.refresh_reuse_grace.as_secs() as i64,
            refresh_expires_at: now + self.limits.refresh_token_ttl.as_secs() as i64,
        };
        match self.repo.rotate_account_refresh(&rotation).await? {
            RotateOutcome::Rotated(session) => Ok(self.issue(&session, replacement, now)),
            RotateOutcome::Reused => Err(AppError::Unauthorized {
                code: "refresh_token_reused",
                message: "this refresh token was already used; the session has been revoked".into(),
            }),
            RotateOutcome::Invalid => Err(AppError::Unauthorized {
                code: "invalid_refresh_token",
                message: "the refresh token is invalid, expired or revoked".into(),
            }),
        }
    }

    pub async fn logout(&self, session_id: Uuid) -> AppResult<()> {
        Ok(self.repo.revoke_account_session(session_id, crate::now()).await?)
    }

    pub async fn me(&self, account_id: Uuid) -> AppResult<(AccountRow, Vec<(StoreRow, String)>)> {
        let account =
            self.repo.account_by_id(account_id).await?.ok_or_else(|| AppError::unauthorized("account is gone"))?;
        let stores = self.repo.stores_of_account(account_id, None, 200).await?;
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
