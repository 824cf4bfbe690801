//! Payment webhooks (§8): a verified, once-only event moves a paid subscription through its
//! life. The rules are in [`next_state`], a pure function of the stored row and the event.

use std::sync::Arc;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::domain::{ProviderKind, SubscriptionStatus};
use crate::error::{AppError, AppResult};
use crate::payments::event::{self, EventChange, ProviderEvent, ProviderStatus};
use crate::payments::{PaymentGateway, SignatureError};
use crate::repo::{Database, SubscriptionRow, Tx};
use crate::services::consents::{Consent, ConsentAction};
use crate::services::retrying;

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

#[derive(Debug)]
pub enum EventOutcome {
    /// Recorded; the subscription after the change, if the event concerned one.
    Applied(Option<Box<SubscriptionRow>>),
    /// Recorded before: nothing done.
    Duplicate,
    /// No subscription matches. Nothing is recorded, so a redelivery after a fix still applies.
    UnknownSubscription,
}

/// The subscription an event concerns, locked.
async fn find_subscription(tx: &mut Tx, l: &SubscriptionLookup) -> AppResult<Option<SubscriptionRow>> {
    if let Some(provider_id) = &l.provider_subscription_id
        && let Some(found) = tx.subscription_by_provider_id(provider_id).await?
    {
        return Ok(Some(found));
    }
    if let (Some(store_id), Some(id)) = (l.store_id, l.subscription_id)
        && let Some(found) = tx.subscription_by_id(store_id, id).await?
    {
        return Ok(Some(found));
    }
    if let (Some(store_id), Some(audience_id), Some(profile_id)) = (l.store_id, l.audience_id, l.profile_id) {
        return Ok(tx.subscription(store_id, audience_id, profile_id).await?);
    }
    Ok(None)
}

pub struct Payments {
    db: Database,
    gateway: Option<Arc<dyn PaymentGateway>>,
}

/// What the webhook answers; `duplicate` when the event id was processed before.
pub struct WebhookReceipt {
    pub duplicate: bool,
}

fn bad_request(code: &'static str, message: &str) -> AppError {
    AppError::BadRequest { code, message: message.into() }
}

impl Payments {
    pub fn new(db: Database, gateway: Option<Arc<dyn PaymentGateway>>) -> Self {
        Self { db, gateway }
    }

    /// In one transaction: records the event id (a replay → `Duplicate`), finds and locks the
    /// subscription it concerns and stores the state `next_state` gives.
    async fn apply(&self, event: &ProviderEvent, now: i64) -> AppResult<EventOutcome> {
        let mut tx = self.db.begin().await?;
        if !tx.record_payment_event(&event.id, &event.kind, now).await? {
            return Ok(EventOutcome::Duplicate);
        }
        let Some(change) = &event.change else {
            tx.commit().await?;
            return Ok(EventOutcome::Applied(None));
        };
        let Some(current) = find_subscription(&mut tx, &lookup_of(event)).await? else {
            return Ok(EventOutcome::UnknownSubscription);
        };
        let stored = match next_state(&current, change, event.target.provider_subscription_id.as_deref(), now) {
            None => current,
            Some(next) => {
                let stored = tx.update_subscription(&next).await?;
                let consent = Consent::new(ConsentAction::Payment).source(format!("stripe {}", event.kind));
                crate::services::events::subscription_written(
                    &mut tx,
                    stored.store_id,
                    Some(&current),
                    &stored,
                    &consent,
                )
                .await?;
                stored
            }
        };
        tx.commit().await?;
        Ok(EventOutcome::Applied(Some(Box::new(stored))))
    }

    /// Verifies the signature over the raw body before reading anything, then applies the event once.
    pub async fn stripe_webhook(&self, payload: &[u8], signature: Option<&str>) -> AppResult<WebhookReceipt> {
        let not_configured = || AppError::Unavailable {
            code: "payments_not_configured",
            message: "Stripe webhooks are not configured on this server".into(),
        };
        let gateway = self.gateway.as_deref().ok_or_else(not_configured)?;
        let now = crate::now();
        gateway.verify_webhook(payload, signature, now).map_err(|e| match e {
            SignatureError::NotConfigured => not_configured(),
            SignatureError::Invalid => bad_request("invalid_signature", "the Stripe-Signature header does not match"),
            SignatureError::OutOfTolerance => {
                bad_request("timestamp_out_of_tolerance", "the signed timestamp is more than 5 minutes off")
            }
        })?;
        let json: Value =
            serde_json::from_slice(payload).map_err(|_| bad_request("invalid_json", "the body is not valid JSON"))?;
        let event =
            event::parse(&json).ok_or_else(|| bad_request("invalid_event", "the body is not a Stripe event"))?;
        let outcome = retrying(|| self.apply(&event, now)).await?;
        let (id, kind) = (&event.id, &event.kind);
        let duplicate = matches!(outcome, EventOutcome::Duplicate);
        match outcome {
            EventOutcome::Duplicate => tracing::info!(event_id = %id, event_type = %kind, "webhook event seen before"),
            EventOutcome::UnknownSubscription => {
                tracing::warn!(event_id = %id, event_type = %kind, "webhook event for no known subscription")
            }
            EventOutcome::Applied(None) => tracing::info!(event_id = %id, event_type = %kind, "webhook event ignored"),
            EventOutcome::Applied(Some(s)) => tracing::info!(
                event_id = %id, event_type = %kind, subscription_id = %s.id, status = %s.status, "webhook event applied"
            ),
        }
        Ok(WebhookReceipt { duplicate })
    }
}

