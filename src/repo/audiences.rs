//! Audiences, subscriptions and double opt-in tokens. The subscribe, confirm and unsubscribe
//! rules are in `services::audiences`.

use serde_json::Value;
use uuid::Uuid;

use super::profiles::like_escape;
use super::{Arg, RepoResult, Row, Sql, Tx};
use crate::domain::audience::Price;
use crate::domain::{AudienceKind, Status, SubscriptionSource, SubscriptionStatus};

#[derive(Debug, Clone, PartialEq)]
pub struct AudienceRow {
    pub store_id: Uuid,
    pub id: Uuid,
    pub key: String,
    pub name: Option<String>,
    pub status: Status,
    pub kind: AudienceKind,
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
    pub status: SubscriptionStatus,
    pub source: SubscriptionSource,
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
    pub status: Option<Status>,
    /// Lower-cased substring of the key.
    pub query: Option<String>,
    pub after: Option<Uuid>,
    pub limit: u32,
}

const AUDIENCE_COLUMNS: &str =
    "store_id, id, key, name, status, kind, prices, confirm_template_id, subscriber_count, created_at, updated_at";
pub(super) const SUBSCRIPTION_COLUMNS: &str = "s.store_id, s.id, s.audience_id, s.profile_id, s.status, s.source, s.price_id, \
     s.payment, s.start_date, s.end_date, s.confirmed_at, s.cancelled_at, s.created_at, s.updated_at";
/// [`SUBSCRIPTION_COLUMNS`] for `RETURNING`, which takes no table alias.
const RETURNING_SUBSCRIPTION: &str = "store_id, id, audience_id, profile_id, status, source, price_id, payment, \
     start_date, end_date, confirmed_at, cancelled_at, created_at, updated_at";

