//! Saved segments (stored `find` filters) and the consent ledger.

use uuid::Uuid;

use super::{RepoResult, Row, Sql, Tx};
use crate::domain::{ConsentAction, Status, SubscriptionStatus};

#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRow {
    pub store_id: Uuid,
    pub id: Uuid,
    pub key: String,
    pub name: Option<String>,
    pub query: Option<String>,
    pub taxonomy_query: Option<String>,
    pub status: Option<Status>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One record of the consent ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentRow {
    pub store_id: Uuid,
    pub id: Uuid,
    pub subscription_id: Uuid,
    pub profile_id: Uuid,
    pub audience_id: Uuid,
    pub action: ConsentAction,
    pub status_after: SubscriptionStatus,
    pub at: i64,
    pub source: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub confirm_mail_id: Option<Uuid>,
    pub wording_hash: Option<String>,
}

const SEGMENT_COLUMNS: &str = "store_id, id, key, name, query, taxonomy_query, status, created_at, updated_at";
const CONSENT_COLUMNS: &str = "store_id, id, subscription_id, profile_id, audience_id, action, status_after, at, source, \
     ip, user_agent, confirm_mail_id, wording_hash";

fn segment(r: &Row) -> sqlx::Result<SegmentRow> {
    Ok(SegmentRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        key: r.text("key")?,
        name: r.opt_text("name")?,
        query: r.opt_text("query")?,
        taxonomy_query: r.opt_text("taxonomy_query")?,
        status: r
            .opt_text("status")?
            .map(|s| s.parse())
            .transpose()
            .map_err(|e: &str| sqlx::Error::Decode(e.into()))?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

fn consent(r: &Row) -> sqlx::Result<ConsentRow> {
    Ok(ConsentRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        subscription_id: r.uuid("subscription_id")?,
        profile_id: r.uuid("profile_id")?,
        audience_id: r.uuid("audience_id")?,
        action: r.parsed("action")?,
        status_after: r.parsed("status_after")?,
        at: r.int("at")?,
        source: r.opt_text("source")?,
        ip: r.opt_text("ip")?,
        user_agent: r.opt_text("user_agent")?,
        confirm_mail_id: r.opt_uuid("confirm_mail_id")?,
        wording_hash: r.opt_text("wording_hash")?,
    })
}

/// Inserts one consent record, placeholders `$1` to `$13` ([`bind_consent`] binds them).
pub(super) const INSERT_CONSENT: &str = "INSERT INTO consents (store_id, id, subscription_id, profile_id, audience_id, \
     action, status_after, at, source, ip, user_agent, confirm_mail_id, wording_hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

pub(super) fn bind_consent(sql: Sql, c: &ConsentRow) -> Sql {
    sql.bind(c.store_id)
        .bind(c.id)
        .bind(c.subscription_id)
        .bind(c.profile_id)
        .bind(c.audience_id)
        .bind(c.action.as_str())
        .bind(c.status_after.as_str())
        .bind(c.at)
        .bind(&c.source)
        .bind(&c.ip)
        .bind(&c.user_agent)
        .bind(c.confirm_mail_id)
        .bind(&c.wording_hash)
}

impl Tx {
    pub async fn insert_segment(&mut self, s: &SegmentRow) -> RepoResult<()> {
        let sql =
            Sql::new(format!("INSERT INTO segments ({SEGMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
                .bind(s.store_id)
                .bind(s.id)
                .bind(&s.key)
                .bind(&s.name)
                .bind(&s.query)
                .bind(&s.taxonomy_query)
                .bind(s.status.map(Status::as_str))
                .bind(s.created_at)
                .bind(s.updated_at);
        self.execute(sql).await?;
        Ok(())
    }

    pub async fn update_segment(&mut self, s: &SegmentRow) -> RepoResult<()> {
        let sql = Sql::new(
            "UPDATE segments SET key = $3, name = $4, query = $5, taxonomy_query = $6, status = $7, updated_at = $8
             WHERE store_id = $1 AND id = $2",
        )
        .bind(s.store_id)
        .bind(s.id)
        .bind(&s.key)
        .bind(&s.name)
        .bind(&s.query)
        .bind(&s.taxonomy_query)
        .bind(s.status.map(Status::as_str))
        .bind(s.updated_at);
        self.execute(sql).await?;
        Ok(())
    }

    /// By id or key.
    pub async fn segment(&mut self, store_id: Uuid, id_or_key: &str) -> RepoResult<Option<SegmentRow>> {
        let sql = match Uuid::parse_str(id_or_key) {
            Ok(id) => Sql::new(format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE store_id = $1 AND id = $2"))
                .bind(store_id)
                .bind(id),
            Err(_) => Sql::new(format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE store_id = $1 AND key = $2"))
                .bind(store_id)
                .bind(id_or_key),
        };
        Ok(self.fetch_optional(sql).await?.map(|r| segment(&r)).transpose()?)
    }

    pub async fn segments(&mut self, store_id: Uuid, after: Option<Uuid>, limit: u32) -> RepoResult<Vec<SegmentRow>> {
        let sql = Sql::new(format!(
            "SELECT {SEGMENT_COLUMNS} FROM segments WHERE store_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(store_id)
        .bind(after)
        .bind(limit);
        Ok(self.fetch_all(sql).await?.iter().map(segment).collect::<sqlx::Result<_>>()?)
    }

    pub async fn delete_segment(&mut self, store_id: Uuid, id: Uuid) -> RepoResult<bool> {
        let sql = Sql::new("DELETE FROM segments WHERE store_id = $1 AND id = $2").bind(store_id).bind(id);
        Ok(self.execute(sql).await? > 0)
    }

    pub async fn insert_consents(&mut self, records: &[ConsentRow]) -> RepoResult<()> {
        for c in records {
            self.execute(bind_consent(Sql::new(INSERT_CONSENT), c)).await?;
        }
        Ok(())
    }

    /// The profile's ledger, oldest first.
    pub async fn consents(
        &mut self,
        store_id: Uuid,
        profile_id: Uuid,
        after: Option<Uuid>,
        limit: u32,
    ) -> RepoResult<Vec<ConsentRow>> {
        let sql = Sql::new(format!(
            "SELECT {CONSENT_COLUMNS} FROM consents WHERE store_id = $1 AND profile_id = $2 AND ($3 IS NULL OR id > $3)
             ORDER BY id LIMIT $4"
        ))
        .bind(store_id)
        .bind(profile_id)
        .bind(after)
        .bind(limit);
        Ok(self.fetch_all(sql).await?.iter().map(consent).collect::<sqlx::Result<_>>()?)
    }

    /// The latest record of a subscription with a confirmation mail: the mail a confirmation answers.
    pub async fn confirm_mail_of(
        &mut self,
        store_id: Uuid,
        subscription_id: Uuid,
    ) -> RepoResult<Option<(Uuid, Option<String>)>> {
        let sql = Sql::new(
            "SELECT confirm_mail_id, wording_hash FROM consents WHERE store_id = $1 AND subscription_id = $2
               AND confirm_mail_id IS NOT NULL ORDER BY id DESC LIMIT 1",
        )
        .bind(store_id)
        .bind(subscription_id);
        let Some(r) = self.fetch_optional(sql).await? else { return Ok(None) };
        Ok(r.opt_uuid("confirm_mail_id")?
            .map(|id| Ok::<_, sqlx::Error>((id, r.opt_text("wording_hash")?)))
            .transpose()?)
    }

    /// A merge: the source's ledger goes with its subscriptions to the target.
    pub async fn move_consents(&mut self, store_id: Uuid, from: Uuid, to: Uuid) -> RepoResult<u64> {
        let sql = Sql::new("UPDATE consents SET profile_id = $3 WHERE store_id = $1 AND profile_id = $2")
            .bind(store_id)
            .bind(from)
            .bind(to);
        self.execute(sql).await
    }

    /// Whether the store keeps full IP addresses in the ledger.
    pub async fn consent_full_ip(&mut self, store_id: Uuid) -> RepoResult<bool> {
        let sql = Sql::new("SELECT consent_full_ip FROM stores WHERE id = $1").bind(store_id);
        Ok(match self.fetch_optional(sql).await? {
            Some(r) => r.boolean("consent_full_ip")?,
            None => false,
        })
    }
}
