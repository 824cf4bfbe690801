//! Stripe webhook deliveries for the tests: events shaped like Stripe's, signed here with an HMAC
//! written independently of the server's verifier.

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::{TestApp, read};

pub const SECRET: &str = "whsec_test";

/// `Stripe-Signature` for `payload` at `t`.
pub fn sign(payload: &str, secret: &str, t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{payload}").as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

pub async fn post_raw(app: &TestApp, signature: Option<&str>, payload: String) -> (StatusCode, Value) {
    let mut r =
        app.req(reqwest::Method::POST, "/v1/payments/webhooks/stripe").header("content-type", "application/json");
    if let Some(s) = signature {
        r = r.header("stripe-signature", s);
    }
    read(r.body(payload).send().await.unwrap()).await
}

/// One checkout in flight: our ids and the ones Stripe will have made.
#[derive(Clone, Debug)]
pub struct Paid {
    pub store_id: String,
    pub audience_id: String,
    pub profile_id: String,
    pub subscription_id: String,
    pub checkout_session_id: String,
    pub stripe_subscription: Option<String>,
}

impl Paid {
    pub fn from_subscription(sub: &Value, audience: &Value) -> Self {
        let text = |v: &Value| v.as_str().unwrap_or_else(|| panic!("missing in {sub}")).to_string();
        Self {
            store_id: text(&sub["store_id"]),
            audience_id: text(&audience["id"]),
            profile_id: text(&sub["profile_id"]),
            subscription_id: text(&sub["id"]),
            checkout_session_id: text(&sub["payment"]["provider"]["checkout_session_id"]),
            stripe_subscription: Some("sub_T1".into()),
        }
    }

    fn metadata(&self) -> Value {
        json!({"store_id": self.store_id, "audience_id": self.audience_id, "profile_id": self.profile_id,
               "subscription_id": self.subscription_id})
    }

    /// Delivers `event`, signed now.
    pub async fn send(&self, app: &TestApp, event: &Value) -> (StatusCode, Value) {
        let payload = event.to_string();
        post_raw(app, Some(&sign(&payload, SECRET, storecrm::now())), payload).await
    }
}

pub fn event(id: &str, kind: &str, object: Value) -> Value {
    json!({"id": id, "object": "event", "api_version": "2025-09-30.clover", "created": storecrm::now(),
           "data": {"object": object}, "livemode": false, "pending_webhooks": 1,
           "request": {"id": null, "idempotency_key": null}, "type": kind})
}

pub fn checkout_completed(p: &Paid) -> Value {
    let mode = if p.stripe_subscription.is_some() { "subscription" } else { "payment" };
    json!({"id": p.checkout_session_id, "object": "checkout.session", "mode": mode, "status": "complete",
           "payment_status": "paid", "client_reference_id": p.subscription_id, "customer": "cus_T1",
           "customer_details": {"email": "member@example.com"}, "subscription": p.stripe_subscription,
           "metadata": p.metadata(), "amount_total": 900, "currency": "eur", "livemode": false})
}

/// A Stripe subscription (API 2025+: the period lives on the item).
pub fn updated(p: &Paid, status: &str, cancel_at_period_end: bool, period_end: i64) -> Value {
    json!({"id": p.stripe_subscription, "object": "subscription", "status": status, "customer": "cus_T1",
           "cancel_at_period_end": cancel_at_period_end, "cancel_at": if cancel_at_period_end { json!(period_end) } else { Value::Null },
           "canceled_at": null, "ended_at": null, "metadata": p.metadata(),
           "items": {"object": "list", "data": [{"id": "si_T1", "object": "subscription_item",
               "current_period_start": period_end - 30 * 86_400, "current_period_end": period_end,
               "price": {"id": "price_m", "object": "price", "recurring": {"interval": "month", "interval_count": 1}}}]}})
}

pub fn deleted(p: &Paid) -> Value {
    let now = storecrm::now();
    json!({"id": p.stripe_subscription, "object": "subscription", "status": "canceled", "customer": "cus_T1",
           "cancel_at_period_end": false, "canceled_at": now, "ended_at": now, "metadata": p.metadata(),
           "items": {"object": "list", "data": []}})
}

/// A failed renewal invoice (API 2025+: the subscription under `parent.subscription_details`).
pub fn invoice_failed(p: &Paid, period_end: i64) -> Value {
    json!({"id": "in_T1", "object": "invoice", "status": "open", "customer": "cus_T1", "attempt_count": 1,
           "billing_reason": "subscription_cycle",
           "parent": {"type": "subscription_details", "subscription_details": {"subscription": p.stripe_subscription,
               "metadata": p.metadata()}},
           "lines": {"object": "list", "data": [{"id": "il_T1", "object": "line_item",
               "period": {"start": period_end - 30 * 86_400, "end": period_end}}]},
           "period_start": period_end - 60 * 86_400, "period_end": period_end - 30 * 86_400})
}
