//! Persistence behind traits. One implementation, [`SqlRepo`], serves both backends: the SQL
//! is written once in the portable subset (`$n` placeholders, `RETURNING`, `ON CONFLICT`) and
//! `on_db!` instantiates it for each pool type; where the dialects differ, the two arms say so.
//! `postgres` and `sqlite` hold what is backend-specific: connecting, write transactions and
//! the migration lists.

use async_trait::async_trait;
use uuid::Uuid;

mod accounts;
mod api_keys;
mod migrate;
mod outbox;
pub mod postgres;
mod row;
pub mod sqlite;
mod stores;

pub use migrate::MigrationReport;
pub use outbox::{ClaimedMail, NewOutboxMail, OutboxRepo};
pub(crate) use outbox::{OUTBOX_INSERT_SQL, insert_outbox_mail};

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
pub enum RotateOutcome {
    Rotated(AccountSessionRow),
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
    async fn rotate_account_refresh(&self, rotation: &RefreshRotation) -> RepoResult<RotateOutcome>;
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

pub trait Repo: HealthRepo + AccountRepo + StoreRepo + ApiKeyRepo + OutboxRepo + Send + Sync + 'static {}
impl<T: HealthRepo + AccountRepo + StoreRepo + ApiKeyRepo + OutboxRepo + Send + Sync + 'static> Repo for T {}

#[async_trait]
impl HealthRepo for SqlRepo {
    async fn ping(&self) -> RepoResult<()> {
        on_db!(self, p => {
            sqlx::query("SELECT 1").execute(p).await?;
        });
        Ok(())
    }
}
