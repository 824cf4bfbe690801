//! Stripe webhook events reduced to what memberships need. Parsed from loose JSON on purpose:
//! fields moved between Stripe API versions (`current_period_end` onto subscription items,
//! `invoice.subscription` under `parent.subscription_details`), and either shape must work.

use serde_json::Value;
use uuid::Uuid;

/// Which local subscription an event concerns, by every handle the event carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventTarget {
    /// Stripe's `sub_...`, stored on the subscription once checkout completed.
    pub provider_subscription_id: Option<String>,
    /// From the metadata we put on the Checkout Session (and its subscription).
    pub store_id: Option<Uuid>,
    pub subscription_id: Option<Uuid>,
    pub audience_id: Option<Uuid>,
    pub profile_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventChange {
    /// `checkout.session.completed` / `checkout.session.async_payment_succeeded`.
    CheckoutCompleted {
        session_id: String,
        customer_id: Option<String>,
        /// False while an asynchronous payment method has not settled yet.
        paid: bool,
    },
    /// `customer.subscription.created|updated`.
    SubscriptionUpdated {
        customer_id: Option<String>,
        /// Stripe's subscription status.
        status: ProviderStatus,
        /// `cancel_at_period_end`, or a `cancel_at` date (what newer dashboards set).
        cancel_scheduled: bool,
        /// When access paid for ends: `cancel_at`, else the current period's end.
        period_end: Option<i64>,
        provider_price_id: Option<String>,
    },
    /// `customer.subscription.deleted`.
    SubscriptionDeleted { ended_at: Option<i64> },
    /// `invoice.payment_failed`.
    PaymentFailed { period_end: Option<i64> },
}

/// Stripe's subscription statuses, as far as memberships act on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderStatus {
    /// `active` or `trialing`: access.
    Active,
    /// `past_due`, `unpaid` or `paused`: a renewal failed; access until the period ends.
    Failing,
    /// `canceled` or `incomplete_expired`: ended.
    Ended,
    /// `incomplete` and anything newer: nothing to do yet.
    Other,
}

