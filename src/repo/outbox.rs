//! The transactional mail outbox. Code that changes state and owes a mail inserts the row in
//! its own transaction with [`insert_outbox_mail!`]; the worker claims due rows under a lease,
//! deletes them once delivered and reschedules them on failure.

use async_trait::async_trait;
use sqlx::Row;
use uuid::Uuid;

use super::row::RowExt;
use super::{BeginWrite, Db, RepoError, RepoResult, SqlRepo, on_db};
use crate::mail::OutgoingMail;

/// Bind order: `store_id` (`Option<Uuid>`), `id`, `to_key`, `sqlx::types::Json(&message)`,
/// `next_attempt_at` (the creation time, so the row is due at once), `created_at`.
pub(crate) const OUTBOX_INSERT_SQL: &str = "INSERT INTO mail_outbox (store_id, id, to_key, message, attempts, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, 0, $5, $6)";

/// A mail to put in the outbox.
#[derive(Debug, Clone)]
pub struct NewOutboxMail {
    /// `None` for platform mail (no store).
    pub store_id: Option<Uuid>,
    pub id: Uuid,
    /// The lower-cased recipient address, so a person's pending mail can be erased.
    pub to_key: String,
    pub message: OutgoingMail,
    pub created_at: i64,
}

impl NewOutboxMail {
    pub fn new(store_id: Option<Uuid>, message: OutgoingMail, now: i64) -> Self {
        let to_key = crate::mail::address_key(&message.to);
        Self { store_id, id: Uuid::now_v7(), to_key, message, created_at: now }
    }
}

/// Inserts a [`NewOutboxMail`] through any executor of either backend, typically the caller's
/// open transaction: `insert_outbox_mail!(&mut *tx, &mail).await.map_err(RepoError::from_write)?`.
macro_rules! insert_outbox_mail {
    ($executor:expr, $mail:expr) => {{
        let mail: &$crate::repo::NewOutboxMail = $mail;
        sqlx::query($crate::repo::OUTBOX_INSERT_SQL)
            .bind(mail.store_id)
            .bind(mail.id)
            .bind(&mail.to_key)
            .bind(sqlx::types::Json(&mail.message))
            .bind(mail.created_at)
            .bind(mail.created_at)
            .execute($executor)
    }};
}
pub(crate) use insert_outbox_mail;

/// A row leased to one worker until the lease given to `claim_due_mail` runs out.
#[derive(Debug, Clone)]
pub struct ClaimedMail {
    pub id: Uuid,
    pub store_id: Option<Uuid>,
    pub message: OutgoingMail,
    /// Failed attempts so far.
    pub attempts: i32,
}

#[async_trait]
pub trait OutboxRepo {
    /// Enqueues on its own; code with a transaction of its own uses [`insert_outbox_mail!`].
    async fn enqueue_mail(&self, mail: &NewOutboxMail) -> RepoResult<()>;
    /// Leases up to `limit` due rows, oldest due first; rows leased by another worker are skipped.
    async fn claim_due_mail(&self, now: i64, lease_secs: i64, limit: u32) -> RepoResult<Vec<ClaimedMail>>;
    /// Deletes the row: nothing of a delivered mail is kept.
    async fn mail_delivered(&self, id: Uuid) -> RepoResult<()>;
    /// Records a failed attempt and releases the lease. With `give_up`, the row stays for
    /// inspection, out of the worker's reach, with `failed_at = next_attempt_at`.
    async fn mail_failed(
        &self,
        id: Uuid,
        attempts: i32,
        next_attempt_at: i64,
        error: &str,
        give_up: bool,
    ) -> RepoResult<()>;
    /// Erasure: drops the store's pending mail to one recipient; returns how many rows went.
    async fn delete_mail_to(&self, store_id: Uuid, to_key: &str) -> RepoResult<u64>;
}

// Postgres: SKIP LOCKED lets concurrent workers take disjoint rows without waiting; MATERIALIZED
// keeps the planner from running the locking LIMIT subquery more than once.
const CLAIM_POSTGRES: &str = "WITH due AS MATERIALIZED (
        SELECT id FROM mail_outbox
        WHERE failed_at IS NULL AND next_attempt_at <= $1 AND (locked_until IS NULL OR locked_until <= $1)
        ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)
    UPDATE mail_outbox m SET locked_until = $2 FROM due WHERE m.id = due.id
    RETURNING m.store_id, m.id, CAST(m.message AS TEXT) AS message, CAST(m.attempts AS BIGINT) AS attempts";

