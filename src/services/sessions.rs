//! Profile sessions (§4): guests, connect, magic-code login, rotating refresh, revocation.

use std::sync::Arc;

use rand::Rng;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::Limits;
use crate::crypto::{Keys, PROFILE_TOKEN_TYPE, ProfileClaims, random_token, sha256};
use crate::domain::{ClientAddr, Email};
use crate::error::{AppError, AppResult};
use crate::mail::{OutgoingMail, mailbox_display};
use crate::repo::{
    CodeCheck, NewCode, NewOutboxMail, OpenOutcome, OpenSession, ProfileDetails, ProfileSessionRow, RefreshRotation,
    Repo, RepoError, RotateOutcome, SessionSummary, StoreRow, SweepReport,
};
use crate::services::auth::{ProfileAuth, ProfileToken, invalid_token};
use crate::services::limits::{Limit, RateLimits, address_bucket, email_bucket};
use crate::services::templates::profile_code_mail;

/// A profile session's fresh token pair.
#[derive(Debug)]
pub struct IssuedProfileTokens {
    pub session: ProfileSessionRow,
    pub access_token: String,
    pub refresh_token: String,
    pub access_expires_at: i64,
}

/// `getMe`: the profile, or only its top-level fields when the session is a claim, not proof.
pub struct Me {
    pub details: ProfileDetails,
    pub redacted: bool,
}

pub struct Sessions {
    repo: Arc<dyn Repo>,
    rate_limits: RateLimits,
    keys: Keys,
    limits: Limits,
    mail_from: String,
    mail_wake: Arc<Notify>,
}

fn invalid_code() -> AppError {
    AppError::Unauthorized { code: "invalid_code", message: "the code is wrong, expired or used up".into() }
}