fn audience(r: &Row) -> sqlx::Result<AudienceRow> {
    Ok(AudienceRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        key: r.text("key")?,
        name: r.opt_text("name")?,
        status: r.parsed("status")?,
        kind: r.parsed("kind")?,
        prices: r.json("prices")?,
        confirm_template_id: r.opt_uuid("confirm_template_id")?,
        subscriber_count: r.int("subscriber_count")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

pub(super) fn subscription(r: &Row) -> sqlx::Result<SubscriptionRow> {
    Ok(SubscriptionRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        audience_id: r.uuid("audience_id")?,
        profile_id: r.uuid("profile_id")?,
        status: r.parsed("status")?,
        source: r.parsed("source")?,
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

fn subscriptions(rows: Vec<Row>) -> RepoResult<Vec<SubscriptionRow>> {
    Ok(rows.iter().map(subscription).collect::<sqlx::Result<_>>()?)
}

impl Tx {
    /// `Unique("audiences_key_unique")` when the key is taken.
    pub async fn insert_audience(&mut self, a: &AudienceRow) -> RepoResult<()> {
        let sql = Sql::new(
            "INSERT INTO audiences (store_id, id, key, name, status, kind, prices, confirm_template_id, subscriber_count,
               created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $9)",
        )
        .bind(a.store_id)
        .bind(a.id)
        .bind(&a.key)
        .bind(&a.name)
        .bind(a.status.as_str())
        .bind(a.kind.as_str())
        .bind(Arg::json(&a.prices))
        .bind(a.confirm_template_id)
        .bind(a.created_at);
        self.execute(sql).await?;
        Ok(())
    }

    /// By id or key.
    pub async fn audience(&mut self, store_id: Uuid, id: Option<Uuid>, key: &str) -> RepoResult<Option<AudienceRow>> {
        self.audience_where(store_id, id, key, "").await
    }

    /// By id or key, locked inside a transaction against concurrent changes of the definition.
    pub async fn lock_audience(
        &mut self,
        store_id: Uuid,
        id: Option<Uuid>,
        key: &str,
    ) -> RepoResult<Option<AudienceRow>> {
        let lock = self.for_update();
        self.audience_where(store_id, id, key, lock).await
    }

    async fn audience_where(
        &mut self,
        store_id: Uuid,
        id: Option<Uuid>,
        key: &str,
        lock: &str,
    ) -> RepoResult<Option<AudienceRow>> {
        let sql = Sql::new(format!(
            "SELECT {AUDIENCE_COLUMNS} FROM audiences WHERE store_id = $1 AND (id = $2 OR key = $3){lock}"
        ))
        .bind(store_id)
        .bind(id)
        .bind(key);
        Ok(self.fetch_optional(sql).await?.map(|r| audience(&r)).transpose()?)
    }

    pub async fn find_audiences(&mut self, s: &AudienceSearch) -> RepoResult<Vec<AudienceRow>> {
        let mut sql = Sql::new(format!("SELECT {AUDIENCE_COLUMNS} FROM audiences WHERE store_id = "));
        sql.push_bind(s.store_id);
        if !s.ids.is_empty() {
            sql.push(" AND id IN ").push_list(s.ids.iter().copied());
        }
        if let Some(status) = s.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(q) = &s.query {
            sql.push(" AND lower(key) LIKE ").push_bind(format!("%{}%", like_escape(q))).push(" ESCAPE '\\'");
        }
        if let Some(after) = s.after {
            sql.push(" AND id > ").push_bind(after);
        }
        sql.push(" ORDER BY id LIMIT ").push_bind(s.limit);
        Ok(self.fetch_all(sql).await?.iter().map(audience).collect::<sqlx::Result<_>>()?)
    }

    pub async fn update_audience(&mut self, a: &AudienceRow) -> RepoResult<()> {
        let sql = Sql::new(
            "UPDATE audiences SET key = $3, name = $4, status = $5, prices = $6, confirm_template_id = $7, updated_at = $8
             WHERE store_id = $1 AND id = $2",
        )
        .bind(a.store_id)
        .bind(a.id)
        .bind(&a.key)
        .bind(&a.name)
        .bind(a.status.as_str())
        .bind(Arg::json(&a.prices))
        .bind(a.confirm_template_id)
        .bind(a.updated_at);
        self.execute(sql).await?;
        Ok(())
    }

    /// Makes every audience that confirms with the template single opt-in.
    pub async fn clear_confirm_template(&mut self, store_id: Uuid, template_id: Uuid, now: i64) -> RepoResult<()> {
        let sql = Sql::new(
            "UPDATE audiences SET confirm_template_id = NULL, updated_at = $3
             WHERE store_id = $1 AND confirm_template_id = $2",
        )
        .bind(store_id)
        .bind(template_id)
        .bind(now);
        self.execute(sql).await?;
        Ok(())
    }

    /// Locks the audiences that the profiles subscribe to, in id order, before their subscriptions
    /// change: the subscriber counts those changes update are then always taken in one order.
    pub async fn lock_audiences_of(&mut self, store_id: Uuid, profile_ids: &[Uuid]) -> RepoResult<()> {
        if self.for_update().is_empty() {
            return Ok(());
        }
        let mut sql = Sql::new(
            "SELECT id FROM audiences WHERE store_id = $1 AND id IN (
                SELECT audience_id FROM subscriptions WHERE store_id = $1 AND profile_id IN ",
        )
        .bind(store_id);
        sql.push_list(profile_ids.iter().copied()).push(") ORDER BY id FOR UPDATE");
        self.fetch_all(sql).await?;
        Ok(())
    }

    /// `checkAccess` in one round trip: the session checked as live (None otherwise, like
    /// [`Tx::live_profile_session`]), the audience found by id or key, and the subscription.
    pub async fn access_check(
        &mut self,
        store_id: Uuid,
        session_id: Uuid,
        profile_id: Uuid,
        audience: (Option<Uuid>, &str),
        now: i64,
    ) -> RepoResult<Option<super::AccessCheck>> {
        let holds = session_holds!("ss");
        let sql = Sql::new(format!(
            "SELECT {holds} AS holds, a.status AS audience_status,
                    s.id AS sub_id, {SUBSCRIPTION_COLUMNS}
             FROM profile_sessions ss
             JOIN profiles p ON p.store_id = ss.store_id AND p.id = ss.profile_id
             LEFT JOIN audiences a ON a.store_id = ss.store_id AND (a.id = $4 OR a.key = $5)
             LEFT JOIN subscriptions s ON s.store_id = ss.store_id AND s.audience_id = a.id AND s.profile_id = ss.profile_id
             WHERE ss.store_id = $1 AND ss.id = $2 AND ss.profile_id = $3 AND ss.revoked_at IS NULL
             AND ss.refresh_expires_at > $6
             LIMIT 1"
        ))
        .bind(store_id)
        .bind(session_id)
        .bind(profile_id)
        .bind(audience.0)
        .bind(audience.1)
        .bind(now);
        let Some(row) = self.fetch_optional(sql).await? else { return Ok(None) };
        let audience_status =
            if row.opt_text("audience_status")?.is_some() { Some(row.parsed("audience_status")?) } else { None };
        let subscription = if row.opt_uuid("sub_id")?.is_some() { Some(subscription(&row)?) } else { None };
        Ok(Some(super::AccessCheck { holds: row.boolean("holds")?, audience_status, subscription }))
    }

    /// The profile's subscription to the audience; locked inside a transaction.
    pub async fn subscription(
        &mut self,
        store_id: Uuid,
        audience_id: Uuid,
        profile_id: Uuid,
    ) -> RepoResult<Option<SubscriptionRow>> {
        let sql = Sql::new(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s
             WHERE s.store_id = $1 AND s.audience_id = $2 AND s.profile_id = $3{}",
            self.for_update()
        ))
        .bind(store_id)
        .bind(audience_id)
        .bind(profile_id);
        Ok(self.fetch_optional(sql).await?.map(|r| subscription(&r)).transpose()?)
    }

    /// The profile's subscriptions by id; locked inside a transaction.
    pub async fn subscriptions_of_profile(
        &mut self,
        store_id: Uuid,
        profile_id: Uuid,
    ) -> RepoResult<Vec<SubscriptionRow>> {
        let sql = Sql::new(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s WHERE s.store_id = $1 AND s.profile_id = $2 ORDER BY s.id{}",
            self.for_update()
        ))
        .bind(store_id)
        .bind(profile_id);
        subscriptions(self.fetch_all(sql).await?)
    }

    /// Inserts the subscription, or writes its state over the pair's existing row (whose id it
    /// keeps); returns the stored row.
    pub async fn upsert_subscription(&mut self, r: &SubscriptionRow) -> RepoResult<SubscriptionRow> {
        let sql = Sql::new(format!(
            "INSERT INTO subscriptions (store_id, id, audience_id, profile_id, status, source, price_id, payment, start_date,
               end_date, confirmed_at, cancelled_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
             ON CONFLICT (store_id, audience_id, profile_id) DO UPDATE SET status = excluded.status,
               source = excluded.source, price_id = excluded.price_id, payment = excluded.payment,
               start_date = excluded.start_date, end_date = excluded.end_date, confirmed_at = excluded.confirmed_at,
               cancelled_at = excluded.cancelled_at, updated_at = excluded.updated_at
             RETURNING {RETURNING_SUBSCRIPTION}"
        ))
        .bind(r.store_id)
        .bind(r.id)
        .bind(r.audience_id)
        .bind(r.profile_id)
        .bind(r.status.as_str())
        .bind(r.source.as_str())
        .bind(&r.price_id)
        .bind(Arg::opt_json(r.payment.as_ref()))
        .bind(r.start_date)
        .bind(r.end_date)
        .bind(r.confirmed_at)
        .bind(r.cancelled_at)
        .bind(r.created_at);
        Ok(subscription(&self.fetch_one(sql).await?)?)
    }

    /// Up to `batch` subscriptions whose scheduled end has passed become `expired`; returned as
    /// they were before (the caller records their events).
    pub async fn expire_ended_subscriptions(&mut self, now: i64, batch: i64) -> RepoResult<Vec<SubscriptionRow>> {
        let sql = Sql::new(format!(
            "SELECT {RETURNING_SUBSCRIPTION} FROM subscriptions WHERE status = $1 AND end_date IS NOT NULL
               AND end_date <= $2 ORDER BY end_date LIMIT $3{}",
            self.for_update()
        ))
        .bind(SubscriptionStatus::CancellationScheduled.as_str())
        .bind(now)
        .bind(batch);
        let due = subscriptions(self.fetch_all(sql).await?)?;
        for s in &due {
            let sql = Sql::new("UPDATE subscriptions SET status = $3, updated_at = $4 WHERE store_id = $1 AND id = $2")
                .bind(s.store_id)
                .bind(s.id)
                .bind(SubscriptionStatus::Expired.as_str())
                .bind(now);
            self.execute(sql).await?;
        }
        Ok(due)
    }

    /// Writes a subscription's state (everything but its keys, source and creation).
    pub async fn update_subscription(&mut self, r: &SubscriptionRow) -> RepoResult<SubscriptionRow> {
        let sql = Sql::new(format!(
            "UPDATE subscriptions SET status = $3, price_id = $4, payment = $5, start_date = $6, end_date = $7,
               confirmed_at = $8, cancelled_at = $9, updated_at = $10
             WHERE store_id = $1 AND id = $2 RETURNING {RETURNING_SUBSCRIPTION}"
        ))
        .bind(r.store_id)
        .bind(r.id)
        .bind(r.status.as_str())
        .bind(&r.price_id)
        .bind(Arg::opt_json(r.payment.as_ref()))
        .bind(r.start_date)
        .bind(r.end_date)
        .bind(r.confirmed_at)
        .bind(r.cancelled_at)
        .bind(r.updated_at);
        Ok(subscription(&self.fetch_one(sql).await?)?)
    }

    pub async fn delete_subscription_by_id(&mut self, store_id: Uuid, id: Uuid) -> RepoResult<()> {
        let sql = Sql::new("DELETE FROM subscriptions WHERE store_id = $1 AND id = $2").bind(store_id).bind(id);
        self.execute(sql).await?;
        Ok(())
    }

    pub async fn move_subscription(&mut self, store_id: Uuid, id: Uuid, to_profile: Uuid) -> RepoResult<()> {
        let sql = Sql::new("UPDATE subscriptions SET profile_id = $3 WHERE store_id = $1 AND id = $2")
            .bind(store_id)
            .bind(id)
            .bind(to_profile);
        self.execute(sql).await?;
        Ok(())
    }

    pub async fn delete_subscription(
        &mut self,
        store_id: Uuid,
        audience_id: Uuid,
        profile_id: Uuid,
    ) -> RepoResult<bool> {
        let sql = Sql::new("DELETE FROM subscriptions WHERE store_id = $1 AND audience_id = $2 AND profile_id = $3")
            .bind(store_id)
            .bind(audience_id)
            .bind(profile_id);
        Ok(self.execute(sql).await? > 0)
    }

    /// A new single-use confirmation token; the subscription's older ones stop working.
    pub async fn replace_confirm_token(
        &mut self,
        store_id: Uuid,
        subscription_id: Uuid,
        token_hash: &[u8; 32],
        now: i64,
        expires_at: i64,
    ) -> RepoResult<()> {
        let sql = Sql::new(
            "UPDATE subscription_tokens SET used_at = $3 WHERE store_id = $1 AND subscription_id = $2 AND used_at IS NULL",
        )
        .bind(store_id)
        .bind(subscription_id)
        .bind(now);
        self.execute(sql).await?;
        let sql = Sql::new(
            "INSERT INTO subscription_tokens (store_id, token_hash, subscription_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(store_id)
        .bind(&token_hash[..])
        .bind(subscription_id)
        .bind(now)
        .bind(expires_at);
        self.execute(sql).await?;
        Ok(())
    }

    /// When the subscription's newest confirmation link was made, if it has one.
    pub async fn last_confirmation_at(&mut self, store_id: Uuid, subscription_id: Uuid) -> RepoResult<Option<i64>> {
        let sql = Sql::new(
            "SELECT MAX(created_at) AS at FROM subscription_tokens WHERE store_id = $1 AND subscription_id = $2",
        )
        .bind(store_id)
        .bind(subscription_id);
        Ok(self.fetch_one(sql).await?.opt_int("at")?)
    }

    /// The subscription a token confirms, whatever the token's state.
    pub async fn confirm_token_subscription(
        &mut self,
        store_id: Uuid,
        token_hash: &[u8; 32],
    ) -> RepoResult<Option<Uuid>> {
        let sql = Sql::new("SELECT subscription_id FROM subscription_tokens WHERE store_id = $1 AND token_hash = $2")
            .bind(store_id)
            .bind(&token_hash[..]);
        Ok(self.fetch_optional(sql).await?.map(|r| r.uuid("subscription_id")).transpose()?)
    }

    /// The subscription a live (unused, unexpired) token confirms.
    pub async fn live_confirm_token_subscription(
        &mut self,
        store_id: Uuid,
        token_hash: &[u8; 32],
        now: i64,
    ) -> RepoResult<Option<Uuid>> {
        let sql = Sql::new(
            "SELECT subscription_id FROM subscription_tokens
             WHERE store_id = $1 AND token_hash = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(store_id)
        .bind(&token_hash[..])
        .bind(now);
        Ok(self.fetch_optional(sql).await?.map(|r| r.uuid("subscription_id")).transpose()?)
    }

    /// Uses up a live token; its subscription's id, or `None` for an unknown, used or expired token.
    pub async fn use_confirm_token(
        &mut self,
        store_id: Uuid,
        token_hash: &[u8; 32],
        now: i64,
    ) -> RepoResult<Option<Uuid>> {
        let sql = Sql::new(
            "UPDATE subscription_tokens SET used_at = $3
             WHERE store_id = $1 AND token_hash = $2 AND used_at IS NULL AND expires_at > $3 RETURNING subscription_id",
        )
        .bind(store_id)
        .bind(&token_hash[..])
        .bind(now);
        Ok(self.fetch_optional(sql).await?.map(|r| r.uuid("subscription_id")).transpose()?)
    }

    /// The subscription by id; locked inside a transaction.
    pub async fn subscription_by_id(&mut self, store_id: Uuid, id: Uuid) -> RepoResult<Option<SubscriptionRow>> {
        let sql = Sql::new(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s WHERE s.store_id = $1 AND s.id = $2{}",
            self.for_update()
        ))
        .bind(store_id)
        .bind(id);
        Ok(self.fetch_optional(sql).await?.map(|r| subscription(&r)).transpose()?)
    }

    /// The subscription whose provider subscription id (Stripe's) is this one; locked.
    pub async fn subscription_by_provider_id(&mut self, provider_id: &str) -> RepoResult<Option<SubscriptionRow>> {
        let filter = match self.backend() {
            super::Backend::Postgres => "(s.payment -> 'provider' ->> 'subscription_id') = $1",
            super::Backend::Sqlite => "json_extract(s.payment, '$.provider.subscription_id') = $1",
        };
        let sql =
            Sql::new(format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s WHERE {filter}{}", self.for_update()))
                .bind(provider_id);
        Ok(self.fetch_optional(sql).await?.map(|r| subscription(&r)).transpose()?)
    }

    pub async fn subscribers(
        &mut self,
        store_id: Uuid,
        audience_id: Uuid,
        status: Option<SubscriptionStatus>,
        after: Option<Uuid>,
        limit: u32,
    ) -> RepoResult<Vec<SubscriberRow>> {
        let mut sql = Sql::new(format!(
            "SELECT {SUBSCRIPTION_COLUMNS}, p.email AS email FROM subscriptions s
             JOIN profiles p ON p.store_id = s.store_id AND p.id = s.profile_id
             WHERE s.store_id = "
        ));
        sql.push_bind(store_id).push(" AND s.audience_id = ").push_bind(audience_id);
        if let Some(status) = status {
            sql.push(" AND s.status = ").push_bind(status.as_str());
        }
        if let Some(after) = after {
            sql.push(" AND s.id > ").push_bind(after);
        }
        sql.push(" ORDER BY s.id LIMIT ").push_bind(limit);
        let rows = self.fetch_all(sql).await?;
        Ok(rows
            .iter()
            .map(|r| Ok(SubscriberRow { subscription: subscription(r)?, email: r.opt_text("email")? }))
            .collect::<sqlx::Result<_>>()?)
    }

    /// Records a payment provider's event id; false when it was recorded before (a redelivery).
    pub async fn record_payment_event(&mut self, event_id: &str, kind: &str, now: i64) -> RepoResult<bool> {
        let sql = Sql::new(
            "INSERT INTO payment_events (event_id, type, processed_at) VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event_id)
        .bind(kind)
        .bind(now);
        Ok(self.execute(sql).await? == 1)
    }
}