// SQLite: run inside BEGIN IMMEDIATE, which admits one writer at a time.
const CLAIM_SQLITE: &str = "UPDATE mail_outbox SET locked_until = $2
    WHERE id IN (
        SELECT id FROM mail_outbox
        WHERE failed_at IS NULL AND next_attempt_at <= $1 AND (locked_until IS NULL OR locked_until <= $1)
        ORDER BY next_attempt_at LIMIT $3)
    RETURNING store_id, id, CAST(message AS TEXT) AS message, CAST(attempts AS BIGINT) AS attempts";

/// `last_error` holds a transport's answer; bounded so one chatty server cannot bloat the table.
const MAX_ERROR_CHARS: usize = 1000;

type RawClaim = (Option<Uuid>, Uuid, String, i64);

macro_rules! raw_claims {
    ($rows:expr) => {
        $rows
            .iter()
            .map(|r| {
                Ok((r.try_get::<Option<Uuid>, _>("store_id")?, r.uuid("id")?, r.text("message")?, r.int("attempts")?))
            })
            .collect::<sqlx::Result<Vec<RawClaim>>>()?
    };
}

impl SqlRepo {
    async fn lease_due_rows(&self, now: i64, locked_until: i64, limit: u32) -> RepoResult<Vec<RawClaim>> {
        let limit = i64::from(limit);
        Ok(match &self.db {
            Db::Postgres(p) => {
                let rows = sqlx::query(CLAIM_POSTGRES).bind(now).bind(locked_until).bind(limit).fetch_all(p).await?;
                raw_claims!(rows)
            }
            Db::Sqlite(p) => {
                let mut tx = p.begin_write().await?;
                let rows =
                    sqlx::query(CLAIM_SQLITE).bind(now).bind(locked_until).bind(limit).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                raw_claims!(rows)
            }
        })
    }
}

#[async_trait]
impl OutboxRepo for SqlRepo {
    async fn enqueue_mail(&self, mail: &NewOutboxMail) -> RepoResult<()> {
        on_db!(self, p => {
            super::insert_outbox_mail!(p, mail).await.map_err(RepoError::from_write)?;
        });
        Ok(())
    }

    async fn claim_due_mail(&self, now: i64, lease_secs: i64, limit: u32) -> RepoResult<Vec<ClaimedMail>> {
        let mut claimed = Vec::new();
        for (store_id, id, message, attempts) in self.lease_due_rows(now, now + lease_secs, limit).await? {
            let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
            match serde_json::from_str::<OutgoingMail>(&message) {
                Ok(message) => claimed.push(ClaimedMail { id, store_id, message, attempts }),
                Err(e) => {
                    // A row this binary cannot read would be claimed forever: park it instead.
                    tracing::error!(mail_id = %id, error = %e, "outbox row holds an unreadable message; giving up on it");
                    self.mail_failed(id, attempts, now, &format!("unreadable message: {e}"), true).await?;
                }
            }
        }
        Ok(claimed)
    }

    async fn mail_delivered(&self, id: Uuid) -> RepoResult<()> {
        on_db!(self, p => {
            sqlx::query("DELETE FROM mail_outbox WHERE id = $1").bind(id).execute(p).await?;
        });
        Ok(())
    }

    async fn mail_failed(
        &self,
        id: Uuid,
        attempts: i32,
        next_attempt_at: i64,
        error: &str,
        give_up: bool,
    ) -> RepoResult<()> {
        let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
        on_db!(self, p => {
            sqlx::query(
                "UPDATE mail_outbox SET attempts = $2, next_attempt_at = $3, last_error = $4, failed_at = $5,
                 locked_until = NULL WHERE id = $1",
            )
            .bind(id)
            .bind(attempts)
            .bind(next_attempt_at)
            .bind(&error)
            .bind(give_up.then_some(next_attempt_at))
            .execute(p)
            .await?;
        });
        Ok(())
    }

    async fn delete_mail_to(&self, store_id: Uuid, to_key: &str) -> RepoResult<u64> {
        on_db!(self, p => {
            let done = sqlx::query("DELETE FROM mail_outbox WHERE store_id = $1 AND to_key = $2")
                .bind(store_id)
                .bind(to_key)
                .execute(p)
                .await?;
            Ok(done.rows_affected())
        })
    }
}
