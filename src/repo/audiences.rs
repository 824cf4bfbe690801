use async_trait::async_trait;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::row::RowExt;
use super::sql::{Param, SqlBuilder, bind_params, like_escape};
use super::{BeginWrite, NewOutboxMail, RepoError, RepoResult, SqlRepo, insert_outbox_mail, on_db};
use crate::domain::audience::Price;

#[derive(Debug, Clone, PartialEq)]
pub struct AudienceRow {
    pub store_id: Uuid,
    pub id: Uuid,
    pub key: String,
    pub name: Option<String>,
    pub status: String,
    /// `standard` or `paid`.
    pub kind: String,
    pub prices: Vec<Price>,
    pub confirm_template_id: Option<Uuid>,
    pub subscriber_count: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionRow {
    pub store_id: Uuid,
    pub id: Uuid,
    pub audience_id: Uuid,
    pub profile_id: Uuid,
    pub status: String,
    pub source: String,
    pub price_id: Option<String>,
    pub payment: Option<Value>,
    pub start_date: Option<i64>,
    pub end_date: Option<i64>,
    pub confirmed_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct SubscriberRow {
    pub subscription: SubscriptionRow,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AudienceSearch {
    pub store_id: Uuid,
    pub ids: Vec<Uuid>,
    pub status: Option<String>,
    /// Lower-cased substring of the key.
    pub query: Option<String>,
    pub after: Option<Uuid>,
    pub limit: u32,
}

/// A subscription to write for (audience, profile): inserted, or replacing the existing row's
/// state; with an optional double opt-in token and mail, all in one transaction.
#[derive(Debug, Clone)]
pub struct Upsert {
    pub row: SubscriptionRow,
    pub confirm_token: Option<([u8; 32], i64)>,
    pub mail: Option<NewOutboxMail>,
}

const AUDIENCE_COLUMNS: &str =
    "store_id, id, key, name, status, kind, prices, confirm_template_id, subscriber_count, created_at, updated_at";
pub(super) const SUBSCRIPTION_COLUMNS: &str = "s.store_id, s.id, s.audience_id, s.profile_id, s.status, s.source, s.price_id, \
     s.payment, s.start_date, s.end_date, s.confirmed_at, s.cancelled_at, s.created_at, s.updated_at";

fn audience(r: &impl RowExt) -> sqlx::Result<AudienceRow> {
    Ok(AudienceRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        key: r.text("key")?,
        name: r.opt_text("name")?,
        status: r.text("status")?,
        kind: r.text("kind")?,
        prices: r.json("prices")?,
        confirm_template_id: r.opt_uuid("confirm_template_id")?,
        subscriber_count: r.int("subscriber_count")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

pub(crate) fn subscription(r: &impl RowExt) -> sqlx::Result<SubscriptionRow> {
    Ok(SubscriptionRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        audience_id: r.uuid("audience_id")?,
        profile_id: r.uuid("profile_id")?,
        status: r.text("status")?,
        source: r.text("source")?,
        price_id: r.opt_text("price_id")?,
        payment: r.opt_json("payment")?,
        start_date: r.opt_int("start_date")?,
        end_date: r.opt_int("end_date")?,
        confirmed_at: r.opt_int("confirmed_at")?,
        cancelled_at: r.opt_int("cancelled_at")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

#[async_trait]
pub trait AudienceRepo {
    /// `Conflict` when the key is taken.
    async fn insert_audience(&self, a: &AudienceRow) -> RepoResult<()>;
    async fn audience(&self, store_id: Uuid, id: Option<Uuid>, key: &str) -> RepoResult<Option<AudienceRow>>;
    async fn find_audiences(&self, search: &AudienceSearch) -> RepoResult<Vec<AudienceRow>>;
    /// `Conflict` when the key is taken.
    async fn update_audience(&self, a: &AudienceRow) -> RepoResult<()>;
    async fn template_exists(&self, store_id: Uuid, id: Uuid) -> RepoResult<bool>;
    /// The profile's `verified` flag and its subscription to the audience, in one query;
    /// `None` when the profile does not exist.
    async fn access_row(
        &self,
        store_id: Uuid,
        audience_id: Uuid,
        profile_id: Uuid,
    ) -> RepoResult<Option<(bool, Option<SubscriptionRow>)>>;
    async fn subscription(
        &self,
        store_id: Uuid,
        audience_id: Uuid,
        profile_id: Uuid,
    ) -> RepoResult<Option<SubscriptionRow>>;
    async fn subscriptions_of_profile(&self, store_id: Uuid, profile_id: Uuid) -> RepoResult<Vec<SubscriptionRow>>;
    /// Returns the stored row (its id is the existing one when the pair was subscribed before).
    async fn upsert_subscription(&self, upsert: &Upsert) -> RepoResult<SubscriptionRow>;
    /// When the subscription's newest confirmation link was made, if it has one.
    async fn last_confirmation_at(&self, store_id: Uuid, subscription_id: Uuid) -> RepoResult<Option<i64>>;
    async fn confirm_subscription(
        &self,
        store_id: Uuid,
        token_hash: &[u8; 32],
        now: i64,
    ) -> RepoResult<Option<SubscriptionRow>>;
    /// Cancels an open subscription; `None` when there is none to cancel.
    async fn cancel_subscription(
        &self,
        store_id: Uuid,
        audience_id: Uuid,
        profile_id: Uuid,
        now: i64,
    ) -> RepoResult<Option<SubscriptionRow>>;
    async fn delete_subscription(&self, store_id: Uuid, audience_id: Uuid, profile_id: Uuid) -> RepoResult<bool>;
    async fn subscribers(
        &self,
        store_id: Uuid,
        audience_id: Uuid,
        status: Option<&str>,
        after: Option<Uuid>,
        limit: u32,
    ) -> RepoResult<Vec<SubscriberRow>>;
}

#[async_trait]
impl AudienceRepo for SqlRepo {
    async fn insert_audience(&self, a: &AudienceRow) -> RepoResult<()> {
        on_db!(self, p => {
            sqlx::query(
                "INSERT INTO audiences (store_id, id, key, name, status, kind, prices, confirm_template_id, subscriber_count,
                   created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $9)",
            )
            .bind(a.store_id)
            .bind(a.id)
            .bind(&a.key)
            .bind(&a.name)
            .bind(&a.status)
            .bind(&a.kind)
            .bind(Json(&a.prices))
            .bind(a.confirm_template_id)
            .bind(a.created_at)
            .execute(p)
            .await
            .map_err(RepoError::from_write)?;
        });
        Ok(())
    }

    async fn audience(&self, store_id: Uuid, id: Option<Uuid>, key: &str) -> RepoResult<Option<AudienceRow>> {
        let sql = format!("SELECT {AUDIENCE_COLUMNS} FROM audiences WHERE store_id = $1 AND (id = $2 OR key = $3)");
        on_db!(self, p => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(store_id).bind(id).bind(key).fetch_optional(p).await?;
            Ok(row.map(|r| audience(&r)).transpose()?)
        })
    }

    async fn find_audiences(&self, s: &AudienceSearch) -> RepoResult<Vec<AudienceRow>> {
        let mut b = SqlBuilder::new(&format!("SELECT {AUDIENCE_COLUMNS} FROM audiences WHERE store_id = "));
        b.bind(Param::Uuid(s.store_id));
        if !s.ids.is_empty() {
            b.push(" AND id IN ").list(s.ids.iter().map(|id| Param::Uuid(*id)));
        }
        if let Some(status) = &s.status {
            b.push(" AND status = ").bind(Param::Text(status.clone()));
        }
        if let Some(q) = &s.query {
            b.push(" AND lower(key) LIKE ").bind(Param::Text(format!("%{}%", like_escape(q)))).push(" ESCAPE '\\'");
        }
        if let Some(after) = s.after {
            b.push(" AND id > ").bind(Param::Uuid(after));
        }
        b.push(" ORDER BY id LIMIT ").bind(Param::Int(i64::from(s.limit)));
        on_db!(self, p => {
            let rows = bind_params!(sqlx::query(sqlx::AssertSqlSafe(b.sql.clone())), &b.params).fetch_all(p).await?;
            Ok(rows.iter().map(audience).collect::<sqlx::Result<_>>()?)
        })
    }

    async fn update_audience(&self, a: &AudienceRow) -> RepoResult<()> {
        on_db!(self, p => {
            sqlx::query(
                "UPDATE audiences SET key = $3, name = $4, status = $5, prices = $6, confirm_template_id = $7, updated_at = $8
                 WHERE store_id = $1 AND id = $2",
            )
            .bind(a.store_id)
            .bind(a.id)
            .bind(&a.key)
            .bind(&a.name)
            .bind(&a.status)
            .bind(Json(&a.prices))
            .bind(a.confirm_template_id)
            .bind(a.updated_at)
            .execute(p)
            .await
            .map_err(RepoError::from_write)?;
        });
        Ok(())
    }

    async fn template_exists(&self, store_id: Uuid, id: Uuid) -> RepoResult<bool> {
        on_db!(self, p => {
            let found: Option<Uuid> = sqlx::query_scalar("SELECT id FROM email_templates WHERE store_id = $1 AND id = $2")
                .bind(store_id)
                .bind(id)
                .fetch_optional(p)
                .await?;
            Ok(found.is_some())
        })
    }

    async fn access_row(
        &self,
        store_id: Uuid,
        audience_id: Uuid,
        profile_id: Uuid,
    ) -> RepoResult<Option<(bool, Option<SubscriptionRow>)>> {
        let sql = format!(
            "SELECT p.verified AS profile_verified, s.id AS sub_id, {SUBSCRIPTION_COLUMNS} FROM profiles p
             LEFT JOIN subscriptions s ON s.store_id = p.store_id AND s.profile_id = p.id AND s.audience_id = $2
             WHERE p.store_id = $1 AND p.id = $3"
        );
        on_db!(self, p => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(store_id).bind(audience_id).bind(profile_id).fetch_optional(p).await?;
            let Some(row) = row else { return Ok(None) };
            let verified = row.boolean("profile_verified")?;
            let sub = if row.opt_uuid("sub_id")?.is_some() { Some(subscription(&row)?) } else { None };
            Ok(Some((verified, sub)))
        })
    }

    async fn subscription(
        &self,
        store_id: Uuid,
        audience_id: Uuid,
        profile_id: Uuid,
    ) -> RepoResult<Option<SubscriptionRow>> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s WHERE s.store_id = $1 AND s.audience_id = $2 AND s.profile_id = $3"
        );
        on_db!(self, p => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(store_id).bind(audience_id).bind(profile_id).fetch_optional(p).await?;
            Ok(row.map(|r| subscription(&r)).transpose()?)
        })
    }

    async fn subscriptions_of_profile(&self, store_id: Uuid, profile_id: Uuid) -> RepoResult<Vec<SubscriptionRow>> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s WHERE s.store_id = $1 AND s.profile_id = $2 ORDER BY s.id"
        );
        on_db!(self, p => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(store_id).bind(profile_id).fetch_all(p).await?;
            Ok(rows.iter().map(subscription).collect::<sqlx::Result<_>>()?)
        })
    }

    async fn upsert_subscription(&self, u: &Upsert) -> RepoResult<SubscriptionRow> {
        let r = &u.row;
        let sql = format!(
            "INSERT INTO subscriptions (store_id, id, audience_id, profile_id, status, source, price_id, payment, start_date,
               end_date, confirmed_at, cancelled_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
             ON CONFLICT (store_id, audience_id, profile_id) DO UPDATE SET status = excluded.status,
               source = excluded.source, price_id = excluded.price_id, payment = excluded.payment,
               start_date = excluded.start_date, end_date = excluded.end_date, confirmed_at = excluded.confirmed_at,
               cancelled_at = excluded.cancelled_at, updated_at = excluded.updated_at
             RETURNING {}",
            SUBSCRIPTION_COLUMNS.replace("s.", "")
        );
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(r.store_id)
                .bind(r.id)
                .bind(r.audience_id)
                .bind(r.profile_id)
                .bind(&r.status)
                .bind(&r.source)
                .bind(&r.price_id)
                .bind(r.payment.as_ref().map(Json))
                .bind(r.start_date)
                .bind(r.end_date)
                .bind(r.confirmed_at)
                .bind(r.cancelled_at)
                .bind(r.created_at)
                .fetch_one(&mut *tx)
                .await
                .map_err(RepoError::from_write)?;
            let stored = subscription(&row)?;
            if let Some((hash, expires_at)) = &u.confirm_token {
                // Older confirmation links of this subscription stop working.
                sqlx::query("UPDATE subscription_tokens SET used_at = $3 WHERE store_id = $1 AND subscription_id = $2 AND used_at IS NULL")
                    .bind(r.store_id)
                    .bind(stored.id)
                    .bind(r.updated_at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO subscription_tokens (store_id, token_hash, subscription_id, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(r.store_id)
                .bind(&hash[..])
                .bind(stored.id)
                .bind(r.updated_at)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(mail) = &u.mail {
                insert_outbox_mail!(&mut *tx, mail).await.map_err(RepoError::from_write)?;
            }
            tx.commit().await?;
            Ok(stored)
        })
    }

    async fn last_confirmation_at(&self, store_id: Uuid, subscription_id: Uuid) -> RepoResult<Option<i64>> {
        on_db!(self, p => {
            let at: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(created_at) FROM subscription_tokens WHERE store_id = $1 AND subscription_id = $2",
            )
            .bind(store_id)
            .bind(subscription_id)
            .fetch_one(p)
            .await?;
            Ok(at)
        })
    }

    async fn confirm_subscription(
        &self,
        store_id: Uuid,
        token_hash: &[u8; 32],
        now: i64,
    ) -> RepoResult<Option<SubscriptionRow>> {
        let sql = format!(
            "UPDATE subscriptions SET status = 'active', confirmed_at = $3, start_date = COALESCE(start_date, $3), updated_at = $3
             WHERE store_id = $1 AND status = 'pending' AND id = $2 RETURNING {}",
            SUBSCRIPTION_COLUMNS.replace("s.", "")
        );
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let claimed: Option<Uuid> = sqlx::query_scalar(
                "UPDATE subscription_tokens SET used_at = $3
                 WHERE store_id = $1 AND token_hash = $2 AND used_at IS NULL AND expires_at > $3 RETURNING subscription_id",
            )
            .bind(store_id)
            .bind(&token_hash[..])
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(subscription_id) = claimed else { return Ok(None) };
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(store_id).bind(subscription_id).bind(now).fetch_optional(&mut *tx).await?;
            let Some(row) = row else { return Ok(None) };
            let confirmed = subscription(&row)?;
            tx.commit().await?;
            Ok(Some(confirmed))
        })
    }

    async fn cancel_subscription(
        &self,
        store_id: Uuid,
        audience_id: Uuid,
        profile_id: Uuid,
        now: i64,
    ) -> RepoResult<Option<SubscriptionRow>> {
        let sql = format!(
            "UPDATE subscriptions SET status = 'cancelled', cancelled_at = $4, updated_at = $4
             WHERE store_id = $1 AND audience_id = $2 AND profile_id = $3 AND status IN ('pending', 'active', 'cancellation_scheduled')
             RETURNING {}",
            SUBSCRIPTION_COLUMNS.replace("s.", "")
        );
        on_db!(self, p => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(store_id)
                .bind(audience_id)
                .bind(profile_id)
                .bind(now)
                .fetch_optional(p)
                .await?;
            Ok(row.map(|r| subscription(&r)).transpose()?)
        })
    }

    async fn delete_subscription(&self, store_id: Uuid, audience_id: Uuid, profile_id: Uuid) -> RepoResult<bool> {
        on_db!(self, p => {
            let n = sqlx::query("DELETE FROM subscriptions WHERE store_id = $1 AND audience_id = $2 AND profile_id = $3")
                .bind(store_id)
                .bind(audience_id)
                .bind(profile_id)
                .execute(p)
                .await?
                .rows_affected();
            Ok(n > 0)
        })
    }

    async fn subscribers(
        &self,
        store_id: Uuid,
        audience_id: Uuid,
        status: Option<&str>,
        after: Option<Uuid>,
        limit: u32,
    ) -> RepoResult<Vec<SubscriberRow>> {
        let mut b = SqlBuilder::new(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS}, p.email AS email FROM subscriptions s
             JOIN profiles p ON p.store_id = s.store_id AND p.id = s.profile_id
             WHERE s.store_id = "
        ));
        b.bind(Param::Uuid(store_id)).push(" AND s.audience_id = ").bind(Param::Uuid(audience_id));
        if let Some(status) = status {
            b.push(" AND s.status = ").bind(Param::Text(status.into()));
        }
        if let Some(after) = after {
            b.push(" AND s.id > ").bind(Param::Uuid(after));
        }
        b.push(" ORDER BY s.id LIMIT ").bind(Param::Int(i64::from(limit)));
        on_db!(self, p => {
            let rows = bind_params!(sqlx::query(sqlx::AssertSqlSafe(b.sql.clone())), &b.params).fetch_all(p).await?;
            Ok(rows
                .iter()
                .map(|r| Ok(SubscriberRow { subscription: subscription(r)?, email: r.opt_text("email")? }))
                .collect::<sqlx::Result<_>>()?)
        })
    }
}
