//! Email templates of a store (§7).

use async_trait::async_trait;
use uuid::Uuid;

use super::row::RowExt;
use super::{BeginWrite, RepoError, RepoResult, SqlRepo, on_db};

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateRow {
    pub store_id: Uuid,
    pub id: Uuid,
    pub key: String,
    pub subject: String,
    /// HTML.
    pub body: String,
    pub text_body: Option<String>,
    pub from_name: Option<String>,
    pub from_email: Option<String>,
    pub reply_to: Option<String>,
    pub preheader: Option<String>,
    /// `active` or `archived`; only active templates are sent.
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[async_trait]
pub trait TemplateRepo {
    /// `Conflict` when the key is taken.
    async fn insert_template(&self, t: &TemplateRow) -> RepoResult<()>;
    /// By id when `id` is given and matches, else by key.
    async fn template(&self, store_id: Uuid, id: Option<Uuid>, key: &str) -> RepoResult<Option<TemplateRow>>;
    async fn templates(&self, store_id: Uuid, after: Option<Uuid>, limit: u32) -> RepoResult<Vec<TemplateRow>>;
    /// Saves every column but `created_at`; false when the template is gone. `Conflict` when the key is taken.
    async fn update_template(&self, t: &TemplateRow) -> RepoResult<bool>;
    /// Deletes the template and, in the same transaction, makes every audience that used it
    /// for confirmations single opt-in (`confirm_template_id` null, `updated_at` = `now`).
    async fn delete_template(&self, store_id: Uuid, id: Uuid, now: i64) -> RepoResult<bool>;
}

const COLUMNS: &str = "store_id, id, key, subject, body, text_body, from_name, from_email, reply_to, preheader, \
                       status, created_at, updated_at";

fn template(r: &impl RowExt) -> sqlx::Result<TemplateRow> {
    Ok(TemplateRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        key: r.text("key")?,
        subject: r.text("subject")?,
        body: r.text("body")?,
        text_body: r.opt_text("text_body")?,
        from_name: r.opt_text("from_name")?,
        from_email: r.opt_text("from_email")?,
        reply_to: r.opt_text("reply_to")?,
        preheader: r.opt_text("preheader")?,
        status: r.text("status")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

#[async_trait]
impl TemplateRepo for SqlRepo {
    async fn insert_template(&self, t: &TemplateRow) -> RepoResult<()> {
        on_db!(self, p => {
            sqlx::query(
                "INSERT INTO email_templates (store_id, id, key, subject, body, text_body, from_name, from_email,
                                              reply_to, preheader, status, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(t.store_id)
            .bind(t.id)
            .bind(&t.key)
            .bind(&t.subject)
            .bind(&t.body)
            .bind(&t.text_body)
            .bind(&t.from_name)
            .bind(&t.from_email)
            .bind(&t.reply_to)
            .bind(&t.preheader)
            .bind(&t.status)
            .bind(t.created_at)
            .bind(t.updated_at)
            .execute(p)
            .await
            .map_err(RepoError::from_write)?;
        });
        Ok(())
    }

    async fn template(&self, store_id: Uuid, id: Option<Uuid>, key: &str) -> RepoResult<Option<TemplateRow>> {
        // A key may look like another template's id: the id wins.
        let sql = format!(
            "SELECT {COLUMNS} FROM email_templates WHERE store_id = $1 AND (id = $2 OR key = $3)
             ORDER BY CASE WHEN id = $2 THEN 0 ELSE 1 END LIMIT 1"
        );
        on_db!(self, p => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(store_id).bind(id).bind(key).fetch_optional(p).await?;
            Ok(row.map(|r| template(&r)).transpose()?)
        })
    }

    async fn templates(&self, store_id: Uuid, after: Option<Uuid>, limit: u32) -> RepoResult<Vec<TemplateRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM email_templates WHERE store_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        );
        on_db!(self, p => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(store_id)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(p)
                .await?;
            Ok(rows.iter().map(template).collect::<sqlx::Result<_>>()?)
        })
    }

    async fn update_template(&self, t: &TemplateRow) -> RepoResult<bool> {
        on_db!(self, p => {
            let done = sqlx::query(
                "UPDATE email_templates SET key = $3, subject = $4, body = $5, text_body = $6, from_name = $7,
                        from_email = $8, reply_to = $9, preheader = $10, status = $11, updated_at = $12
                 WHERE store_id = $1 AND id = $2",
            )
            .bind(t.store_id)
            .bind(t.id)
            .bind(&t.key)
            .bind(&t.subject)
            .bind(&t.body)
            .bind(&t.text_body)
            .bind(&t.from_name)
            .bind(&t.from_email)
            .bind(&t.reply_to)
            .bind(&t.preheader)
            .bind(&t.status)
            .bind(t.updated_at)
            .execute(p)
            .await
            .map_err(RepoError::from_write)?;
            Ok(done.rows_affected() > 0)
        })
    }

    async fn delete_template(&self, store_id: Uuid, id: Uuid, now: i64) -> RepoResult<bool> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            // Locked first: an audience being pointed at this template meanwhile waits, then fails
            // its foreign key, instead of making this delete fail.
            let lock = format!("SELECT id FROM email_templates WHERE store_id = $1 AND id = $2{}", p.for_update());
            let found = sqlx::query(sqlx::AssertSqlSafe(lock)).bind(store_id).bind(id).fetch_optional(&mut *tx).await?;
            if found.is_none() {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE audiences SET confirm_template_id = NULL, updated_at = $3
                 WHERE store_id = $1 AND confirm_template_id = $2",
            )
            .bind(store_id)
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM email_templates WHERE store_id = $1 AND id = $2")
                .bind(store_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }
}
