//! Persistence behind traits. One implementation, [`SqlRepo`], serves both backends: the SQL
//! is written once in the portable subset (`$n` placeholders, `RETURNING`, `ON CONFLICT`) and
//! `on_db!` instantiates it for each pool type; where the dialects differ, the two arms say so.
//! `postgres` and `sqlite` hold what is backend-specific: connecting, write transactions and
//! the migration lists.

use std::collections::HashMap;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::Email;
use crate::domain::taxonomy::{FieldDef, Filter, TaxonomyValue};

mod accounts;
mod api_keys;
mod audiences;
mod migrate;
mod outbox;
mod payments;
pub mod postgres;
mod profiles;
mod refresh;
mod row;
mod sessions;
mod sql;
pub mod sqlite;
mod stores;
mod taxonomies;
mod templates;

pub use audiences::{AudienceRepo, AudienceRow, AudienceSearch, SubscriberRow, SubscriptionRow, Upsert};
pub use migrate::MigrationReport;
pub use outbox::{ClaimedMail, NewOutboxMail, OutboxRepo};
pub(crate) use outbox::{OUTBOX_INSERT_SQL, insert_outbox_mail};
pub use payments::{EventOutcome, PaymentEventRecord, PaymentRepo, SubscriptionLookup, Transition};
pub use sessions::ME_POSTGRES;
pub use templates::{TemplateRepo, TemplateRow};

use crate::config::DatabaseUrl;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A uniqueness rule was violated.
    #[error("conflict")]
    Conflict,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl RepoError {
    fn from_write(e: sqlx::Error) -> Self {
        match e.as_database_error() {
            Some(db) if db.is_unique_violation() => Self::Conflict,
            _ => Self::Db(e),
        }
    }
}

pub type RepoResult<T> = Result<T, RepoError>;

