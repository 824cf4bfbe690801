//! `/v1/payments/webhooks/stripe`: Stripe's event deliveries.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::error::{AppResult, ErrorBody};
use crate::http::extract::Json;

#[derive(Serialize, ToSchema)]
pub struct WebhookAck {
    pub received: bool,
    /// True when this event id was processed before: nothing was done again.
    pub duplicate: bool,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stripe_webhook))
}

/// Receive a Stripe event. Public, authenticated by the `Stripe-Signature` header (HMAC-SHA256 over
/// `"{t}.{raw body}"` with `STRIPE_WEBHOOK_SECRET`, several `v1` accepted, 5-minute tolerance), checked
/// before the body is read. Each event id is processed once; a redelivery answers `duplicate: true`.
///
/// Effects on the subscription named by the event (its Stripe subscription id, else the ids we put in
/// the Checkout Session's metadata): `checkout.session.completed` → `active` with the Stripe customer
/// and subscription ids in `payment.provider` (a state set by an earlier-arriving subscription event is
/// kept); `customer.subscription.updated` → `cancellation_scheduled` with `end_date` = the period end
/// (`cancel_at`, else `current_period_end`, top-level or on the first item) while a cancellation is
/// scheduled, back to `active` when it is withdrawn; `customer.subscription.deleted` → `cancelled`.
/// `invoice.payment_failed` (and a subscription turning `past_due`/`unpaid`) never removes access at
/// once: the subscription becomes `cancellation_scheduled` with `end_date` = the end of the billing
/// period in question (the invoice line's period end), so access lasts while Stripe retries; a
/// recovered payment (subscription `active` again) returns it to `active`, a final failure ends it
/// through `customer.subscription.deleted`. Other event types are acknowledged and recorded; events
/// for no known subscription are acknowledged (and logged) but not recorded, so a redelivery can apply.
#[utoipa::path(post, path = "/v1/payments/webhooks/stripe", tag = "payments",
    params(("Stripe-Signature" = String, Header, description = "t=<unix>,v1=<hex HMAC-SHA256>[,v1=...]")),
    request_body(content = Object, description = "a Stripe event, verbatim"),
    responses((status = 200, body = WebhookAck),
              (status = 400, body = ErrorBody,
               description = "invalid_signature, timestamp_out_of_tolerance, invalid_json or invalid_event"),
              (status = 503, body = ErrorBody, description = "payments_not_configured")))]
pub async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Json<WebhookAck>> {
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let receipt = state.services.payments.stripe_webhook(&body, signature).await?;
    Ok(Json(WebhookAck { received: true, duplicate: receipt.duplicate }))
}
