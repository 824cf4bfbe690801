//! Profile sessions (§4): guests, connect, magic-code login, rotating refresh, revocation, and
//! the identity resolution that `connect` and `verify` share.

use std::sync::Arc;

use rand::Rng;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::Limits;
use crate::crypto::{Keys, PROFILE_TOKEN_TYPE, ProfileClaims, constant_time_eq, random_token, sha256};
use crate::domain::{ClientAddr, Email, EventType, MailKind, Status, SubscriptionStatus};
use crate::error::{AppError, AppResult};
use crate::mail::{OutgoingMail, mailbox_display};
use crate::repo::{
    Backend, CodeLimits, CodeRequest, Database, LimitHit, NewCode, NewOutboxMail, NewProfile, ProfileDetails,
    ProfileSessionRow, RefreshTable, RepoError, SessionSummary, StoreRow, SubscriptionRow, SweepReport,
};
use crate::services::auth::{ProfileAuth, ProfileToken, Rotation, invalid_token, rotate_refresh};
use crate::services::consents::{Consent, ConsentAction};
use crate::services::limits::{self, Limit, address_bucket, email_bucket};
use crate::services::me_cache::MeCache;
use crate::services::profiles::merge_into;
use crate::services::templates::{PROFILE_CODE_KEY, profile_code_mail};
use crate::services::{events, retrying};
use crate::views;

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
    /// The answer's body, rendered by the first request that sends it: a remembered answer
    /// (`me_cache`) is sent again without building it anew.
    pub rendered: std::sync::OnceLock<Vec<u8>>,
}

impl Me {
    pub fn new(details: ProfileDetails) -> Self {
        Self { details, rendered: std::sync::OnceLock::new() }
    }
}

pub struct Sessions {
    db: Database,
    keys: Keys,
    limits: Limits,
    mail_from: String,
    mail_wake: Arc<Notify>,
    /// Postgres only: SQLite answers getMe in-process, where the version check would cost about
    /// what it saves.
    me_cache: Option<MeCache>,
}

/// A magic code to check while opening a session.
struct CodeCheck {
    code_hash: [u8; 32],
    max_attempts: i64,
}

/// Rows deleted per janitor statement, so a large backlog never becomes one huge transaction.
const SWEEP_BATCH: i64 = 1000;

