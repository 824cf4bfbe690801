//! The transactional mail outbox. A unit of work that changes state and owes a mail inserts the
//! row in its own transaction ([`Tx::insert_mail`]); the worker claims due rows under a lease,
//! deletes them once delivered and reschedules them on failure.

use uuid::Uuid;

use super::{Arg, Backend, RepoResult, Sql, Tx};
use crate::mail::OutgoingMail;

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

/// A row leased to one worker until the lease given to `claim_due_mail` runs out.
#[derive(Debug, Clone)]
pub struct ClaimedMail {
    pub id: Uuid,
    pub store_id: Option<Uuid>,
    /// `Err` with the reason when the stored message cannot be read by this binary.
    pub message: Result<OutgoingMail, String>,
    /// Failed attempts so far.
    pub attempts: i32,
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

impl Tx {
    pub async fn insert_mail(&mut self, mail: &NewOutboxMail) -> RepoResult<()> {
        let sql = Sql::new(
            "INSERT INTO mail_outbox (store_id, id, to_key, message, attempts, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, 0, $5, $5)",
        )
        .bind(mail.store_id)
        .bind(mail.id)
        .bind(&mail.to_key)
        .bind(Arg::json(&mail.message))
        .bind(mail.created_at);
        self.execute(sql).await?;
        Ok(())
    }

    /// Leases up to `limit` due rows, oldest due first; rows leased by another worker are
    /// skipped. Run it on [`Database::atomic`](super::Database::atomic).
    pub async fn claim_due_mail(&mut self, now: i64, lease_secs: i64, limit: u32) -> RepoResult<Vec<ClaimedMail>> {
        let claim = match self.backend() {
            Backend::Postgres => CLAIM_POSTGRES,
            Backend::Sqlite => CLAIM_SQLITE,
        };
        let rows = self.fetch_all(Sql::new(claim).bind(now).bind(now + lease_secs).bind(limit)).await?;
        rows.iter()
            .map(|r| {
                let message = r.text("message")?;
                Ok(ClaimedMail {
                    id: r.uuid("id")?,
                    store_id: r.opt_uuid("store_id")?,
                    message: serde_json::from_str(&message).map_err(|e| e.to_string()),
                    attempts: i32::try_from(r.int("attempts")?).unwrap_or(i32::MAX),
                })
            })
            .collect::<sqlx::Result<_>>()
            .map_err(Into::into)
    }

    /// Deletes the row: nothing of a delivered mail is kept.
    pub async fn mail_delivered(&mut self, id: Uuid) -> RepoResult<()> {
        self.execute(Sql::new("DELETE FROM mail_outbox WHERE id = $1").bind(id)).await?;
        Ok(())
    }

    /// Records a failed attempt and releases the lease. With `give_up`, the row stays for
    /// inspection, out of the worker's reach, with `failed_at = next_attempt_at`.
    pub async fn mail_failed(
        &mut self,
        id: Uuid,
        attempts: i32,
        next_attempt_at: i64,
        error: &str,
        give_up: bool,
    ) -> RepoResult<()> {
        let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
        let sql = Sql::new(
            "UPDATE mail_outbox SET attempts = $2, next_attempt_at = $3, last_error = $4, failed_at = $5,
             locked_until = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(attempts)
        .bind(next_attempt_at)
        .bind(error)
        .bind(give_up.then_some(next_attempt_at));
        self.execute(sql).await?;
        Ok(())
    }

    /// Erasure: drops the store's pending mail to one recipient; returns how many rows went.
    pub async fn delete_mail_to(&mut self, store_id: Uuid, to_key: &str) -> RepoResult<u64> {
        let sql = Sql::new("DELETE FROM mail_outbox WHERE store_id = $1 AND to_key = $2").bind(store_id).bind(to_key);
        self.execute(sql).await
    }
}
