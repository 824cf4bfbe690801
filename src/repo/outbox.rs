//! The transactional mail outbox. A unit of work that changes state and owes a mail inserts the
//! row in its own transaction ([`Tx::insert_mail`]); the worker claims due rows under a lease,
//! deletes them once delivered and reschedules them on failure.

use uuid::Uuid;

use super::{Arg, Backend, RepoResult, Row, Sql, Tx};
use crate::domain::{MailKind, MailStatus};
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
    pub kind: MailKind,
    /// The subject as lists show it: a secret in it (a sign-in code) masked.
    pub subject: String,
    pub created_at: i64,
}

impl NewOutboxMail {
    pub fn new(store_id: Option<Uuid>, message: OutgoingMail, now: i64) -> Self {
        let to_key = crate::mail::address_key(&message.to);
        let subject = message.subject.clone();
        Self { store_id, id: Uuid::now_v7(), to_key, message, kind: MailKind::Other, subject, created_at: now }
    }

    pub fn kind(self, kind: MailKind) -> Self {
        Self { kind, ..self }
    }

    /// Keeps `secret` out of the listed subject (it stays in the mail itself).
    pub fn masking(self, secret: &str) -> Self {
        let subject =
            if secret.is_empty() { self.subject.clone() } else { self.subject.replace(secret, "••••••") };
        Self { subject, ..self }
    }
}

/// A mail as the outbox lists it: no body.
#[derive(Debug, Clone)]
pub struct MailSummary {
    pub id: Uuid,
    pub store_id: Option<Uuid>,
    pub kind: MailKind,
    pub to: String,
    pub subject: String,
    pub status: MailStatus,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub next_attempt_at: Option<i64>,
    pub sent_at: Option<i64>,
    pub failed_at: Option<i64>,
}

const SUMMARY_COLUMNS: &str = "id, store_id, kind, to_key, subject, CAST(attempts AS BIGINT) AS attempts, last_error, created_at, next_attempt_at, \
     sent_at, failed_at";

fn summary(r: &Row) -> sqlx::Result<MailSummary> {
    let (sent_at, failed_at) = (r.opt_int("sent_at")?, r.opt_int("failed_at")?);
    let status = match (sent_at, failed_at) {
        (Some(_), _) => MailStatus::Sent,
        (None, Some(_)) => MailStatus::Failed,
        (None, None) => MailStatus::Queued,
    };
    Ok(MailSummary {
        id: r.uuid("id")?,
        store_id: r.opt_uuid("store_id")?,
        kind: r.parsed("kind")?,
        to: r.text("to_key")?,
        subject: r.text("subject")?,
        status,
        attempts: r.int("attempts")?,
        last_error: r.opt_text("last_error")?,
        created_at: r.int("created_at")?,
        next_attempt_at: (status == MailStatus::Queued).then(|| r.int("next_attempt_at")).transpose()?,
        sent_at,
        failed_at,
    })
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
    pub created_at: i64,
}

// Postgres: SKIP LOCKED lets concurrent workers take disjoint rows without waiting; MATERIALIZED
// keeps the planner from running the locking LIMIT subquery more than once.
const CLAIM_POSTGRES: &str = "WITH due AS MATERIALIZED (
        SELECT id FROM mail_outbox
        WHERE failed_at IS NULL AND sent_at IS NULL AND next_attempt_at <= $1
          AND (locked_until IS NULL OR locked_until <= $1)
        ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)
    UPDATE mail_outbox m SET locked_until = $2 FROM due WHERE m.id = due.id
    RETURNING m.store_id, m.id, CAST(m.message AS TEXT) AS message, CAST(m.attempts AS BIGINT) AS attempts,
        m.created_at";

// SQLite: run inside BEGIN IMMEDIATE, which admits one writer at a time.
const CLAIM_SQLITE: &str = "UPDATE mail_outbox SET locked_until = $2
    WHERE id IN (
        SELECT id FROM mail_outbox
        WHERE failed_at IS NULL AND sent_at IS NULL AND next_attempt_at <= $1
          AND (locked_until IS NULL OR locked_until <= $1)
        ORDER BY next_attempt_at LIMIT $3)
    RETURNING store_id, id, CAST(message AS TEXT) AS message, CAST(attempts AS BIGINT) AS attempts, created_at";

/// `last_error` holds a transport's answer; bounded so one chatty server cannot bloat the table.
const MAX_ERROR_CHARS: usize = 1000;

