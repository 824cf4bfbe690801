//! `/v1/stores/{storeId}/events` and `/v1/stores/{storeId}/webhooks` (CONTRACT §9.1): the event
//! feed, webhook endpoints, their secrets and their delivery log. Admin routes.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::{DeliveryStatus, EndpointStatus, Keyset};
use crate::error::{AppError, AppResult, ErrorBody};
use crate::http::Paged;
use crate::http::extract::{Json, Path, Query};
use crate::http::stores::Deleted;
use crate::repo::{AttemptRow, EndpointRow};
use crate::services::auth::AdminAuth;
use crate::services::events::{CreateWebhook, DeliveryLog, UpdateWebhook};
use crate::views::Event;

/// A webhook endpoint. Its signing secret is shown only by create and rotate-secret.
#[derive(Serialize, ToSchema)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    /// Event types, or `"*"`.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub status: EndpointStatus,
    /// Since when every attempt has failed (none while it delivers); 5 days of it disable it.
    pub failing_since: Option<i64>,
    /// Until then the previous secret signs too (24 h after a rotation).
    pub previous_secret_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<EndpointRow> for Webhook {
    fn from(e: EndpointRow) -> Self {
        let now = crate::now();
        Self {
            id: e.id,
            url: e.url,
            events: e.events,
            description: e.description,
            status: e.status,
            failing_since: e.failing_since,
            previous_secret_until: e.previous_until.filter(|until| *until > now),
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// An endpoint with its signing secret: the only time the secret is shown.
#[derive(Serialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_...`: the key receivers verify `webhook-signature` with.
    pub secret: String,
}

/// One attempt of a delivery.
#[derive(Serialize, ToSchema)]
pub struct DeliveryAttempt {
    pub attempt: i64,
    pub at: i64,
    /// The receiver's answer, when it answered.
    pub status_code: Option<i64>,
    pub duration_ms: i64,
    pub error: Option<String>,
}

impl From<AttemptRow> for DeliveryAttempt {
    fn from(a: AttemptRow) -> Self {
        Self { attempt: a.attempt, at: a.at, status_code: a.status_code, duration_ms: a.duration_ms, error: a.error }
    }
}

/// One event's delivery to the endpoint.
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: crate::domain::EventType,
    /// `pending` (due at `next_attempt_at`), `delivered`, or `failed` after the last retry.
    pub status: DeliveryStatus,
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    /// Oldest first.
    pub attempts: Vec<DeliveryAttempt>,
}

impl From<DeliveryLog> for Delivery {
    fn from((d, attempts): DeliveryLog) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            status: d.status,
            next_attempt_at: d.next_attempt_at,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
            attempts: attempts.into_iter().map(DeliveryAttempt::from).collect(),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Event types: a JSON array (`["profile.created"]`) or comma-separated; all when absent.
    pub types: Option<String>,
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_webhook_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(retry_delivery))
}

/// The store's events, oldest first (keyset; kept `EVENT_RETENTION_SECS`, 30 days). An event
/// appears once it is `EVENT_FEED_DELAY_SECS` old, so a late commit never lands behind a cursor.
/// Unlike other lists, `cursor` is there on the last page too (and an empty page gives back the
/// cursor sent): poll with it to get only newer events; an empty `items` means caught up.
#[utoipa::path(get, path = "/v1/stores/{storeId}/events", tag = "events", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), EventsQuery),
    responses((status = 200, body = Paged<Event>), (status = 422, body = ErrorBody, description = "invalid_types")))]
pub async fn list_events(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<EventsQuery>,
) -> AppResult<Json<Paged<Event>>> {
    let scope = format!("events\n{}\n{}", auth.store_id, q.types.as_deref().unwrap_or_default());
    let keyset = Keyset::parse(q.limit, q.cursor.as_deref(), scope).map_err(AppError::validation)?;
    let rows = state.services.events.feed(auth.store_id, q.types.as_deref(), &keyset).await?;
    let (rows, cursor) = keyset.feed_page(rows, |e| vec![e.id.to_string().into()]);
    Ok(Json(Paged { items: rows.into_iter().map(Event::from).collect(), cursor }))
}

/// Add a webhook endpoint; the answer carries its signing secret, shown this once.
#[utoipa::path(post, path = "/v1/stores/{storeId}/webhooks", tag = "webhooks", security(("bearer" = [])),
    params(("storeId" = Uuid, Path)), request_body = CreateWebhook,
    responses((status = 201, body = WebhookWithSecret),
              (status = 409, body = ErrorBody, description = "too_many_webhooks"),
              (status = 422, body = ErrorBody,
               description = "url: invalid_url, https_required, unresolvable_host, private_address; events: invalid_value")))]