fn lookup_of(e: &ProviderEvent) -> SubscriptionLookup {
    SubscriptionLookup {
        provider_subscription_id: e.target.provider_subscription_id.clone(),
        store_id: e.target.store_id,
        subscription_id: e.target.subscription_id,
        audience_id: e.target.audience_id,
        profile_id: e.target.profile_id,
    }
}

/// The subscription after `change`, or `None` when nothing changes.
///
/// - Checkout completed (paid): `pending` → `active`; any later state that a subscription event
///   already set (e.g. `cancellation_scheduled` with its `end_date`) is kept, whatever the order.
/// - Subscription updated: Stripe `active`/`trialing` → `active`, or `cancellation_scheduled` with
///   `end_date` = period end when a cancellation is scheduled; `past_due`/`unpaid`/`paused` →
///   `cancellation_scheduled` until the period end (access is kept while Stripe retries);
///   `canceled` → `cancelled`; `incomplete` changes nothing.
/// - Subscription deleted → `cancelled`. Invoice payment failed → as `past_due`.
/// - An ended (`cancelled`/`expired`) subscription only ever gets ids filled in, and events of
///   another Stripe subscription than the stored one are ignored (a re-subscribe's old leftovers).
pub fn next_state(
    s: &SubscriptionRow,
    change: &EventChange,
    provider_sub: Option<&str>,
    now: i64,
) -> Option<SubscriptionRow> {
    let stored_sub = provider_field(s, "subscription_id");
    if let (Some(stored), Some(event_sub)) = (stored_sub.as_deref(), provider_sub)
        && stored != event_sub
    {
        return None;
    }
    let mut n = s.clone();
    let open = s.status.is_open();
    let ended = s.status.is_ended();
    let activate = |n: &mut SubscriptionRow, status: SubscriptionStatus, end_date: Option<i64>| {
        n.status = status;
        n.end_date = end_date;
        n.start_date = n.start_date.or(Some(now));
        n.confirmed_at = n.confirmed_at.or(Some(now));
    };
    match change {
        EventChange::CheckoutCompleted { session_id, customer_id, paid } => {
            set_provider(&mut n, "checkout_session_id", Some(session_id.as_str()).filter(|s| !s.is_empty()));
            set_provider(&mut n, "customer_id", customer_id.as_deref());
            set_provider(&mut n, "subscription_id", provider_sub);
            if *paid && n.status == SubscriptionStatus::Pending {
                activate(&mut n, SubscriptionStatus::Active, None);
            }
        }
        EventChange::SubscriptionUpdated { customer_id, status, cancel_scheduled, period_end, provider_price_id } => {
            set_provider(&mut n, "customer_id", customer_id.as_deref());
            set_provider(&mut n, "subscription_id", provider_sub);
            set_provider(&mut n, "price_id", provider_price_id.as_deref());
            match status {
                _ if ended => {}
                ProviderStatus::Active if *cancel_scheduled => {
                    activate(&mut n, SubscriptionStatus::CancellationScheduled, *period_end)
                }
                ProviderStatus::Active => activate(&mut n, SubscriptionStatus::Active, None),
                ProviderStatus::Failing if open => {
                    n.status = SubscriptionStatus::CancellationScheduled;
                    n.end_date = earliest(n.end_date, *period_end);
                }
                ProviderStatus::Ended if open => cancel(&mut n, None, now),
                _ => {}
            }
        }
        EventChange::SubscriptionDeleted { ended_at } if open => cancel(&mut n, *ended_at, now),
        EventChange::SubscriptionDeleted { .. } => {}
        EventChange::PaymentFailed { period_end } if open => {
            n.status = SubscriptionStatus::CancellationScheduled;
            n.end_date = earliest(n.end_date, *period_end);
        }
        EventChange::PaymentFailed { .. } => {}
    }
    (n != *s).then_some(SubscriptionRow { updated_at: now, ..n })
}