impl Tx {
    pub async fn insert_mail(&mut self, mail: &NewOutboxMail) -> RepoResult<()> {
        let sql = Sql::new(
            "INSERT INTO mail_outbox (store_id, id, to_key, message, attempts, next_attempt_at, created_at, kind, subject)
             VALUES ($1, $2, $3, $4, 0, $5, $5, $6, $7)",
        )
        .bind(mail.store_id)
        .bind(mail.id)
        .bind(&mail.to_key)
        .bind(Arg::json(&mail.message))
        .bind(mail.created_at)
        .bind(mail.kind.as_str())
        .bind(&mail.subject);
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
                    created_at: r.int("created_at")?,
                })
            })
            .collect::<sqlx::Result<_>>()
            .map_err(Into::into)
    }

    /// Marks the row sent and drops its body: only the summary stays, until the janitor's sweep.
    pub async fn mail_delivered(&mut self, id: Uuid, now: i64) -> RepoResult<()> {
        let sql = Sql::new(
            "UPDATE mail_outbox SET sent_at = $2, locked_until = NULL, message = $3, last_error = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .bind(Arg::json(&serde_json::Value::Null));
        self.execute(sql).await?;
        Ok(())
    }

    /// A store's mail (every store's with `None`), newest first, optionally of one status.
    pub async fn mail_summaries(
        &mut self,
        store_id: Option<Uuid>,
        status: Option<MailStatus>,
        before: Option<Uuid>,
        limit: u32,
    ) -> RepoResult<Vec<MailSummary>> {
        let mut sql = Sql::new(format!("SELECT {SUMMARY_COLUMNS} FROM mail_outbox WHERE TRUE"));
        if let Some(store_id) = store_id {
            sql.push(" AND store_id = ").push_bind(store_id);
        }
        match status {
            None => &mut sql,
            Some(MailStatus::Sent) => sql.push(" AND sent_at IS NOT NULL"),
            Some(MailStatus::Failed) => sql.push(" AND sent_at IS NULL AND failed_at IS NOT NULL"),
            Some(MailStatus::Queued) => sql.push(" AND sent_at IS NULL AND failed_at IS NULL"),
        };
        if let Some(before) = before {
            sql.push(" AND id < ").push_bind(before);
        }
        sql.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        Ok(self.fetch_all(sql).await?.iter().map(summary).collect::<sqlx::Result<_>>()?)
    }

    /// One mail, with its message while it is still kept (until delivery).
    pub async fn mail(
        &mut self,
        store_id: Option<Uuid>,
        id: Uuid,
    ) -> RepoResult<Option<(MailSummary, Option<OutgoingMail>)>> {
        let mut sql = Sql::new(format!(
            "SELECT {SUMMARY_COLUMNS}, CAST(message AS TEXT) AS message FROM mail_outbox WHERE id = "
        ));
        sql.push_bind(id);
        if let Some(store_id) = store_id {
            sql.push(" AND store_id = ").push_bind(store_id);
        }
        let Some(row) = self.fetch_optional(sql).await? else { return Ok(None) };
        let message = row.opt_text("message")?.and_then(|m| serde_json::from_str(&m).ok());
        Ok(Some((summary(&row)?, message)))
    }

    /// Puts a given-up mail back in the queue, due now, with its attempts counted afresh; false
    /// when the store has no such failed mail.
    pub async fn retry_mail(&mut self, store_id: Option<Uuid>, id: Uuid, now: i64) -> RepoResult<bool> {
        let mut sql = Sql::new("UPDATE mail_outbox SET failed_at = NULL, attempts = 0, next_attempt_at = ");
        sql.push_bind(now).push(" WHERE failed_at IS NOT NULL AND sent_at IS NULL AND id = ").push_bind(id);
        if let Some(store_id) = store_id {
            sql.push(" AND store_id = ").push_bind(store_id);
        }
        Ok(self.execute(sql).await? == 1)
    }

    /// Mails waiting, and mails given up on: the outbox's sizes.
    pub async fn mail_queue_sizes(&mut self) -> RepoResult<(i64, i64)> {
        let sql = Sql::new(
            "SELECT
                (SELECT COUNT(*) FROM mail_outbox WHERE failed_at IS NULL AND sent_at IS NULL) AS queued,
                (SELECT COUNT(*) FROM mail_outbox WHERE failed_at IS NOT NULL AND sent_at IS NULL) AS failed",
        );
        let row = self.fetch_one(sql).await?;
        Ok((row.int("queued")?, row.int("failed")?))
    }

    /// The summaries of mail sent before `before`.
    pub async fn delete_sent_mail(&mut self, before: i64) -> RepoResult<u64> {
        self.delete_in_batches("mail_outbox", "id", "sent_at IS NOT NULL AND sent_at < $1", before).await
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
