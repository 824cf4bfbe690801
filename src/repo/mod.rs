//! Persistence: SQL statements as methods of the unit of work [`Tx`] (see [`db`] for why), and
//! the rows they read and write. Statements make no business decision; the services combine them
//! inside one transaction and decide.

use uuid::Uuid;

use crate::domain::taxonomy::{FieldDef, Filter, TaxonomyValue};
use crate::domain::{Email, SortField, Status};

/// SQL: whether session `$s` holds its profile `p` (§4): a verified session, the session that
/// gave the profile its email, or any session of a guest without email. Any other session of
/// the profile is a claim, which sees the profile redacted. One definition for every statement
/// that decides it (getMe, the live-session check, checkAccess).
macro_rules! session_holds {
    ($s:literal) => {
        concat!("(", $s, ".verified OR ", $s, ".attached_email OR p.email_key IS NULL)")
    };
}

mod accounts;
mod api_keys;
mod audiences;
pub mod db;
mod events;
mod imports;
mod kept;
mod migrate;
mod outbox;
pub mod postgres;
mod profiles;
mod refresh;
mod segments;
mod sessions;
pub mod sqlite;
mod stores;
mod taxonomies;
mod templates;

pub use api_keys::LiveKey;
pub use audiences::{AudienceRow, AudienceSearch, SubscriberRow, SubscriptionRow};
pub use db::{Arg, Backend, Database, Row, Sql, Tx};
pub use events::{
    AttemptRow, DeliveryRow, DueDelivery, EndpointRow, EventRow, NewEvent, RECORDING as RECORDING_EVENTS,
};
pub use imports::{ImportErrorRow, ImportJobRow};
pub use migrate::MigrationReport;
pub use outbox::{ClaimedMail, MailSummary, NewOutboxMail};
pub use profiles::{LockedProfile, ProfileRewrite};
pub use refresh::{PresentedToken, RefreshTable};
pub use segments::{ConsentRow, SegmentRow};
pub use sessions::{CodeLimits, CodeRequest, GUEST_POSTGRES, LimitHit, LiveCode, ME_POSTGRES, MeRow};
pub use stores::SessionMembership;
pub use templates::TemplateRow;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A uniqueness rule was violated: the constraint's name (Postgres' name on both backends).
    #[error("unique constraint {0}")]
    Unique(&'static str),
    /// A row the write refers to is gone: a concurrent delete won.
    #[error("a referenced row is gone")]
    MissingReference,
    /// The database gave this transaction up so that another could proceed (a serialization
    /// failure or a deadlock on Postgres, a busy database on SQLite): running it again may succeed.
    #[error("contention: {0}")]
    Contention(#[source] sqlx::Error),
    /// The database cannot be reached, or no connection came free in time.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error(transparent)]
    Db(sqlx::Error),
}

/// Unique constraints by their Postgres name, with the columns SQLite names in its message
/// (`UNIQUE constraint failed: profiles.store_id, profiles.email_key`), which has no name.
const UNIQUE_CONSTRAINTS: &[(&str, &str)] = &[
    ("accounts_email_key_unique", "accounts.email_key"),
    ("api_keys_hash_unique", "api_keys.store_id, api_keys.key_hash"),
    ("profiles_email_unique", "profiles.store_id, profiles.email_key"),
    ("taxonomies_key_unique", "taxonomies.store_id, taxonomies.key"),
    ("email_templates_key_unique", "email_templates.store_id, email_templates.key"),
    ("audiences_key_unique", "audiences.store_id, audiences.key"),
    ("segments_key", "segments.store_id, segments.key"),
    ("subscriptions_one_per_profile", "subscriptions.store_id, subscriptions.audience_id, subscriptions.profile_id"),
];

fn unique_constraint(db: &dyn sqlx::error::DatabaseError) -> &'static str {
    let by_name = db.constraint().and_then(|name| UNIQUE_CONSTRAINTS.iter().find(|(n, _)| *n == name));
    let by_columns = || {
        let columns = db.message().split_once(": ").map(|(_, c)| c.trim())?;
        UNIQUE_CONSTRAINTS.iter().find(|(_, c)| *c == columns)
    };
    by_name.or_else(by_columns).map(|(n, _)| *n).unwrap_or("primary_key")
}

impl From<sqlx::Error> for RepoError {
    fn from(e: sqlx::Error) -> Self {
        let db = match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                return Self::Unavailable(e);
            }
            sqlx::Error::Database(db) => db,
            _ => return Self::Db(e),
        };
        // Postgres ends or refuses a whole session with FATAL (a terminated backend, a database
        // not accepting connections, too many connections, a shutdown): the database is away,
        // the request is not wrong. Statement errors are ERROR.
        let fatal = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some_and(|pg| {
            matches!(pg.severity(), sqlx::postgres::PgSeverity::Fatal | sqlx::postgres::PgSeverity::Panic)
        });
        if fatal {
            return Self::Unavailable(e);
        }
        if db.is_unique_violation() {
            return Self::Unique(unique_constraint(db.as_ref()));
        }
        if db.is_foreign_key_violation() {
            return Self::MissingReference;
        }
        match db.code().as_deref() {
            // Postgres: serialization failure, deadlock; SQLite: SQLITE_BUSY and its extended codes.
            Some("40001" | "40P01" | "5" | "261" | "517") => Self::Contention(e),
            // Postgres: the connection broke, or the server is shutting down / starting.
            Some(code) if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03") => Self::Unavailable(e),
            _ => Self::Db(e),
        }
    }
}

pub type RepoResult<T> = Result<T, RepoError>;

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

#[derive(Debug, Clone)]
pub struct StoreRow {
    pub id: Uuid,
    pub name: String,
    pub from_email: Option<String>,
    pub from_name: Option<String>,
    pub allowed_origins: Vec<String>,
    /// The consent ledger keeps full IP addresses (else /24 and /48).
    pub consent_full_ip: bool,
    pub created_at: i64,
    pub updated_at: i64,
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
    pub status: Status,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRow {
    pub store_id: Uuid,
    pub id: Uuid,
    pub email: Option<String>,
    pub verified: bool,
    pub status: Status,
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
    pub status: Status,
    pub values: Vec<TaxonomyValue>,
    pub created_at: i64,
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
    pub status: Option<Status>,
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

/// What `checkAccess` reads in its one statement: whether the session holds its profile, the
/// audience (when the store has one of that id or key) and the profile's subscription to it.
#[derive(Debug, Clone)]
pub struct AccessCheck {
    pub holds: bool,
    /// The audience's status; None when the store has no such audience.
    pub audience_status: Option<crate::domain::Status>,
    pub subscription: Option<SubscriptionRow>,
}

/// A live profile session, as an authenticated request sees it.
#[derive(Debug, Clone, Copy)]
pub struct LiveSession {
    /// Opened with a magic code.
    pub verified: bool,
    /// Holds its profile (§4): verified, or it gave the profile its email, or the profile has none.
    pub holds: bool,
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
    pub sent_mail: u64,
    pub events: u64,
    /// Memberships moved to `expired`.
    pub expired: u64,
}