impl ProviderStatus {
    pub fn parse(stripe: &str) -> Self {
        match stripe {
            "active" | "trialing" => Self::Active,
            "past_due" | "unpaid" | "paused" => Self::Failing,
            "canceled" | "incomplete_expired" => Self::Ended,
            _ => Self::Other,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderEvent {
    pub id: String,
    pub kind: String,
    pub target: EventTarget,
    /// `None` for event types memberships do not act on.
    pub change: Option<EventChange>,
}

/// `None` when the JSON is not an event (no `id` or `type`).
pub fn parse(event: &Value) -> Option<ProviderEvent> {
    let id = event.get("id")?.as_str().filter(|s| !s.is_empty())?.to_string();
    let kind = event.get("type")?.as_str()?.to_string();
    let object = event.pointer("/data/object").unwrap_or(&Value::Null);
    let (target, change) = match kind.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            let mut target = from_metadata(object.get("metadata"));
            target.subscription_id = target.subscription_id.or_else(|| uuid_field(object.get("client_reference_id")));
            target.provider_subscription_id = id_of(object.get("subscription"));
            let paid = kind == "checkout.session.async_payment_succeeded"
                || matches!(str_field(object, "payment_status"), Some("paid" | "no_payment_required"));
            let change = EventChange::CheckoutCompleted {
                session_id: id_of(Some(object)).unwrap_or_default(),
                customer_id: id_of(object.get("customer")),
                paid,
            };
            (target, Some(change))
        }
        "customer.subscription.created" | "customer.subscription.updated" => {
            let mut target = from_metadata(object.get("metadata"));
            target.provider_subscription_id = id_of(Some(object));
            let item = object.pointer("/items/data/0");
            let cancel_at = int_field(object.get("cancel_at"));
            let current_end = int_field(object.get("current_period_end"))
                .or_else(|| item.and_then(|i| int_field(i.get("current_period_end"))));
            let change = EventChange::SubscriptionUpdated {
                customer_id: id_of(object.get("customer")),
                status: ProviderStatus::parse(str_field(object, "status").unwrap_or_default()),
                cancel_scheduled: object.get("cancel_at_period_end").and_then(Value::as_bool).unwrap_or(false)
                    || cancel_at.is_some(),
                period_end: cancel_at.or(current_end),
                provider_price_id: item.and_then(|i| id_of(i.get("price"))),
            };
            (target, Some(change))
        }
        "customer.subscription.deleted" => {
            let mut target = from_metadata(object.get("metadata"));
            target.provider_subscription_id = id_of(Some(object));
            let ended_at = int_field(object.get("ended_at")).or_else(|| int_field(object.get("canceled_at")));
            (target, Some(EventChange::SubscriptionDeleted { ended_at }))
        }
        "invoice.payment_failed" => {
            let details = object.pointer("/parent/subscription_details");
            let mut target = from_metadata(
                details.and_then(|d| d.get("metadata")).or_else(|| object.pointer("/subscription_details/metadata")),
            );
            target.provider_subscription_id =
                id_of(object.get("subscription")).or_else(|| details.and_then(|d| id_of(d.get("subscription"))));
            let period_end = object
                .pointer("/lines/data/0/period/end")
                .and_then(|v| int_field(Some(v)))
                .or_else(|| int_field(object.get("period_end")));
            (target, Some(EventChange::PaymentFailed { period_end }))
        }
        _ => (EventTarget::default(), None),
    };
    Some(ProviderEvent { id, kind, target, change })
}

fn from_metadata(metadata: Option<&Value>) -> EventTarget {
    let get = |key: &str| uuid_field(metadata.and_then(|m| m.get(key)));
    EventTarget {
        provider_subscription_id: None,
        store_id: get("store_id"),
        subscription_id: get("subscription_id"),
        audience_id: get("audience_id"),
        profile_id: get("profile_id"),
    }
}

/// An id field that Stripe sends as a string, or as the object when expanded.
fn id_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn uuid_field(v: Option<&Value>) -> Option<Uuid> {
    v?.as_str().and_then(|s| Uuid::parse_str(s).ok())
}

fn int_field(v: Option<&Value>) -> Option<i64> {
    v?.as_i64()
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn period_end_and_invoice_subscription_in_old_and_new_api_shapes() {
        let old = json!({"id": "evt_1", "type": "customer.subscription.updated", "data": {"object": {
            "id": "sub_1", "object": "subscription", "status": "active", "cancel_at_period_end": true,
            "current_period_end": 1700, "cancel_at": null, "customer": "cus_1"}}});
        let new = json!({"id": "evt_2", "type": "customer.subscription.updated", "data": {"object": {
            "id": "sub_1", "status": "active", "cancel_at_period_end": true, "customer": {"id": "cus_1"},
            "items": {"data": [{"current_period_end": 1700, "price": {"id": "price_m"}}]}}}});
        for e in [old, new] {
            let Some(EventChange::SubscriptionUpdated { period_end, cancel_scheduled, customer_id, .. }) =
                parse(&e).unwrap().change
            else {
                panic!("not an update")
            };
            assert_eq!((period_end, cancel_scheduled, customer_id.as_deref()), (Some(1700), true, Some("cus_1")));
        }
        let invoice = json!({"id": "evt_3", "type": "invoice.payment_failed", "data": {"object": {
            "parent": {"subscription_details": {"subscription": "sub_9", "metadata": {}}},
            "lines": {"data": [{"period": {"start": 1, "end": 2000}}]}}}});
        let parsed = parse(&invoice).unwrap();
        assert_eq!(parsed.target.provider_subscription_id.as_deref(), Some("sub_9"));
        assert_eq!(parsed.change, Some(EventChange::PaymentFailed { period_end: Some(2000) }));
    }

    #[test]
    fn unknown_types_parse_without_change_and_non_events_do_not_parse() {
        let e = parse(&json!({"id": "evt_1", "type": "charge.refunded", "data": {"object": {}}})).unwrap();
        assert_eq!(e.change, None);
        assert!(parse(&json!({"type": "x"})).is_none());
        assert!(parse(&json!([1, 2])).is_none());
    }
}
