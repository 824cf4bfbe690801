//! Paid subscribe (§6): the Stripe Checkout Session is created first, under a subscription id
//! chosen in advance, and only then is the `pending` subscription written; a provider failure
//! therefore leaves no row behind, and a row never points at a session that does not exist.

use std::collections::BTreeMap;

use serde_json::json;
use uuid::Uuid;

use crate::domain::audience::Price;
use crate::error::{AppError, AppResult};
use crate::payments::{CheckoutMode, CheckoutRequest, GatewayError, PaymentGateway};
use crate::repo::{AudienceRow, ProfileRow, Repo, SubscriptionRow, Upsert};
use crate::services::audiences::Subscribed;

pub struct PaidSubscribe<'a> {
    pub audience: &'a AudienceRow,
    pub profile: &'a ProfileRow,
    pub price: &'a Price,
    /// The profile's earlier (pending or ended) subscription: its id is kept.
    pub existing: Option<&'a SubscriptionRow>,
    /// `signup` or `admin`.
    pub source: &'static str,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
}

/// The price's Stripe price id; `None` when it is not sold on Stripe.
pub fn stripe_price_id(price: &Price) -> Option<&str> {
    price.providers.iter().find(|p| p.kind == "stripe").map(|p| p.id.as_str())
}

pub async fn start(repo: &dyn Repo, gateway: &dyn PaymentGateway, p: PaidSubscribe<'_>) -> AppResult<Subscribed> {
    let provider_price_id =
        stripe_price_id(p.price).ok_or_else(|| AppError::invalid("price_id", "price_not_on_stripe"))?.to_string();
    let store_id = p.audience.store_id;
    // The upsert keeps an existing row's id, so the session must carry that one.
    let id = p.existing.map(|s| s.id).unwrap_or_else(Uuid::now_v7);
    let metadata = BTreeMap::from([
        ("store_id".to_string(), store_id.to_string()),
        ("audience_id".to_string(), p.audience.id.to_string()),
        ("profile_id".to_string(), p.profile.id.to_string()),
        ("subscription_id".to_string(), id.to_string()),
    ]);
    let request = CheckoutRequest {
        mode: if p.price.is_recurring() { CheckoutMode::Subscription } else { CheckoutMode::Payment },
        provider_price_id: provider_price_id.clone(),
        client_reference_id: id.to_string(),
        metadata,
        customer_email: p.profile.email.clone(),
        success_url: p.success_url.to_string(),
        cancel_url: p.cancel_url.to_string(),
    };
    let session = gateway.create_checkout_session(&request).await.map_err(|e| {
        let timed_out = matches!(e, GatewayError::Timeout);
        tracing::warn!(error = %e, timed_out, %store_id, subscription_id = %id, "Checkout Session not created");
        AppError::BadGateway {
            code: "payment_provider_error",
            message: "the payment provider did not create the checkout; nothing was stored, try again".into(),
        }
    })?;
    let now = crate::now();
    let row = SubscriptionRow {
        store_id,
        id,
        audience_id: p.audience.id,
        profile_id: p.profile.id,
        status: "pending".into(),
        source: p.source.into(),
        price_id: Some(p.price.id.clone()),
        payment: Some(json!({"provider": {
            "type": "stripe",
            "checkout_session_id": session.id,
            "price_id": provider_price_id,
        }})),
        start_date: None,
        end_date: None,
        confirmed_at: None,
        cancelled_at: None,
        created_at: now,
        updated_at: now,
    };
    let stored = repo.upsert_subscription(&Upsert { row, confirm_token: None, mail: None }).await?;
    Ok(Subscribed {
        subscription: stored,
        created: p.existing.is_none(),
        checkout_url: Some(session.url),
        claim: false,
    })
}
