//! Who is calling: account tokens and store API keys, checked against the database on every
//! request so a logout or a revocation takes effect at once, on every instance.

use serde::Deserialize;
use uuid::Uuid;

use crate::crypto::{ACCOUNT_TOKEN_TYPE, AccountClaims, Keys, PROFILE_TOKEN_TYPE, TokenType, sha256, unb64};
use crate::domain::Role;
use crate::error::{AppError, AppResult};
use crate::repo::{Database, RefreshTable, SessionMembership, Tx};

pub const API_KEY_PREFIX: &str = "sk_";

/// Seconds between two records of an API key's use.
const API_KEY_TOUCH_INTERVAL: i64 = 60;

/// An account, authenticated by an access token of a live session.
#[derive(Debug, Clone, Copy)]
pub struct AccountAuth {
    pub account_id: Uuid,
    pub session_id: Uuid,
}

#[derive(Debug, Clone)]
pub enum Actor {
    Account { account_id: Uuid, session_id: Uuid, role: Role },
    ApiKey { key_id: Uuid },
}

/// An admin of one store: a member account or one of the store's API keys.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    pub store_id: Uuid,
    pub actor: Actor,
}

/// A profile, authenticated by an access token of a live session of this store.
#[derive(Debug, Clone, Copy)]
pub struct ProfileAuth {
    pub store_id: Uuid,
    pub profile_id: Uuid,
    pub session_id: Uuid,
    /// The session was opened with a magic code.
    pub verified: bool,
    /// The session holds the profile (§4 "Proof and claims"): it is verified, or it gave the
    /// profile its email, or the profile has none. Otherwise it is a claim: it named an address.
    pub holds: bool,
}

impl ProfileAuth {
    /// 403 `verification_required` for a claim.
    pub fn require_proof(&self) -> AppResult<()> {
        if self.holds { Ok(()) } else { Err(AppError::VerificationRequired) }
    }
}

/// A profile access token of this store, checked for signature, expiry and store but NOT against
/// the session store: no proof that the session is live. Only for routes whose own query refuses
/// a revoked or expired session (getMe), so that they cost one database round trip.
#[derive(Debug, Clone, Copy)]
pub struct ProfileToken {
    pub store_id: Uuid,
    pub profile_id: Uuid,
    pub session_id: Uuid,
}

/// Who may act on a profile: an admin of its store, or the profile itself.
#[derive(Debug, Clone)]
pub enum ProfileActor {
    Admin(AdminAuth),
    Itself(ProfileAuth),
}

/// The claims of any signed token that a profile check reads: its type, and the fields a
/// [`ProfileClaims`](crate::crypto::ProfileClaims) token has.
#[derive(Deserialize)]
struct TypedClaims {
    typ: String,
    sub: Option<Uuid>,
    store: Option<Uuid>,
    sid: Option<Uuid>,
}

pub struct Auth {
    db: Database,
    keys: Keys,
}

pub(crate) fn invalid_token() -> AppError {
    AppError::unauthorized("the bearer token is invalid, expired or revoked")
}

/// The store an API key belongs to is part of the key, so a key of another store is told apart
/// from a wrong key without a lookup outside the store's rows.
pub fn api_key_store(key: &str) -> Option<Uuid> {
    let bytes = unb64(key.strip_prefix(API_KEY_PREFIX)?)?;
    (bytes.len() == 48).then(|| Uuid::from_slice(&bytes[32..]).ok()).flatten()
}

impl Auth {
    pub fn new(db: Database, keys: Keys) -> Self {
        Self { db, keys }
    }

    /// `needs` says which credentials the route takes, for the 403 of a profile token.
    fn account_claims(&self, bearer: &str, needs: &str) -> AppResult<AccountClaims> {
        let claims: AccountClaims = self.keys.verify(bearer).ok_or_else(invalid_token)?;
        if claims.typ != ACCOUNT_TOKEN_TYPE {
            return Err(AppError::Forbidden(format!("this route needs {needs}, not a profile token")));
        }
        Ok(claims)
    }

    pub async fn account(&self, bearer: &str) -> AppResult<AccountAuth> {
        if bearer.starts_with(API_KEY_PREFIX) {
            return Err(AppError::Forbidden("this route needs an account token, not an API key".into()));
        }
        let claims = self.account_claims(bearer, "an account token")?;
        if !self.db.auto().account_session_live(claims.sid, claims.sub).await? {
            return Err(invalid_token());
        }
        Ok(AccountAuth { account_id: claims.sub, session_id: claims.sid })
    }

    /// True when the bearer is a (validly signed) profile token.
    pub fn is_profile_token(&self, bearer: &str) -> bool {
        self.keys.verify::<TokenType>(bearer).is_some_and(|t| t.typ == PROFILE_TOKEN_TYPE)
    }

    /// The token's claims, without a database lookup: see [`ProfileToken`].
    pub fn profile_token(&self, store_id: Uuid, bearer: &str) -> AppResult<ProfileToken> {
        let wrong_kind = || AppError::Forbidden("this route needs a profile token".into());
        if bearer.starts_with(API_KEY_PREFIX) {
            return Err(wrong_kind());
        }
        // One signature check tells the kind of token and, for a profile token, its store and session.
        let claims: TypedClaims = self.keys.verify(bearer).ok_or_else(invalid_token)?;
        if claims.typ != PROFILE_TOKEN_TYPE {
            return Err(wrong_kind());
        }
        let (Some(profile_id), Some(store), Some(session_id)) = (claims.sub, claims.store, claims.sid) else {
            return Err(invalid_token());
        };
        // A token of another store is no credential here.
        if store != store_id {
            return Err(invalid_token());
        }
        Ok(ProfileToken { store_id, profile_id, session_id })
    }

