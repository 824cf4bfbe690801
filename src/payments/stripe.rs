//! The Stripe gateway on async-stripe: Checkout Sessions through the client (pointed at
//! `STRIPE_API_BASE` when set, with a per-request timeout), webhook signatures checked locally.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use stripe::{Client, ClientBuilder, StripeError};
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};

use super::{
    CheckoutMode, CheckoutRequest, CheckoutSession, GatewayError, PaymentGateway, SignatureError, WEBHOOK_TOLERANCE,
    webhook,
};
use crate::config::Secret;

pub struct StripeGateway {
    client: Client,
    webhook_secret: Option<Secret>,
}

impl StripeGateway {
    pub fn new(
        secret_key: &Secret,
        webhook_secret: Option<Secret>,
        api_base: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut builder = ClientBuilder::new(secret_key.expose()).timeout(timeout);
        if let Some(base) = api_base {
            // The client appends `v1/...` to the base verbatim.
            builder = builder.url(format!("{}/", base.trim_end_matches('/')));
        }
        let client = builder.build().map_err(|e| anyhow::anyhow!("invalid Stripe configuration: {e}"))?;
        Ok(Self { client, webhook_secret })
    }
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    async fn create_checkout_session(&self, r: &CheckoutRequest) -> Result<CheckoutSession, GatewayError> {
        let metadata: HashMap<String, String> = r.metadata.clone().into_iter().collect();
        let line = CreateCheckoutSessionLineItems {
            price: Some(r.provider_price_id.clone()),
            quantity: Some(1),
            ..CreateCheckoutSessionLineItems::new()
        };
        let mut create = CreateCheckoutSession::new()
            .mode(match r.mode {
                CheckoutMode::Subscription => CheckoutSessionMode::Subscription,
                CheckoutMode::Payment => CheckoutSessionMode::Payment,
            })
            .line_items(vec![line])
            .client_reference_id(r.client_reference_id.clone())
            .metadata(metadata.clone())
            .success_url(r.success_url.clone())
            .cancel_url(r.cancel_url.clone());
        if r.mode == CheckoutMode::Subscription {
            // Stripe copies these onto the subscription, so its own events name our ids even when
            // they arrive before `checkout.session.completed`.
            create = create.subscription_data(CreateCheckoutSessionSubscriptionData {
                metadata: Some(metadata),
                ..CreateCheckoutSessionSubscriptionData::new()
            });
        }
        if let Some(email) = &r.customer_email {
            create = create.customer_email(email.clone());
        }
        let session = create.send(&self.client).await.map_err(gateway_error)?;
        let url = session.url.ok_or_else(|| GatewayError::Provider("the Checkout Session has no url".into()))?;
        Ok(CheckoutSession { id: session.id.to_string(), url })
    }

    fn verify_webhook(&self, payload: &[u8], signature: Option<&str>, now: i64) -> Result<(), SignatureError> {
        let secret = self.webhook_secret.as_ref().ok_or(SignatureError::NotConfigured)?;
        let header = signature.ok_or(SignatureError::Invalid)?;
        webhook::verify(payload, header, secret.expose(), now, WEBHOOK_TOLERANCE.as_secs() as i64)
    }
}

/// Keeps Stripe's status and error type for the log; its free-text message may quote customer data.
fn gateway_error(e: StripeError) -> GatewayError {
    match e {
        StripeError::Timeout => GatewayError::Timeout,
        StripeError::Stripe(api, status) => GatewayError::Provider(format!(
            "status {status}, type {}, code {:?}, param {:?}",
            api.type_.as_str(),
            api.code.as_ref().map(|c| c.as_str()),
            api.param
        )),
        other => GatewayError::Provider(other.to_string()),
    }
}
