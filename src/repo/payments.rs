//! Payment webhooks: each event id is recorded in the same transaction as the subscription change
//! it causes, so a redelivered event (Stripe retries, replays) changes nothing twice.

use async_trait::async_trait;
use sqlx::types::Json;
use uuid::Uuid;

use super::audiences::{SUBSCRIPTION_COLUMNS, subscription};
use super::{BeginWrite, Db, RepoResult, SqlRepo, SubscriptionRow, on_db};

/// Every handle a webhook event carries for finding its subscription, tried in this order:
/// the provider's subscription id (stored once checkout completed), our subscription id, and
/// (store, audience, profile), which holds even if two racing subscribes swapped ids.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionLookup {
    pub provider_subscription_id: Option<String>,
    pub store_id: Option<Uuid>,
    pub subscription_id: Option<Uuid>,
    pub audience_id: Option<Uuid>,
    pub profile_id: Option<Uuid>,
}

#[derive(Debug, Clone)]
pub struct PaymentEventRecord {
    pub event_id: String,
    pub kind: String,
    pub now: i64,
}

#[derive(Debug)]
pub enum EventOutcome {
    /// Recorded; the subscription after the change, if the event concerned one.
    Applied(Option<Box<SubscriptionRow>>),
    /// Recorded before: nothing done.
    Duplicate,
    /// No subscription matches. Nothing is recorded, so a redelivery after a fix still applies.
    UnknownSubscription,
}

/// The next state of a subscription given its current one; `None` keeps it as it is.
pub type Transition<'a> = &'a (dyn Fn(&SubscriptionRow) -> Option<SubscriptionRow> + Send + Sync);

#[async_trait]
pub trait PaymentRepo {
    /// In one transaction: records the event (a replay → `Duplicate`), finds the subscription
    /// (`lookup: None` for events that concern none), locks it and stores `transition`'s result.
    async fn apply_payment_event(
        &self,
        event: &PaymentEventRecord,
        lookup: Option<&SubscriptionLookup>,
        transition: Transition<'_>,
    ) -> RepoResult<EventOutcome>;
}

#[async_trait]
impl PaymentRepo for SqlRepo {
    async fn apply_payment_event(
        &self,
        event: &PaymentEventRecord,
        lookup: Option<&SubscriptionLookup>,
        transition: Transition<'_>,
    ) -> RepoResult<EventOutcome> {
        let by_provider_id = match self.db {
            Db::Postgres(_) => "(s.payment -> 'provider' ->> 'subscription_id') = $1",
            Db::Sqlite(_) => "json_extract(s.payment, '$.provider.subscription_id') = $1",
        };
        let update = format!(
            "UPDATE subscriptions SET status = $3, price_id = $4, payment = $5, start_date = $6, end_date = $7,
               confirmed_at = $8, cancelled_at = $9, updated_at = $10
             WHERE store_id = $1 AND id = $2 RETURNING {}",
            SUBSCRIPTION_COLUMNS.replace("s.", "")
        );
        on_db!(self, p => {
            let lock = p.for_update();
            let select = |filter: &str| {
                sqlx::AssertSqlSafe(format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s WHERE {filter}{lock}"))
            };
            let mut tx = p.begin_write().await?;
            let recorded = sqlx::query(
                "INSERT INTO payment_events (event_id, type, processed_at) VALUES ($1, $2, $3)
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(&event.event_id)
            .bind(&event.kind)
            .bind(event.now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if recorded == 0 {
                return Ok(EventOutcome::Duplicate);
            }
            let Some(l) = lookup else {
                tx.commit().await?;
                return Ok(EventOutcome::Applied(None));
            };
            let mut row = None;
            if let Some(provider_id) = &l.provider_subscription_id {
                row = sqlx::query(select(by_provider_id)).bind(provider_id).fetch_optional(&mut *tx).await?;
            }
            if let (None, Some(store_id), Some(id)) = (&row, l.store_id, l.subscription_id) {
                row = sqlx::query(select("s.store_id = $1 AND s.id = $2"))
                    .bind(store_id)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            }
            if let (None, Some(store_id), Some(audience_id), Some(profile_id)) =
                (&row, l.store_id, l.audience_id, l.profile_id)
            {
                row = sqlx::query(select("s.store_id = $1 AND s.audience_id = $2 AND s.profile_id = $3"))
                    .bind(store_id)
                    .bind(audience_id)
                    .bind(profile_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            }
            let Some(row) = row else { return Ok(EventOutcome::UnknownSubscription) };
            let current = subscription(&row)?;
            let stored = match transition(&current) {
                None => current,
                Some(next) => {
                    let row = sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                        .bind(current.store_id)
                        .bind(current.id)
                        .bind(&next.status)
                        .bind(&next.price_id)
                        .bind(next.payment.as_ref().map(Json))
                        .bind(next.start_date)
                        .bind(next.end_date)
                        .bind(next.confirmed_at)
                        .bind(next.cancelled_at)
                        .bind(next.updated_at)
                        .fetch_one(&mut *tx)
                        .await?;
                    subscription(&row)?
                }
            };
            tx.commit().await?;
            Ok(EventOutcome::Applied(Some(Box::new(stored))))
        })
    }
}