fn cancel(n: &mut SubscriptionRow, ended_at: Option<i64>, now: i64) {
    n.status = SubscriptionStatus::Cancelled;
    n.cancelled_at = Some(ended_at.unwrap_or(now));
    n.end_date = earliest(n.end_date, Some(ended_at.unwrap_or(now)));
}

fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn provider_field(s: &SubscriptionRow, key: &str) -> Option<String> {
    s.payment.as_ref()?.pointer(&format!("/provider/{key}"))?.as_str().map(str::to_string)
}

/// Fills `payment.provider.<key>`; an absent value keeps what is stored.
fn set_provider(n: &mut SubscriptionRow, key: &str, value: Option<&str>) {
    let Some(value) = value else { return };
    let payment = n.payment.get_or_insert_with(|| json!({}));
    if !payment.get("provider").is_some_and(Value::is_object) {
        *payment = json!({"provider": {"type": ProviderKind::Stripe.as_str()}});
    }
    if let Some(provider) = payment.get_mut("provider").and_then(Value::as_object_mut) {
        provider.insert(key.into(), Value::String(value.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: SubscriptionStatus, payment: Value) -> SubscriptionRow {
        SubscriptionRow {
            store_id: Uuid::nil(),
            id: Uuid::nil(),
            audience_id: Uuid::nil(),
            profile_id: Uuid::nil(),
            status,
            source: crate::domain::SubscriptionSource::Signup,
            price_id: Some("monthly".into()),
            payment: Some(payment),
            start_date: None,
            end_date: None,
            confirmed_at: None,
            cancelled_at: None,
            created_at: 1,
            updated_at: 1,
        }
    }

    fn updated(status: ProviderStatus, cancel_scheduled: bool) -> EventChange {
        EventChange::SubscriptionUpdated {
            customer_id: Some("cus_1".into()),
            status,
            cancel_scheduled,
            period_end: Some(500),
            provider_price_id: None,
        }
    }

    #[test]
    fn events_of_another_stripe_subscription_are_ignored() {
        let s = row(SubscriptionStatus::Active, json!({"provider": {"type": "stripe", "subscription_id": "sub_new"}}));
        assert_eq!(next_state(&s, &EventChange::SubscriptionDeleted { ended_at: Some(9) }, Some("sub_old"), 10), None);
        let gone =
            next_state(&s, &EventChange::SubscriptionDeleted { ended_at: Some(9) }, Some("sub_new"), 10).unwrap();
        assert_eq!((gone.status, gone.cancelled_at, gone.updated_at), (SubscriptionStatus::Cancelled, Some(9), 10));
    }

    #[test]
    fn pending_checkouts_are_not_cancelled_or_failed_by_subscription_leftovers() {
        let s =
            row(SubscriptionStatus::Pending, json!({"provider": {"type": "stripe", "checkout_session_id": "cs_1"}}));
        assert_eq!(next_state(&s, &EventChange::SubscriptionDeleted { ended_at: None }, None, 10), None);
        assert_eq!(next_state(&s, &EventChange::PaymentFailed { period_end: Some(5) }, None, 10), None);
        let past_due = next_state(&s, &updated(ProviderStatus::Failing, false), Some("sub_1"), 10).unwrap();
        assert_eq!(past_due.status, SubscriptionStatus::Pending, "ids recorded, no access granted");
        assert_eq!(past_due.payment.unwrap()["provider"]["subscription_id"], "sub_1");
    }

    #[test]
    fn ended_subscriptions_stay_ended_and_past_due_keeps_the_earlier_end() {
        let ended =
            row(SubscriptionStatus::Cancelled, json!({"provider": {"type": "stripe", "subscription_id": "sub_1"}}));
        let still = next_state(&ended, &updated(ProviderStatus::Active, false), Some("sub_1"), 10).unwrap();
        assert_eq!((still.status, still.start_date), (SubscriptionStatus::Cancelled, None), "only ids are filled in");
        let mut scheduled = row(SubscriptionStatus::CancellationScheduled, json!({"provider": {"type": "stripe"}}));
        scheduled.end_date = Some(300);
        let failing = next_state(&scheduled, &updated(ProviderStatus::Failing, false), Some("sub_1"), 10).unwrap();
        assert_eq!((failing.status, failing.end_date), (SubscriptionStatus::CancellationScheduled, Some(300)));
    }
}
