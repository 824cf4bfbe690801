//! Paid subscribe (§6): the Stripe Checkout Session is created first, under a subscription id
//! chosen in advance, and only then is the `pending` subscription written; a provider failure
//! therefore leaves no row behind, and a row never points at a session that does not exist. No
//! transaction is held open across the call to Stripe.

use std::collections::BTreeMap;

use serde_json::json;
use uuid::Uuid;

use crate::domain::audience::Price;
use crate::domain::{ProviderKind, SubscriptionSource, SubscriptionStatus};
use crate::error::{AppError, AppResult};
use crate::payments::{CheckoutMode, CheckoutRequest, GatewayError, PaymentGateway};
use crate::repo::{AudienceRow, Database, SubscriptionRow};
use crate::services::audiences::Subscribed;

pub struct PaidSubscribe<'a> {
    pub audience: &'a AudienceRow,
    pub profile_id: Uuid,
    pub price: &'a Price,
    pub source: SubscriptionSource,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
    /// The ledger's record of the checkout (who started it, with which wording).
    pub consent: crate::services::consents::Consent,
}

pub async fn start(db: &Database, gateway: &dyn PaymentGateway, p: PaidSubscribe<'_>) -> AppResult<Subscribed> {
    let provider_price_id =
        p.price.stripe_price_id().ok_or_else(|| AppError::invalid("price_id", "price_not_on_stripe"))?;
    let store_id = p.audience.store_id;
    let (email, existing) = {
        let mut db = db.auto();
        let profile = db.profile(store_id, p.profile_id).await?.ok_or(AppError::NotFound("profile"))?.profile;
        (profile.email, db.subscription(store_id, p.audience.id, p.profile_id).await?)
    };
    if let Some(s) = existing.as_ref().filter(|s| s.status.is_open()) {
        return Ok(Subscribed { subscription: s.clone(), created: false, checkout_url: None, claim: false });
    }
    // An upsert keeps an existing row's id, so the session must carry that one.
    let id = existing.as_ref().map(|s| s.id).unwrap_or_else(Uuid::now_v7);
    let metadata = BTreeMap::from([
        ("store_id".to_string(), store_id.to_string()),
        ("audience_id".to_string(), p.audience.id.to_string()),
        ("profile_id".to_string(), p.profile_id.to_string()),
        ("subscription_id".to_string(), id.to_string()),
    ]);
    let request = CheckoutRequest {
        mode: if p.price.is_recurring() { CheckoutMode::Subscription } else { CheckoutMode::Payment },
        provider_price_id: provider_price_id.to_string(),
        client_reference_id: id.to_string(),
        metadata,
        customer_email: email,
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
        profile_id: p.profile_id,
        status: SubscriptionStatus::Pending,
        source: p.source,
        price_id: Some(p.price.id.clone()),
        payment: Some(json!({"provider": {
            "type": ProviderKind::Stripe.as_str(),
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
    crate::services::retrying(|| async {
        let mut tx = db.begin().await?;
        tx.lock_profile(store_id, p.profile_id).await?.ok_or(AppError::NotFound("profile"))?;
        // Paid for meanwhile (another tab's checkout): the open subscription stays as it is.
        let current = tx.subscription(store_id, p.audience.id, p.profile_id).await?;
        if let Some(s) = current.as_ref().filter(|s| s.status.is_open()) {
            return Ok(Subscribed { subscription: s.clone(), created: false, checkout_url: None, claim: false });
        }
        let stored = tx.upsert_subscription(&row).await?;
        crate::services::events::subscription_written(&mut tx, store_id, current.as_ref(), &stored, &p.consent).await?;
        tx.commit().await?;
        Ok(Subscribed {
            subscription: stored,
            created: current.is_none(),
            checkout_url: Some(session.url.clone()),
            claim: false,
        })
    })
    .await
}
