//! The mail outbox as people see it: a store's queued, sent and failed mail, and a retry for a
//! mail given up on. (Delivery itself is `mail::outbox`.)

use uuid::Uuid;

use crate::domain::{Keyset, MailStatus};
use crate::error::{AppError, AppResult};
use crate::mail::OutgoingMail;
use crate::repo::{Database, MailSummary};

pub struct Outbox {
    db: Database,
}

impl Outbox {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Newest first. `store_id: None` lists every store's and the platform's mail (the CLI).
    pub async fn list(
        &self,
        store_id: Option<Uuid>,
        status: Option<MailStatus>,
        keyset: &Keyset,
    ) -> AppResult<Vec<MailSummary>> {
        let before = keyset.after_id().map_err(|e| AppError::validation(vec![e]))?;
        Ok(self.db.auto().mail_summaries(store_id, status, before, keyset.fetch()).await?)
    }

    /// A mail, with its message while it is still in the outbox (a delivered mail keeps no body).
    pub async fn get(&self, store_id: Option<Uuid>, id: Uuid) -> AppResult<(MailSummary, Option<OutgoingMail>)> {
        self.db.auto().mail(store_id, id).await?.ok_or(AppError::NotFound("mail"))
    }

    /// Queues a failed mail again, due now, with its attempts counted afresh.
    pub async fn retry(&self, store_id: Option<Uuid>, id: Uuid) -> AppResult<MailSummary> {
        let mut db = self.db.auto();
        if !db.retry_mail(store_id, id, crate::now()).await? {
            return match db.mail(store_id, id).await? {
                None => Err(AppError::NotFound("mail")),
                Some(_) => {
                    Err(AppError::Conflict { code: "not_failed", message: "only a failed mail can be retried".into() })
                }
            };
        }
        Ok(db.mail(store_id, id).await?.ok_or(AppError::NotFound("mail"))?.0)
    }
}