/// A 6-digit code from the thread-local CSPRNG.
fn new_code() -> String {
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

fn code_scope(store_id: Uuid, email_key: &str) -> Vec<u8> {
    let mut scope = store_id.as_bytes().to_vec();
    scope.extend_from_slice(email_key.as_bytes());
    scope
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// The built-in code mail: the code leads the subject, where inbox lists show it.
pub fn code_mail(store: &StoreRow, default_from: &str, to: &Email, code: &str, minutes: u64) -> OutgoingMail {
    let from = match &store.from_email {
        Some(email) => mailbox_display(store.from_name.as_deref().unwrap_or(&store.name), email),
        None => default_from.to_string(),
    };
    let name = &store.name;
    OutgoingMail {
        from,
        to: to.to_string(),
        reply_to: None,
        subject: format!("{code} is your {name} sign-in code"),
        text: format!(
            "Your {name} sign-in code is {code}\n\nIt works once, for {minutes} minutes.\n\
             If you did not ask for it, you can ignore this mail.\n"
        ),
        html: format!(
            "<!doctype html><html><body style=\"font-family:sans-serif\">\
             <p>Your {n} sign-in code is</p>\
             <p style=\"font-size:28px;font-weight:bold;letter-spacing:4px\">{code}</p>\
             <p>It works once, for {minutes} minutes. If you did not ask for it, you can ignore this mail.</p>\
             </body></html>",
            n = html_escape(name)
        ),
        headers: vec![],
    }
}

impl Sessions {
    pub fn new(repo: Arc<dyn Repo>, keys: Keys, limits: Limits, mail_from: String, mail_wake: Arc<Notify>) -> Self {
        Self { rate_limits: RateLimits::new(repo.clone()), repo, keys, limits, mail_from, mail_wake }
    }

    fn issue(&self, session: ProfileSessionRow, refresh_token: String, now: i64) -> IssuedProfileTokens {
        let access_expires_at = now + self.limits.access_token_ttl.as_secs() as i64;
        let claims = ProfileClaims {
            sub: session.profile_id,
            store: session.store_id,
            sid: session.id,
            ver: session.verified,
            typ: PROFILE_TOKEN_TYPE.into(),
            iat: now,
            exp: access_expires_at,
        };
        IssuedProfileTokens { access_token: self.keys.sign(&claims), refresh_token, access_expires_at, session }
    }

    async fn open(
        &self,
        store_id: Uuid,
        email: Option<Email>,
        caller: Option<Uuid>,
        code: Option<CodeCheck>,
        user_agent: Option<String>,
    ) -> AppResult<IssuedProfileTokens> {
        let now = crate::now();
        let refresh_token = random_token();
        let open = OpenSession {
            store_id,
            email,
            caller,
            code,
            new_profile_id: Uuid::now_v7(),
            session_id: Uuid::now_v7(),
            user_agent: user_agent.map(|ua| ua.chars().take(512).collect()),
            refresh_hash: sha256(refresh_token.as_bytes()),
            refresh_expires_at: now + self.limits.refresh_token_ttl.as_secs() as i64,
            now,
        };
        // A concurrent request may take the same new email between our read and write: once more.
        let mut outcome = self.repo.open_profile_session(&open).await;
        if matches!(outcome, Err(RepoError::Conflict)) {
            outcome = self.repo.open_profile_session(&open).await;
        }
        match outcome? {
            OpenOutcome::Opened(session) => Ok(self.issue(session, refresh_token, now)),
            OpenOutcome::WrongCode => Err(invalid_code()),
            OpenOutcome::NoStore => Err(AppError::NotFound("store")),
        }
    }

    /// `initialize` and `connect` per client address: each opens a session, and `connect` names
    /// any address, so a script would otherwise mint sessions (and probe profiles) without end.
    async fn limit_opening(&self, store_id: Uuid, client: Option<ClientAddr>) -> AppResult<()> {
        let Some(addr) = client else { return Ok(()) };
        let limit = Limit { max: self.limits.session_limit_per_address, window: self.limits.session_limit_window };
        self.rate_limits.hit(store_id, &address_bucket("session", addr), limit).await
    }

    /// A new anonymous guest profile with an unverified session.
    pub async fn initialize(
        &self,
        store_id: Uuid,
        user_agent: Option<String>,
        client: Option<ClientAddr>,
    ) -> AppResult<IssuedProfileTokens> {
        self.limit_opening(store_id, client).await?;
        self.open(store_id, None, None, None, user_agent).await
    }

    /// An unverified session for the profile with this email (§4 resolution).
    pub async fn connect(
        &self,
        store_id: Uuid,
        email: &str,
        caller: Option<&ProfileAuth>,
        user_agent: Option<String>,
        client: Option<ClientAddr>,
    ) -> AppResult<IssuedProfileTokens> {
        let email = Email::parse(email).map_err(|e| AppError::invalid("email", e))?;
        self.limit_opening(store_id, client).await?;
        self.open(store_id, Some(email), caller.map(|c| c.profile_id), None, user_agent).await
    }

    /// Sends a code to any valid address, known or not; the answer is the same either way.
    pub async fn request_code(&self, store: &StoreRow, email: &str, client: Option<ClientAddr>) -> AppResult<()> {
        let email = Email::parse(email).map_err(|e| AppError::invalid("email", e))?;
        let key = email.key();
        let now = crate::now();
        let window = self.limits.code_limit_window;
        // The address first: a client over its limit never spends the victim's per-email quota.
        if let Some(addr) = client {
            let limit = Limit { max: self.limits.code_limit_per_ip, window };
            self.rate_limits.hit(store.id, &address_bucket("code", addr), limit).await?;
        }
        let limit = Limit { max: self.limits.code_limit_per_email, window };
        self.rate_limits.hit(store.id, &email_bucket("code", &key), limit).await?;
        let code = new_code();
        let new = NewCode {
            store_id: store.id,
            id: Uuid::now_v7(),
            code_hash: self.keys.code_hash(&code_scope(store.id, &key), &code),
            email_key: key,
            created_at: now,
            expires_at: now + self.limits.code_ttl.as_secs() as i64,
        };
        let minutes = self.limits.code_ttl.as_secs().div_ceil(60);
        let builtin = code_mail(store, &self.mail_from, &email, &code, minutes);
        let mail = profile_code_mail(&*self.repo, store, builtin, &code, minutes).await?;
        self.repo.store_code(&new, &NewOutboxMail::new(Some(store.id), mail, now)).await?;
        self.mail_wake.notify_one();
        Ok(())
    }

    /// Exchanges a code for a verified session; the profile becomes verified.
    pub async fn verify(
        &self,
        store_id: Uuid,
        email: &str,
        code: &str,
        caller: Option<&ProfileAuth>,
        user_agent: Option<String>,
    ) -> AppResult<IssuedProfileTokens> {
        let email = Email::parse(email).map_err(|e| AppError::invalid("email", e));
        let code_ok = code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit());
        let email = match (email, code_ok) {
            (Ok(e), true) => e,
            (Err(e), true) => return Err(e),
            (Ok(_), false) => return Err(AppError::invalid("code", "invalid_code_format")),
            (Err(_), false) => {
                return Err(AppError::validation(vec![
                    crate::error::FieldError::new("email", "invalid_email"),
                    crate::error::FieldError::new("code", "invalid_code_format"),
                ]));
            }
        };
        let check = CodeCheck {
            code_hash: self.keys.code_hash(&code_scope(store_id, &email.key()), code),
            max_attempts: i64::from(self.limits.code_max_attempts),
        };
        self.open(store_id, Some(email), caller.map(|c| c.profile_id), Some(check), user_agent).await
    }

    pub async fn refresh(&self, store_id: Uuid, refresh_token: &str) -> AppResult<IssuedProfileTokens> {
        let refresh_token = refresh_token.trim();
        if refresh_token.is_empty() {
            return Err(AppError::invalid("refresh_token", "required"));
        }
        let now = crate::now();
        let successor = self.keys.refresh_successor(refresh_token);
        let rotation = RefreshRotation {
            presented: sha256(refresh_token.as_bytes()),
            replacement: sha256(successor.as_bytes()),
            now,
            grace_secs: self.limits.refresh_reuse_grace.as_secs() as i64,
            refresh_expires_at: now + self.limits.refresh_token_ttl.as_secs() as i64,
        };
        match self.repo.rotate_profile_refresh(store_id, &rotation).await? {
            RotateOutcome::Rotated(session) => Ok(self.issue(session, successor, now)),
            RotateOutcome::Reused => Err(crate::services::accounts::refresh_reused()),
            RotateOutcome::Invalid => Err(crate::services::accounts::invalid_refresh()),
        }
    }

    /// §4: a claim (an unverified session that reached an existing address) sees only the
    /// top-level fields. The session check and the profile are one query, so a revoked session is
    /// refused right here.
    pub async fn me(&self, token: &ProfileToken) -> AppResult<Me> {
        let (holds, details) = self
            .repo
            .profile_me(token.store_id, token.session_id, token.profile_id, crate::now())
            .await?
            .ok_or_else(invalid_token)?;
        if !holds {
            let profile = details.profile;
            return Ok(Me {
                details: ProfileDetails {
                    profile,
                    values: vec![],
                    promo_usage: vec![],
                    sessions: vec![],
                    codes: vec![],
                },
                redacted: true,
            });
        }
        Ok(Me { details, redacted: false })
    }

    pub async fn list(&self, store_id: Uuid, profile_id: Uuid) -> AppResult<Vec<SessionSummary>> {
        Ok(self.repo.profile_sessions(store_id, profile_id).await?)
    }

    pub async fn revoke(&self, store_id: Uuid, profile_id: Uuid, session_id: Uuid) -> AppResult<()> {
        if self.repo.revoke_profile_session(store_id, profile_id, session_id, crate::now()).await? {
            Ok(())
        } else {
            Err(AppError::NotFound("session"))
        }
    }

    pub async fn revoke_all(&self, store_id: Uuid, profile_id: Uuid) -> AppResult<u64> {
        Ok(self.repo.revoke_profile_sessions(store_id, profile_id, crate::now()).await?)
    }

    /// One janitor pass.
    pub async fn sweep(&self, now: i64) -> AppResult<SweepReport> {
        Ok(self.repo.sweep(now, now - self.limits.guest_ttl.as_secs() as i64).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..1000 {
            let c = new_code();
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn code_mail_leads_with_the_code_and_escapes_the_store_name() {
        let store = StoreRow {
            id: Uuid::now_v7(),
            name: "<Shop & Co>".into(),
            from_email: Some("hi@shop.example".into()),
            from_name: None,
            allowed_origins: vec![],
            created_at: 0,
            updated_at: 0,
        };
        let to = Email::parse("ann@example.com").unwrap();
        let mail = code_mail(&store, "x <no-reply@localhost>", &to, "123456", 10);
        assert!(mail.subject.starts_with("123456 "));
        assert!(mail.html.contains("&lt;Shop &amp; Co&gt;") && !mail.html.contains("<Shop"));
        assert!(mail.text.contains("123456") && mail.text.contains("10 minutes"));
        assert_eq!(mail.from, "Shop & Co <hi@shop.example>");
    }
}
