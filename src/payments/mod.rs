//! Payment providers behind one small trait, so services never see Stripe's types and tests can
//! point the real client at a local fake. Only what paid audiences use: Checkout Sessions and
//! webhook signatures.

pub mod event;
pub mod stripe;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutMode {
    /// A recurring price: Stripe creates a subscription.
    Subscription,
    /// A one-time price.
    Payment,
}

/// What a Checkout Session is created with.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub mode: CheckoutMode,
    /// The provider's price id (`price_...`).
    pub provider_price_id: String,
    pub client_reference_id: String,
    /// Put on the session and, in subscription mode, on the subscription Stripe creates from it.
    pub metadata: BTreeMap<String, String>,
    pub customer_email: Option<String>,
    pub success_url: String,
    pub cancel_url: String,
}

#[derive(Debug, Clone)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the payment provider did not answer in time")]
    Timeout,
    /// The provider answered with an error, or something that was not the expected object.
    #[error("the payment provider failed: {0}")]
    Provider(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no webhook secret is configured")]
    NotConfigured,
    #[error("the signature header is missing or malformed, or no signature matches")]
    Invalid,
    #[error("the signed timestamp is outside the tolerance")]
    OutOfTolerance,
}

#[async_trait]
pub trait PaymentGateway: Send + Sync + 'static {
    async fn create_checkout_session(&self, request: &CheckoutRequest) -> Result<CheckoutSession, GatewayError>;
    /// Checks a webhook's signature header against the raw body, at Unix time `now`.
    fn verify_webhook(&self, payload: &[u8], signature: Option<&str>, now: i64) -> Result<(), SignatureError>;
}

/// Stripe when `STRIPE_SECRET_KEY` is set; `None` turns paid audiences off.
pub fn gateway_from_config(config: &Config) -> anyhow::Result<Option<Arc<dyn PaymentGateway>>> {
    let Some(key) = &config.stripe_secret_key else {
        if config.stripe_webhook_secret.is_some() {
            tracing::warn!("STRIPE_WEBHOOK_SECRET is set without STRIPE_SECRET_KEY: payments stay off");
        }
        return Ok(None);
    };
    if config.stripe_webhook_secret.is_none() {
        tracing::warn!(
            "STRIPE_WEBHOOK_SECRET is unset: Stripe webhooks will be refused, paid subscriptions never activate"
        );
    }
    let gateway = stripe::StripeGateway::new(
        key,
        config.stripe_webhook_secret.clone(),
        config.stripe_api_base.as_deref(),
        config.limits.stripe_timeout,
    )?;
    Ok(Some(Arc::new(gateway)))
}

/// How far a webhook's signed timestamp may be from our clock (replay window).
pub const WEBHOOK_TOLERANCE: Duration = Duration::from_secs(5 * 60);