pub async fn create_webhook(
    State(state): State<AppState>,
    auth: AdminAuth,
    Json(body): Json<CreateWebhook>,
) -> AppResult<(StatusCode, Json<WebhookWithSecret>)> {
    let (row, secret) = state.services.events.create(auth.store_id, body).await?;
    Ok((StatusCode::CREATED, Json(WebhookWithSecret { webhook: row.into(), secret })))
}

/// The store's webhook endpoints.
#[utoipa::path(get, path = "/v1/stores/{storeId}/webhooks", tag = "webhooks", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), PageQuery), responses((status = 200, body = Paged<Webhook>)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<PageQuery>,
) -> AppResult<Json<Paged<Webhook>>> {
    let keyset = Keyset::parse(q.limit, q.cursor.as_deref(), format!("webhooks\n{}", auth.store_id))
        .map_err(AppError::validation)?;
    let rows = state.services.events.list(auth.store_id, &keyset).await?;
    let (rows, cursor) = keyset.page(rows, |w| vec![w.id.to_string().into()]);
    Ok(Json(Paged { items: rows.into_iter().map(Webhook::from).collect(), cursor }))
}

/// One webhook endpoint (its secret is not shown again).
#[utoipa::path(get, path = "/v1/stores/{storeId}/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path)), responses((status = 200, body = Webhook)))]
pub async fn get_webhook(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid)>,
) -> AppResult<Json<Webhook>> {
    Ok(Json(state.services.events.get(auth.store_id, path.1).await?.into()))
}

/// Change an endpoint; `status: active` re-enables one disabled after days of failures.
#[utoipa::path(put, path = "/v1/stores/{storeId}/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path)), request_body = UpdateWebhook,
    responses((status = 200, body = Webhook)))]
pub async fn update_webhook(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid)>,
    Json(body): Json<UpdateWebhook>,
) -> AppResult<Json<Webhook>> {
    Ok(Json(state.services.events.update(auth.store_id, path.1, body).await?.into()))
}

/// Remove an endpoint with its deliveries and their log.
#[utoipa::path(delete, path = "/v1/stores/{storeId}/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path)), responses((status = 200, body = Deleted)))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid)>,
) -> AppResult<Json<Deleted>> {
    state.services.events.delete(auth.store_id, path.1).await?;
    Ok(Json(Deleted { deleted: true }))
}

/// A new signing secret, shown this once. The previous one keeps signing for 24 hours: each
/// delivery then carries both signatures in `webhook-signature`, so receivers switch without loss.
#[utoipa::path(post, path = "/v1/stores/{storeId}/webhooks/{id}/rotate-secret", tag = "webhooks",
    security(("bearer" = [])), params(("storeId" = Uuid, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = WebhookWithSecret)))]
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid)>,
) -> AppResult<Json<WebhookWithSecret>> {
    let (row, secret) = state.services.events.rotate_secret(auth.store_id, path.1).await?;
    Ok(Json(WebhookWithSecret { webhook: row.into(), secret }))
}

/// The endpoint's deliveries, newest first, each with its attempts (status code, duration, error).
#[utoipa::path(get, path = "/v1/stores/{storeId}/webhooks/{id}/deliveries", tag = "webhooks",
    security(("bearer" = [])), params(("storeId" = Uuid, Path), ("id" = Uuid, Path), PageQuery),
    responses((status = 200, body = Paged<Delivery>)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid)>,
    Query(q): Query<PageQuery>,
) -> AppResult<Json<Paged<Delivery>>> {
    let scope = format!("deliveries\n{}\n{}", auth.store_id, path.1);
    let keyset = Keyset::parse(q.limit, q.cursor.as_deref(), scope).map_err(AppError::validation)?;
    let rows = state.services.events.deliveries(auth.store_id, path.1, &keyset).await?;
    let (rows, cursor) = keyset.page(rows, |(d, _)| vec![d.id.to_string().into()]);
    Ok(Json(Paged { items: rows.into_iter().map(Delivery::from).collect(), cursor }))
}

/// Send a delivery again now, whatever its status (409 `delivery_in_progress` while an attempt is
/// under way).
#[utoipa::path(post, path = "/v1/stores/{storeId}/webhooks/{id}/deliveries/{deliveryId}/retry", tag = "webhooks",
    security(("bearer" = [])), params(("storeId" = Uuid, Path), ("id" = Uuid, Path), ("deliveryId" = Uuid, Path)),
    responses((status = 200, body = Delivery), (status = 409, body = ErrorBody, description = "delivery_in_progress")))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid, Uuid)>,
) -> AppResult<Json<Delivery>> {
    Ok(Json(state.services.events.retry(auth.store_id, path.1, path.2).await?.into()))
}