/// What opening a session did to the profiles, for its events.
enum Change {
    None,
    Created,
    Updated,
    /// The caller's guest profile was merged into the one with the email.
    Merged(Uuid),
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
        message_id: None,
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
    pub fn new(db: Database, keys: Keys, limits: Limits, mail_from: String, mail_wake: Arc<Notify>) -> Self {
        let me_cache = match db.backend() {
            Backend::Postgres => MeCache::new(limits.me_cache_entries),
            Backend::Sqlite => None,
        };
        Self { db, keys, limits, mail_from, mail_wake, me_cache }
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

    fn new_session(
        &self,
        store_id: Uuid,
        profile_id: Uuid,
        verified: bool,
        user_agent: Option<String>,
        now: i64,
    ) -> ProfileSessionRow {
        ProfileSessionRow {
            store_id,
            id: Uuid::now_v7(),
            profile_id,
            verified,
            user_agent: user_agent.map(|ua| ua.chars().take(512).collect()),
            created_at: now,
            last_used_at: now,
            refresh_expires_at: now + self.limits.refresh_token_ttl.as_secs() as i64,
        }
    }

    /// §4 identity resolution, shared by `connect` (no code) and `verify` (with a code), in one
    /// transaction. If no profile of the store has the email, it goes to a calling guest without
    /// email (the upgrade keeps the profile id), else to a new profile; if a profile has it, the
    /// session is for that profile and a calling guest without email is merged into it (§3.1).
    /// Only a code makes the session verified (and the profile with it); the session that gave a
    /// profile its email holds it too; any other is a claim.
    async fn open(
        &self,
        store_id: Uuid,
        email: &Email,
        caller: Option<Uuid>,
        code: Option<&CodeCheck>,
        user_agent: Option<String>,
    ) -> AppResult<IssuedProfileTokens> {
        // A concurrent request may give the same new email to another profile between our read
        // and write (a unique violation): resolved again, it finds that profile.
        let mut attempt = 0;
        loop {
            let once = retrying(|| self.open_once(store_id, email, caller, code, user_agent.clone())).await;
            match once {
                Err(AppError::Conflict { code: "email_taken", .. }) if attempt == 0 => attempt += 1,
                other => return other,
            }
        }
    }

    async fn open_once(
        &self,
        store_id: Uuid,
        email: &Email,
        caller: Option<Uuid>,
        code: Option<&CodeCheck>,
        user_agent: Option<String>,
    ) -> AppResult<IssuedProfileTokens> {
        let now = crate::now();
        let key = email.key();
        let mut tx = self.db.begin().await?;
        if let Some(check) = code {
            let live = tx.live_code(store_id, &key, now, check.max_attempts).await?;
            let Some(live) = live else { return Err(invalid_code()) };
            if !constant_time_eq(&live.code_hash, &check.code_hash) {
                // The wrong guess counts even though the answer is an error.
                tx.count_code_attempt(store_id, live.id).await?;
                tx.commit().await?;
                return Err(invalid_code());
            }
            tx.use_code(store_id, live.id, now).await?;
        }
        // The caller and the profile that has the email, locked together in id order, then
        // checked again: a concurrent connect may have given the caller an email meanwhile.
        // `connect` also reads the address's codes: a profile it creates shows them in its event.
        let (existing, codes) = if code.is_none() && crate::repo::RECORDING_EVENTS {
            tx.profile_id_and_codes_by_email(store_id, &key).await?
        } else {
            (tx.profile_id_by_email(store_id, &key).await?, vec![])
        };
        let locked = tx.lock_profiles(store_id, &[caller, existing].into_iter().flatten().collect::<Vec<_>>()).await?;
        let caller_is_guest = caller.is_some_and(|c| locked.iter().any(|p| p.row.id == c && p.email_key.is_none()));
        let existing =
            existing.filter(|id| locked.iter().any(|p| p.row.id == *id && p.email_key.as_deref() == Some(&key)));
        let mut attached_email = false;
        let mut change = Change::None;
        // A profile created here: its `profile.created` object is built, not read back.
        let mut created_view = None;
        let profile_id = match (existing, caller) {
            (Some(found), Some(guest)) if caller_is_guest && guest != found => {
                // The guest's cart, subscriptions and orders carry over into the known profile.
                merge_into(&mut tx, store_id, found, guest, now).await?;
                change = Change::Merged(guest);
                found
            }
            (Some(found), _) => found,
            (None, Some(guest)) if caller_is_guest => {
                if !tx.attach_email(store_id, guest, email, now).await? {
                    return Err(AppError::Contention);
                }
                tx.refresh_search_text(store_id, &[guest]).await?;
                attached_email = true;
                change = Change::Updated;
                guest
            }
            (None, _) => {
                let new = NewProfile {
                    store_id,
                    id: Uuid::now_v7(),
                    email: Some(email.clone()),
                    verified: false,
                    status: Status::Active,
                    values: vec![],
                    created_at: now,
                };
                match tx.insert_profile(&new).await {
                    Err(RepoError::MissingReference) => return Err(AppError::NotFound("store")),
                    Ok(false) => return Err(AppError::Conflict { code: "email_taken", message: String::new() }),
                    other => other?,
                };
                attached_email = true;
                change = Change::Created;
                let id = new.id;
                created_view = Some(new);
                id
            }
        };
        let verified = code.is_some();
        let newly_verified = verified && tx.set_verified(store_id, profile_id, now).await?;
        let session = self.new_session(store_id, profile_id, verified, user_agent, now);
        let refresh_token = random_token();
        // A new profile with no code to check (connect): nothing was written to it but the
        // session, so its event is built from what this transaction wrote and the address's
        // codes, and goes in with the session.
        let created = match created_view {
            Some(new) if code.is_none() && crate::repo::RECORDING_EVENTS => Some(events::new_event(
                store_id,
                EventType::ProfileCreated,
                Some(profile_id),
                views::Profile::opened(new, &session, codes),
            )),
            _ => None,
        };
        tx.insert_profile_session(&session, attached_email, &sha256(refresh_token.as_bytes()), created.as_ref())
            .await?;
        // The events of what changed, with the profile as it is now (one read for all of them).
        let mut kinds = vec![];
        match change {
            Change::None => {}
            Change::Created if created.is_some() => {}
            Change::Created => kinds.push(EventType::ProfileCreated),
            Change::Updated => kinds.push(EventType::ProfileUpdated),
            Change::Merged(guest) => {
                let ids = serde_json::json!({ "target_id": profile_id, "source_id": guest });
                events::record(&mut tx, store_id, EventType::ProfileMerged, None, ids).await?;
                kinds.push(EventType::ProfileUpdated);
            }
        }
        if newly_verified {
            kinds.push(EventType::ProfileVerified);
        }
        events::profile_events(&mut tx, store_id, profile_id, &kinds).await?;
        tx.commit().await?;
        Ok(self.issue(session, refresh_token, now))
    }

    /// `initialize` and `connect` per client address: each opens a session, and `connect` names
    /// any address, so a script would otherwise mint sessions (and probe profiles) without end.
    async fn limit_opening(&self, store_id: Uuid, client: Option<ClientAddr>) -> AppResult<()> {
        let Some(addr) = client else { return Ok(()) };
        let limit = Limit { max: self.limits.session_limit_per_address, window: self.limits.session_limit_window };
        limits::hit(&mut self.db.auto(), store_id, &address_bucket("session", addr), limit).await
    }

    /// A new anonymous guest profile with an unverified session: one statement on Postgres,
    /// the per-address limit included.
    pub async fn initialize(
        &self,
        store_id: Uuid,
        user_agent: Option<String>,
        client: Option<ClientAddr>,
    ) -> AppResult<IssuedProfileTokens> {
        let now = crate::now();
        let window = limits::Window::at(now, self.limits.session_limit_window);
        let bucket = client.map(|addr| address_bucket("session", addr));
        let limit = bucket.as_deref().map(|bucket| LimitHit {
            bucket,
            window_start: window.start,
            max: i64::from(self.limits.session_limit_per_address),
        });
        let session = self.new_session(store_id, Uuid::now_v7(), false, user_agent, now);
        let refresh_token = random_token();
        let created = events::new_event(
            store_id,
            EventType::ProfileCreated,
            Some(session.profile_id),
            views::Profile::guest(&session),
        );
        let mut tx = self.db.atomic().await?;
        let within = match tx.insert_guest(&session, &sha256(refresh_token.as_bytes()), &created, limit.as_ref()).await
        {
            Err(RepoError::MissingReference) => return Err(AppError::NotFound("store")),
            other => other?,
        };
        // Refused, the hit still counts.
        tx.commit().await?;
        if !within {
            return Err(window.exceeded());
        }
        Ok(self.issue(session, refresh_token, now))
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
        self.open(store_id, &email, caller.map(|c| c.profile_id), None, user_agent).await
    }

    /// Sends a code to any valid address, known or not; the answer is the same either way.
    /// On Postgres it costs two round trips: the store with its code template, then one
    /// statement that counts both limits and, within them, voids the old codes and writes the
    /// new code and its mail.
    pub async fn request_code(&self, store_id: Uuid, email: &str, client: Option<ClientAddr>) -> AppResult<()> {
        let (store, template) =
            self.db.auto().store_with_template(store_id, PROFILE_CODE_KEY).await?.ok_or(AppError::NotFound("store"))?;
        let email = Email::parse(email).map_err(|e| AppError::invalid("email", e))?;
        let key = email.key();
        let now = crate::now();
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
        let builtin = code_mail(&store, &self.mail_from, &email, &code, minutes);
        let mail = profile_code_mail(&store, template, builtin, &code, minutes);
        let mail = NewOutboxMail::new(Some(store.id), mail, now).kind(MailKind::SignInCode).masking(&code);
        let span = limits::Window::at(now, self.limits.code_limit_window);
        let address = client.map(|addr| address_bucket("code", addr));
        let counted = CodeLimits {
            address_bucket: address.as_deref(),
            address_max: i64::from(self.limits.code_limit_per_ip),
            email_bucket: &email_bucket("code", &new.email_key),
            email_max: i64::from(self.limits.code_limit_per_email),
            window_start: span.start,
        };
        let mut tx = self.db.atomic().await?;
        let outcome = match tx.request_code(&counted, &new, &mail).await {
            Err(RepoError::MissingReference) => return Err(AppError::NotFound("store")),
            other => other?,
        };
        // Refused, the hits still count.
        tx.commit().await?;
        if outcome != CodeRequest::Sent {
            return Err(span.exceeded());
        }
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
        self.open(store_id, &email, caller.map(|c| c.profile_id), Some(&check), user_agent).await
    }

    pub async fn refresh(&self, store_id: Uuid, refresh_token: &str) -> AppResult<IssuedProfileTokens> {
        let refresh_token = refresh_token.trim();
        if refresh_token.is_empty() {
            return Err(AppError::invalid("refresh_token", "required"));
        }
        retrying(|| self.refresh_once(store_id, refresh_token)).await
    }

    async fn refresh_once(&self, store_id: Uuid, refresh_token: &str) -> AppResult<IssuedProfileTokens> {
        let now = crate::now();
        let mut tx = self.db.begin().await?;
        let table = RefreshTable::Profiles { store_id };
        let rotation = rotate_refresh(
            &mut tx,
            &self.keys,
            table,
            refresh_token,
            now,
            self.limits.refresh_reuse_grace.as_secs() as i64,
            now + self.limits.refresh_token_ttl.as_secs() as i64,
        )
        .await?;
        let issued = match rotation {
            Rotation::Rotated { session_id, successor } => {
                let session = tx.profile_session(store_id, session_id).await?.ok_or_else(invalid_refresh)?;
                Ok(self.issue(session, successor, now))
            }
            Rotation::Reused => Err(crate::services::accounts::refresh_reused()),
            Rotation::Invalid => Err(invalid_refresh()),
        };
        tx.commit().await?;
        issued
    }

    /// §4: a claim (an unverified session that reached an existing address) sees only the
    /// top-level fields. The session check and the profile are one query, so a revoked session is
    /// refused right here. On Postgres a remembered answer (`me_cache`) is served after one read
    /// of the profile's version instead.
    pub async fn me(&self, token: &ProfileToken) -> AppResult<Arc<Me>> {
        let now = crate::now();
        let mut db = self.db.auto();
        if let Some(cache) = &self.me_cache
            && let Some(remembered) = cache.get(token, now)
        {
            match db.profile_version(token.store_id, token.profile_id).await? {
                Some(version) if version == remembered.version => {
                    cache.count_hit();
                    return Ok(remembered.me);
                }
                None => {
                    cache.forget(token.session_id);
                    return Err(invalid_token());
                }
                Some(_) => {}
            }
        }
        let Some(row) = db.profile_me(token.store_id, token.session_id, token.profile_id, now).await? else {
            if let Some(cache) = &self.me_cache {
                cache.forget(token.session_id);
            }
            return Err(invalid_token());
        };
        // The answer changes by itself when the first of its sessions ends (the caller's too).
        let valid_until = row.details.sessions.iter().map(|s| s.refresh_expires_at).min().unwrap_or(now);
        let me = Arc::new(if row.holds {
            Me::new(row.details)
        } else {
            let profile = row.details.profile;
            let details =
                ProfileDetails { profile, values: vec![], promo_usage: vec![], sessions: vec![], codes: vec![] };
            Me::new(details)
        });
        if let (Some(cache), Some(version)) = (&self.me_cache, row.version) {
            cache.count_miss();
            cache.put(token, version, valid_until, me.clone());
        }
        Ok(me)
    }

    /// The getMe cache's answers from memory and read in full since start (`None`: no cache).
    pub fn me_cache_counts(&self) -> Option<(u64, u64)> {
        self.me_cache.as_ref().map(MeCache::counts)
    }

    /// [`Self::me_cache_counts`] and the entries held.
    pub fn me_cache_stats(&self) -> Option<(u64, u64, usize)> {
        self.me_cache.as_ref().map(|c| {
            let (hits, misses) = c.counts();
            (hits, misses, c.entries())
        })
    }

    /// The profile's live sessions; 404 for a profile the store does not have.
    pub async fn list(&self, store_id: Uuid, profile_id: Uuid) -> AppResult<Vec<SessionSummary>> {
        let mut db = self.db.auto();
        db.profile(store_id, profile_id).await?.ok_or(AppError::NotFound("profile"))?;
        Ok(db.profile_sessions(store_id, profile_id, crate::now()).await?)
    }

    pub async fn revoke(&self, store_id: Uuid, profile_id: Uuid, session_id: Uuid) -> AppResult<()> {
        if self.db.auto().revoke_profile_session(store_id, profile_id, session_id, crate::now()).await? {
            Ok(())
        } else {
            Err(AppError::NotFound("session"))
        }
    }

    /// Logs the profile out everywhere; 404 for a profile the store does not have.
    pub async fn revoke_all(&self, store_id: Uuid, profile_id: Uuid) -> AppResult<u64> {
        let mut db = self.db.auto();
        db.profile(store_id, profile_id).await?.ok_or(AppError::NotFound("profile"))?;
        Ok(db.revoke_profile_sessions(store_id, profile_id, crate::now()).await?)
    }

    /// One janitor pass: guests without email idle past their lifetime, ended sessions, old codes
    /// and rate-limit windows; in batches, each its own statement.
    pub async fn sweep(&self, now: i64) -> AppResult<SweepReport> {
        let mut report = SweepReport::default();
        let cutoff = now - self.limits.guest_ttl.as_secs() as i64;
        loop {
            // A batch and its `profile.erased` events commit together.
            let mut tx = self.db.begin().await?;
            let gone = tx.delete_idle_guests(cutoff, SWEEP_BATCH).await?;
            for (store_id, id) in &gone {
                events::erased(&mut tx, *store_id, *id).await?;
            }
            tx.commit().await?;
            report.guests += gone.len() as u64;
            if gone.len() < SWEEP_BATCH as usize {
                break;
            }
        }
        loop {
            // Memberships past their scheduled end: `expired`, with `subscription.expired`.
            let mut tx = self.db.begin().await?;
            let due = tx.expire_ended_subscriptions(now, SWEEP_BATCH).await?;
            for before in &due {
                let after = SubscriptionRow { status: SubscriptionStatus::Expired, updated_at: now, ..before.clone() };
                let consent = Consent::new(ConsentAction::Expire);
                events::subscription_written(&mut tx, before.store_id, Some(before), &after, &consent).await?;
            }
            tx.commit().await?;
            report.expired += due.len() as u64;
            if due.len() < SWEEP_BATCH as usize {
                break;
            }
        }
        let mut db = self.db.auto();
        report.sessions = db.delete_ended_sessions(now).await?;
        report.codes = db.delete_old_codes(now).await?;
        report.rate_limits = db.delete_old_rate_limits(now).await?;
        report.sent_mail = db.delete_sent_mail(now - self.limits.mail_keep_sent.as_secs() as i64).await?;
        report.events = db.delete_old_events(now - self.limits.event_retention.as_secs() as i64).await?;
        Ok(report)
    }
}

fn invalid_refresh() -> AppError {
    crate::services::accounts::invalid_refresh()
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
            consent_full_ip: false,
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