    pub async fn profile(&self, store_id: Uuid, bearer: &str) -> AppResult<ProfileAuth> {
        let token = self.profile_token(store_id, bearer)?;
        let session = self
            .db
            .auto()
            .live_profile_session(store_id, token.session_id, token.profile_id, crate::now())
            .await?
            .ok_or_else(invalid_token)?;
        Ok(ProfileAuth {
            store_id,
            profile_id: token.profile_id,
            session_id: token.session_id,
            verified: session.verified,
            holds: session.holds,
        })
    }

    /// An admin of the store, or the profile `profile_id` itself holding it (a claim is told 403
    /// `verification_required`); another profile is told 404.
    pub async fn admin_or_self(&self, store_id: Uuid, profile_id: Uuid, bearer: &str) -> AppResult<ProfileActor> {
        if self.is_profile_token(bearer) {
            let auth = self.profile(store_id, bearer).await?;
            if auth.profile_id != profile_id {
                return Err(AppError::NotFound("profile"));
            }
            auth.require_proof()?;
            return Ok(ProfileActor::Itself(auth));
        }
        self.admin(store_id, bearer).await.map(ProfileActor::Admin)
    }

    /// The id of the store's live key with this hash; its use is recorded at most once a minute,
    /// so a busy key does not write on every request.
    async fn use_api_key(&self, store_id: Uuid, key_hash: &[u8; 32]) -> AppResult<Option<Uuid>> {
        let mut db = self.db.auto();
        let Some(key) = db.live_api_key(store_id, key_hash).await? else { return Ok(None) };
        let now = crate::now();
        if key.last_used_at.is_none_or(|t| now - t >= API_KEY_TOUCH_INTERVAL) {
            db.touch_api_key(store_id, key.id, now).await?;
        }
        Ok(Some(key.id))
    }

    pub async fn admin(&self, store_id: Uuid, bearer: &str) -> AppResult<AdminAuth> {
        if bearer.starts_with(API_KEY_PREFIX) {
            let key_store = api_key_store(bearer).ok_or_else(invalid_token)?;
            let key_id = self.use_api_key(key_store, &sha256(bearer.as_bytes())).await?.ok_or_else(invalid_token)?;
            if key_store != store_id {
                return Err(AppError::NotFound("store"));
            }
            return Ok(AdminAuth { store_id, actor: Actor::ApiKey { key_id } });
        }
        let claims = self.account_claims(bearer, "an admin credential: a store API key or an account token")?;
        match self.db.auto().membership_via_session(claims.sid, claims.sub, store_id).await? {
            SessionMembership::SessionDead => Err(invalid_token()),
            SessionMembership::NotMember => Err(AppError::NotFound("store")),
            SessionMembership::Member { role } => Ok(AdminAuth {
                store_id,
                actor: Actor::Account { account_id: claims.sub, session_id: claims.sid, role },
            }),
        }
    }
}

/// The outcome of presenting a refresh token.
#[derive(Debug)]
pub(crate) enum Rotation {
    /// The session and the token that now refreshes it.
    Rotated { session_id: Uuid, successor: String },
    /// An exchanged token came back after the grace window: taken as theft, the session is revoked.
    Reused,
    /// Unknown, expired, or of a revoked session.
    Invalid,
}

/// §4 refresh rotation, the one algorithm for account and profile sessions. A token is single
/// use; its successor is derived from it with a server key, so the same token presented again
/// within `grace_secs` (two tabs refreshing at once) is answered with the same successor and the
/// session never has two live chains; later, the reuse revokes the session. Runs inside the
/// caller's transaction, which must commit whatever the outcome.
pub(crate) async fn rotate_refresh(
    tx: &mut Tx,
    keys: &Keys,
    table: RefreshTable,
    presented: &str,
    now: i64,
    grace_secs: i64,
    refresh_expires_at: i64,
) -> AppResult<Rotation> {
    let presented_hash = sha256(presented.as_bytes());
    let Some(token) = tx.presented_refresh_token(table, &presented_hash, now).await? else {
        return Ok(Rotation::Invalid);
    };
    if !token.session_live {
        return Ok(Rotation::Invalid);
    }
    let successor = keys.refresh_successor(presented);
    let session_id = token.session_id;
    if token.rotated_at.is_none()
        && tx
            .exchange_refresh_token(
                table,
                session_id,
                &presented_hash,
                &sha256(successor.as_bytes()),
                now,
                refresh_expires_at,
            )
            .await?
    {
        return Ok(Rotation::Rotated { session_id, successor });
    }
    if now - token.rotated_at.unwrap_or(now) > grace_secs {
        tx.revoke_session(table, session_id, now).await?;
        return Ok(Rotation::Reused);
    }
    // Within the grace window: the same successor again (stored when the token was exchanged).
    tx.slide_session(table, session_id, now, refresh_expires_at).await?;
    Ok(Rotation::Rotated { session_id, successor })
}
