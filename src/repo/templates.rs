//! Email templates of a store (§7).

use uuid::Uuid;

use super::{RepoResult, Row, Sql, Tx};
use crate::domain::Status;

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
    /// Only active templates are sent.
    pub status: Status,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "store_id, id, key, subject, body, text_body, from_name, from_email, reply_to, preheader, \
                       status, created_at, updated_at";

fn template(r: &Row) -> sqlx::Result<TemplateRow> {
    template_at(r, "")
}

/// A template whose columns carry `prefix` (`t_id`, `t_key`, ...), as a join names them.
pub(super) fn template_at(r: &Row, prefix: &str) -> sqlx::Result<TemplateRow> {
    let c = |name: &str| format!("{prefix}{name}");
    Ok(TemplateRow {
        store_id: r.uuid(&c("store_id"))?,
        id: r.uuid(&c("id"))?,
        key: r.text(&c("key"))?,
        subject: r.text(&c("subject"))?,
        body: r.text(&c("body"))?,
        text_body: r.opt_text(&c("text_body"))?,
        from_name: r.opt_text(&c("from_name"))?,
        from_email: r.opt_text(&c("from_email"))?,
        reply_to: r.opt_text(&c("reply_to"))?,
        preheader: r.opt_text(&c("preheader"))?,
        status: r.parsed(&c("status"))?,
        created_at: r.int(&c("created_at"))?,
        updated_at: r.int(&c("updated_at"))?,
    })
}

/// The template columns of `t`, each named `t_<column>`.
pub(super) fn prefixed_columns() -> String {
    COLUMNS.split(", ").map(|c| format!("t.{c} AS t_{c}")).collect::<Vec<_>>().join(", ")
}

impl Tx {
    /// `Unique("email_templates_key_unique")` when the key is taken.
    pub async fn insert_template(&mut self, t: &TemplateRow) -> RepoResult<()> {
        let sql = Sql::new(
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
        .bind(t.status.as_str())
        .bind(t.created_at)
        .bind(t.updated_at);
        self.execute(sql).await?;
        Ok(())
    }

    /// By id when `id` is given and matches, else by key (a key may look like another template's
    /// id: the id wins).
    pub async fn template(&mut self, store_id: Uuid, id: Option<Uuid>, key: &str) -> RepoResult<Option<TemplateRow>> {
        self.template_where(store_id, id, key, "").await
    }

    /// [`Tx::template`], locked inside a transaction (for a change or a delete).
    pub async fn lock_template(
        &mut self,
        store_id: Uuid,
        id: Option<Uuid>,
        key: &str,
    ) -> RepoResult<Option<TemplateRow>> {
        let lock = self.for_update();
        self.template_where(store_id, id, key, lock).await
    }

    async fn template_where(
        &mut self,
        store_id: Uuid,
        id: Option<Uuid>,
        key: &str,
        lock: &str,
    ) -> RepoResult<Option<TemplateRow>> {
        let sql = Sql::new(format!(
            "SELECT {COLUMNS} FROM email_templates WHERE store_id = $1 AND (id = $2 OR key = $3)
             ORDER BY CASE WHEN id = $2 THEN 0 ELSE 1 END LIMIT 1{lock}"
        ))
        .bind(store_id)
        .bind(id)
        .bind(key);
        Ok(self.fetch_optional(sql).await?.map(|r| template(&r)).transpose()?)
    }

    pub async fn templates(&mut self, store_id: Uuid, after: Option<Uuid>, limit: u32) -> RepoResult<Vec<TemplateRow>> {
        let sql = Sql::new(format!(
            "SELECT {COLUMNS} FROM email_templates WHERE store_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(store_id)
        .bind(after)
        .bind(limit);
        Ok(self.fetch_all(sql).await?.iter().map(template).collect::<sqlx::Result<_>>()?)
    }

    /// Saves every column but `created_at`; false when the template is gone.
    pub async fn update_template(&mut self, t: &TemplateRow) -> RepoResult<bool> {
        let sql = Sql::new(
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
        .bind(t.status.as_str())
        .bind(t.updated_at);
        Ok(self.execute(sql).await? > 0)
    }

    pub async fn delete_template(&mut self, store_id: Uuid, id: Uuid) -> RepoResult<bool> {
        let sql = Sql::new("DELETE FROM email_templates WHERE store_id = $1 AND id = $2").bind(store_id).bind(id);
        Ok(self.execute(sql).await? > 0)
    }

    /// Whether the store has the template; share-locked inside a transaction, so it cannot be
    /// deleted before an audience that now points at it is saved.
    pub async fn template_exists(&mut self, store_id: Uuid, id: Uuid) -> RepoResult<bool> {
        let sql =
            Sql::new(format!("SELECT id FROM email_templates WHERE store_id = $1 AND id = $2{}", self.for_share()))
                .bind(store_id)
                .bind(id);
        Ok(self.fetch_optional(sql).await?.is_some())
    }
}