/// The two pools; exactly one exists per process.
#[derive(Clone, Debug)]
pub enum Db {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

/// Runs the same body against whichever pool is configured.
macro_rules! on_db {
    ($self:ident, $pool:ident => $body:expr) => {
        match &$self.db {
            $crate::repo::Db::Postgres($pool) => $body,
            $crate::repo::Db::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// Starts a transaction that will write. On SQLite it takes the write lock up front
/// (`BEGIN IMMEDIATE`), so two writers wait on the busy timeout instead of failing on upgrade.
pub(crate) trait BeginWrite {
    type Database: sqlx::Database;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, Self::Database>>;
    /// The row-lock suffix for a SELECT inside a write transaction (SQLite's lock is the whole database).
    fn for_update(&self) -> &'static str;
}

#[derive(Clone, Debug)]
pub struct SqlRepo {
    db: Db,
}

impl SqlRepo {
    /// Connects (creating a SQLite file if missing) without migrating.
    pub async fn connect(url: &DatabaseUrl, max_connections: u32) -> anyhow::Result<Self> {
        let db = match url {
            DatabaseUrl::Postgres(url) => Db::Postgres(postgres::connect(url.expose(), max_connections).await?),
            DatabaseUrl::Sqlite { path } => Db::Sqlite(sqlite::connect(path, max_connections).await?),
        };
        Ok(Self { db })
    }

    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Postgres(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    /// Applies pending migrations; safe to run from several instances at once.
    pub async fn migrate(&self) -> anyhow::Result<MigrationReport> {
        match &self.db {
            Db::Postgres(pool) => migrate::run_postgres(pool).await,
            Db::Sqlite(pool) => migrate::run_sqlite(pool).await,
        }
    }

    pub async fn close(&self) {
        on_db!(self, p => p.close().await)
    }
}

// ---- row models --------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct AccountRow {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct AccountSessionRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub user_agent: Option<String>,
    pub created_at: i64,
    pub last_used_at: i64,
    pub refresh_expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// One refresh: the presented token's hash, its replacement's hash, and the clock.
#[derive(Debug, Clone)]
pub struct RefreshRotation {
    pub presented: [u8; 32],
    pub replacement: [u8; 32],
    pub now: i64,
    pub grace_secs: i64,
    pub refresh_expires_at: i64,
}

#[derive(Debug)]
pub enum RotateOutcome<S> {
    Rotated(S),
    /// An already-rotated token came back after the grace window: the session is now revoked.
    Reused,
    /// Unknown, expired, or of a revoked session.
    Invalid,
}

#[derive(Debug, Clone)]
pub struct StoreRow {
    pub id: Uuid,
    pub name: String,
    pub from_email: Option<String>,
    pub from_name: Option<String>,
    pub allowed_origins: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug)]
pub enum SessionMembership {
    /// The session is unknown, revoked, or of another account.
    SessionDead,
    NotMember,
    Member {
        role: String,
    },
}

#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub store_id: Uuid,
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct TaxonomyRow {
    pub store_id: Uuid,
    pub id: Uuid,
    pub key: String,
    pub parent_id: Option<Uuid>,
    pub schema: Vec<FieldDef>,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRow {
    pub store_id: Uuid,
    pub id: Uuid,
    pub email: Option<String>,
    pub verified: bool,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A live session as listed on a profile: no secret.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSummary {
    pub id: Uuid,
    pub created_at: i64,
    pub last_used_at: i64,
    pub refresh_expires_at: i64,
    pub verified: bool,
    pub user_agent: Option<String>,
}

/// A magic code as listed on a profile: no code, no hash.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeSummary {
    pub id: Uuid,
    pub created_at: i64,
    pub expires_at: i64,
    pub used: bool,
    pub attempts: i64,
}

/// A profile with everything the admin view shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileDetails {
    pub profile: ProfileRow,
    pub values: Vec<TaxonomyValue>,
    pub promo_usage: Vec<(String, i64)>,
    pub sessions: Vec<SessionSummary>,
    pub codes: Vec<CodeSummary>,
}

#[derive(Debug, Clone)]
pub struct NewProfile {
    pub store_id: Uuid,
    pub id: Uuid,
    pub email: Option<Email>,
    pub verified: bool,
    pub status: String,
    pub values: Vec<TaxonomyValue>,
    pub created_at: i64,
}

/// What an update changes; `None` leaves a part as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    /// `Some(None)` clears the email. A changed email is not verified.
    pub email: Option<Option<Email>>,
    pub values: Option<Vec<TaxonomyValue>>,
    pub status: Option<String>,
    pub now: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    CreatedAt,
    UpdatedAt,
    Email,
}

/// The position after which a page starts.
#[derive(Debug, Clone, PartialEq)]
pub enum SortValue {
    Int(i64),
    Text(String),
}

#[derive(Debug, Clone)]
pub struct ProfileSearch {
    pub store_id: Uuid,
    pub status: Option<String>,
    /// Lower-cased substring of email or text taxonomy values.
    pub text: Option<String>,
    /// Set when `query` is a UUID: an exact id also matches.
    pub id: Option<Uuid>,
    pub filters: Vec<Filter>,
    pub sort: SortField,
    pub descending: bool,
    pub after: Option<(SortValue, Uuid)>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderRow {
    pub store_id: Uuid,
    pub order_id: String,
    pub profile_id: Uuid,
    pub total: Option<i64>,
    pub currency: Option<String>,
    pub status: Option<String>,
    pub placed_at: Option<i64>,
    pub metadata: serde_json::Value,
    pub created_at: i64,
}

#[derive(Debug)]
pub enum LinkOutcome {
    Linked(OrderRow),
    /// Already linked to this profile: the existing link.
    Existing(OrderRow),
    /// Linked to another profile of the store.
    Elsewhere,
}

#[derive(Debug)]
pub enum MergeOutcome {
    Merged,
    /// Target or source is not a profile of the store.
    NotFound,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSessionRow {
    pub store_id: Uuid,
    pub id: Uuid,
    pub profile_id: Uuid,
    pub verified: bool,
    pub user_agent: Option<String>,
    pub created_at: i64,
    pub last_used_at: i64,
    pub refresh_expires_at: i64,
}

/// A live profile session, as an authenticated request sees it.
#[derive(Debug, Clone, Copy)]
pub struct LiveSession {
    /// Opened with a magic code.
    pub verified: bool,
    /// Holds its profile (§4): verified, or it gave the profile its email, or the profile has none.
    pub holds: bool,
}

/// A magic code to check inside [`OpenSession`].
#[derive(Debug, Clone)]
pub struct CodeCheck {
    pub code_hash: [u8; 32],
    pub max_attempts: i64,
}

/// Opens a profile session, resolving the profile by the §4 rules in one transaction:
/// no email → a new guest; an email a profile has → that profile (a calling guest without email
/// is merged into it); an email nobody has → attached to a calling guest without email, or a new
/// profile. With `code`, the code is checked first and the profile marked verified.
#[derive(Debug, Clone)]
pub struct OpenSession {
    pub store_id: Uuid,
    pub email: Option<Email>,
    pub caller: Option<Uuid>,
    pub code: Option<CodeCheck>,
    /// A new profile gets this id.
    pub new_profile_id: Uuid,
    pub session_id: Uuid,
    pub user_agent: Option<String>,
    pub refresh_hash: [u8; 32],
    pub refresh_expires_at: i64,
    pub now: i64,
}

#[derive(Debug)]
pub enum OpenOutcome {
    Opened(ProfileSessionRow),
    /// No live code, or the wrong one (its attempt was counted).
    WrongCode,
    /// The store does not exist.
    NoStore,
}

#[derive(Debug, Clone)]
pub struct NewCode {
    pub store_id: Uuid,
    pub id: Uuid,
    pub email_key: String,
    pub code_hash: [u8; 32],
    pub created_at: i64,
    pub expires_at: i64,
}

/// What one janitor pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    pub guests: u64,
    pub sessions: u64,
    pub codes: u64,
    pub rate_limits: u64,
}

// ---- traits ------------------------------------------------------------------------------

#[async_trait]
pub trait HealthRepo {
    async fn ping(&self) -> RepoResult<()>;
}

#[async_trait]
pub trait AccountRepo {
    /// `Conflict` when the email is taken.
    async fn insert_account(&self, account: &AccountRow, email_key: &str) -> RepoResult<()>;
    async fn account_by_email(&self, email_key: &str) -> RepoResult<Option<AccountRow>>;
    async fn account_by_id(&self, id: Uuid) -> RepoResult<Option<AccountRow>>;
    async fn create_account_session(&self, session: &AccountSessionRow, refresh_hash: &[u8; 32]) -> RepoResult<()>;
    async fn rotate_account_refresh(&self, rotation: &RefreshRotation) -> RepoResult<RotateOutcome<AccountSessionRow>>;
    async fn account_session_live(&self, session_id: Uuid, account_id: Uuid) -> RepoResult<bool>;
    async fn revoke_account_session(&self, session_id: Uuid, now: i64) -> RepoResult<()>;
}

#[async_trait]
pub trait StoreRepo {
    /// Creates the store and makes `owner` its owner, in one transaction.
    async fn create_store(&self, store: &StoreRow, owner: Uuid) -> RepoResult<()>;
    async fn store_by_id(&self, id: Uuid) -> RepoResult<Option<StoreRow>>;
    async fn update_store(&self, store: &StoreRow) -> RepoResult<()>;
    /// Stores the account is a member of, by id, after `after`.
    async fn stores_of_account(
        &self,
        account_id: Uuid,
        after: Option<Uuid>,
        limit: u32,
    ) -> RepoResult<Vec<(StoreRow, String)>>;
    /// Session liveness and store membership in one round trip.
    async fn membership_via_session(
        &self,
        session_id: Uuid,
        account_id: Uuid,
        store_id: Uuid,
    ) -> RepoResult<SessionMembership>;
}

#[async_trait]
pub trait ApiKeyRepo {
    async fn insert_api_key(&self, key: &ApiKeyRow, key_hash: &[u8; 32]) -> RepoResult<()>;
    async fn api_keys(&self, store_id: Uuid, after: Option<Uuid>, limit: u32) -> RepoResult<Vec<ApiKeyRow>>;
    /// False when the store has no such key.
    async fn revoke_api_key(&self, store_id: Uuid, id: Uuid, now: i64) -> RepoResult<bool>;
    /// The id of the live key with this hash; records use at most once a minute.
    async fn use_api_key(&self, store_id: Uuid, key_hash: &[u8; 32], now: i64) -> RepoResult<Option<Uuid>>;
}

#[async_trait]
pub trait TaxonomyRepo {
    /// `Conflict` when the key is taken.
    async fn insert_taxonomy(&self, t: &TaxonomyRow) -> RepoResult<()>;
    async fn taxonomy(&self, store_id: Uuid, id: Option<Uuid>, key: &str) -> RepoResult<Option<TaxonomyRow>>;
    async fn taxonomies(&self, store_id: Uuid, after: Option<Uuid>, limit: u32) -> RepoResult<Vec<TaxonomyRow>>;
    /// Schemas of the store's taxonomies among `ids` (active ones only, if `only_active`).
    async fn schemas(
        &self,
        store_id: Uuid,
        ids: &[Uuid],
        only_active: bool,
    ) -> RepoResult<HashMap<Uuid, Vec<FieldDef>>>;
    /// Saves the definition and, in the same transaction, drops stored values of `dropped_fields`.
    async fn update_taxonomy(&self, t: &TaxonomyRow, dropped_fields: &[String]) -> RepoResult<()>;
    /// Deletes the definition and every value stored under it.
    async fn delete_taxonomy(&self, store_id: Uuid, id: Uuid) -> RepoResult<bool>;
}

#[async_trait]
pub trait ProfileRepo {
    /// Inserts the profile unless its email is taken; returns the stored profile and whether it is new.
    async fn create_profile(&self, p: &NewProfile) -> RepoResult<(ProfileDetails, bool)>;
    /// Inserts many profiles in one transaction with multi-row statements; emails already taken are
    /// skipped. Returns how many were inserted.
    async fn bulk_insert_profiles(&self, profiles: &[NewProfile]) -> RepoResult<u64>;
    async fn profile(&self, store_id: Uuid, id: Uuid) -> RepoResult<Option<ProfileDetails>>;
    async fn find_profiles(&self, search: &ProfileSearch) -> RepoResult<Vec<ProfileDetails>>;
    /// `Conflict` when the new email belongs to another profile.
    async fn update_profile(
        &self,
        store_id: Uuid,
        id: Uuid,
        change: &ProfileChange,
    ) -> RepoResult<Option<ProfileDetails>>;
    /// §3.1, in one transaction.
    async fn merge_profiles(&self, store_id: Uuid, target: Uuid, source: Uuid, now: i64) -> RepoResult<MergeOutcome>;
    /// Deletes the profile and every row holding its personal data.
    async fn erase_profile(&self, store_id: Uuid, id: Uuid) -> RepoResult<bool>;
    async fn link_order(&self, order: &OrderRow) -> RepoResult<LinkOutcome>;
    async fn orders(
        &self,
        store_id: Uuid,
        profile_id: Uuid,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> RepoResult<Vec<OrderRow>>;
}

#[async_trait]
pub trait SessionRepo {
    async fn open_profile_session(&self, open: &OpenSession) -> RepoResult<OpenOutcome>;
    async fn rotate_profile_refresh(
        &self,
        store_id: Uuid,
        rotation: &RefreshRotation,
    ) -> RepoResult<RotateOutcome<ProfileSessionRow>>;
    /// The session if it is live (not revoked, not expired) and belongs to the profile.
    async fn live_profile_session(
        &self,
        store_id: Uuid,
        session_id: Uuid,
        profile_id: Uuid,
    ) -> RepoResult<Option<LiveSession>>;
    /// `getMe` in one round trip: whether the session holds the profile and the full profile, or `None`
    /// when the session is not live (revoked, expired, unknown, of another profile or store).
    async fn profile_me(
        &self,
        store_id: Uuid,
        session_id: Uuid,
        profile_id: Uuid,
        now: i64,
    ) -> RepoResult<Option<(bool, ProfileDetails)>>;
    async fn profile_sessions(&self, store_id: Uuid, profile_id: Uuid) -> RepoResult<Vec<SessionSummary>>;
    async fn revoke_profile_session(
        &self,
        store_id: Uuid,
        profile_id: Uuid,
        session_id: Uuid,
        now: i64,
    ) -> RepoResult<bool>;
    async fn revoke_profile_sessions(&self, store_id: Uuid, profile_id: Uuid, now: i64) -> RepoResult<u64>;
    /// Voids the email's older codes, stores the new one and queues its mail, in one transaction.
    async fn store_code(&self, code: &NewCode, mail: &NewOutboxMail) -> RepoResult<()>;
    /// Counts a hit in the fixed window starting at `window_start`; returns the hits so far, or
    /// `None` when the store does not exist.
    async fn hit_rate_limit(&self, store_id: Uuid, bucket: &str, window_start: i64) -> RepoResult<Option<i64>>;
    /// The same for limits outside any store (account login).
    async fn hit_account_rate_limit(&self, bucket: &str, window_start: i64) -> RepoResult<()>;
    async fn account_rate_limit(&self, bucket: &str, window_start: i64) -> RepoResult<i64>;
    /// Removes guests without email idle since `guest_cutoff`, ended sessions, old codes and windows.
    async fn sweep(&self, now: i64, guest_cutoff: i64) -> RepoResult<SweepReport>;
}

pub trait Repo:
    HealthRepo
    + AccountRepo
    + StoreRepo
    + ApiKeyRepo
    + TaxonomyRepo
    + ProfileRepo
    + OutboxRepo
    + SessionRepo
    + AudienceRepo
    + TemplateRepo
    + PaymentRepo
    + Send
    + Sync
    + 'static
{
}
impl<T> Repo for T where
    T: HealthRepo
        + AccountRepo
        + StoreRepo
        + ApiKeyRepo
        + TaxonomyRepo
        + ProfileRepo
        + OutboxRepo
        + SessionRepo
        + AudienceRepo
        + TemplateRepo
        + PaymentRepo
        + Send
        + Sync
        + 'static
{
}

#[async_trait]
impl HealthRepo for SqlRepo {
    async fn ping(&self) -> RepoResult<()> {
        on_db!(self, p => {
            sqlx::query("SELECT 1").execute(p).await?;
        });
        Ok(())
    }
}
