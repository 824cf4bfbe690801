//! `/v1/stores/{storeId}/audiences`: newsletters, gated content and memberships.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::audience::AudienceType;
use crate::domain::{AccessDenied, AudienceKind, Status, SubscriptionSource, SubscriptionStatus};
use crate::error::{AppError, AppResult, ErrorBody};
use crate::http::Paged;
use crate::http::extract::{Json, MaybeAdmin, Path, Query, StoreCaller, Witness, parse_json};
use crate::http::pages;
use crate::http::stores::Deleted;
use crate::repo::{AudienceRow, SubscriberRow};
use crate::services::audiences::{CreateAudience, SubscribeRequest, Subscriber, UpdateAudience};
use crate::services::auth::{AdminAuth, ProfileToken};
pub use crate::views::Subscription;

#[derive(Serialize, ToSchema)]
pub struct Audience {
    pub id: Uuid,
    pub store_id: Uuid,
    pub key: String,
    pub name: Option<String>,
    pub status: Status,
    #[serde(rename = "type")]
    pub ty: AudienceType,
    pub confirm_template_id: Option<Uuid>,
    /// Active and cancellation-scheduled subscriptions.
    pub subscriber_count: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<AudienceRow> for Audience {
    fn from(a: AudienceRow) -> Self {
        Self {
            id: a.id,
            store_id: a.store_id,
            key: a.key,
            name: a.name,
            status: a.status,
            ty: match a.kind {
                AudienceKind::Paid => AudienceType::Paid { prices: a.prices },
                AudienceKind::Standard => AudienceType::Standard,
            },
            confirm_template_id: a.confirm_template_id,
            subscriber_count: a.subscriber_count,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SubscriberView {
    pub profile_id: Uuid,
    pub email: Option<String>,
    pub status: SubscriptionStatus,
    pub source: SubscriptionSource,
    pub subscribed_at: i64,
}

impl From<SubscriberRow> for SubscriberView {
    fn from(r: SubscriberRow) -> Self {
        Self {
            profile_id: r.subscription.profile_id,
            email: r.email,
            status: r.subscription.status,
            source: r.subscription.source,
            subscribed_at: r.subscription.created_at,
        }
    }
}

/// What a claim (§4: an unverified session that named an existing address) learns of a
/// subscription it asked for: never the stored row or its payment data.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionRef {
    pub id: Uuid,
    pub audience_id: Uuid,
    pub status: SubscriptionStatus,
}

/// The whole subscription for an admin or a session that holds the profile; only its reference
/// for a claim.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum SubscriptionView {
    Full(Subscription),
    Claim(SubscriptionRef),
}

#[derive(Serialize, ToSchema)]
pub struct SubscribeResponse {
    pub subscription: SubscriptionView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout_url: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AccessResponse {
    pub has_access: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<AccessDenied>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSubscriber {
    #[serde(alias = "profileId")]
    pub profile_id: Uuid,
}

#[derive(Serialize, ToSchema)]
pub struct AddSubscriberResponse {
    pub subscriber: SubscriberView,
    /// True when the profile already was an active subscriber.
    pub skipped: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub token: String,
}

#[derive(Serialize, ToSchema)]
pub struct Confirmed {
    pub confirmed: bool,
    pub subscription: Subscription,
}

#[derive(Serialize, ToSchema)]
pub struct Unsubscribed {
    pub unsubscribed: bool,
    pub subscription: Subscription,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindAudiences {
    /// JSON array (`["id1","id2"]`) or comma-separated ids.
    pub ids: Option<String>,
    pub status: Option<Status>,
    /// Substring of the key, case-insensitive.
    pub query: Option<String>,
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubscribersQuery {
    pub status: Option<SubscriptionStatus>,
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The RFC 8058 one-click body a mail client posts (`List-Unsubscribe=One-Click`, the token in
/// the URL), or a form carrying the token.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OneClickForm {
    #[schema(rename = "List-Unsubscribe", example = "One-Click")]
    pub list_unsubscribe: Option<String>,
    pub token: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    pub token: Option<String>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_audience, find_audiences))
        .routes(routes!(get_audience, update_audience))
        .routes(routes!(subscribe))
        .routes(routes!(check_access))
        .routes(routes!(get_subscribers, add_subscriber))
        .routes(routes!(remove_subscriber))
        .routes(routes!(confirm_page, confirm))
        .routes(routes!(unsubscribe_page, unsubscribe))
}

/// Create an audience.
#[utoipa::path(post, path = "/v1/stores/{storeId}/audiences", tag = "audiences", security(("bearer" = [])),
    params(("storeId" = Uuid, Path)), request_body = CreateAudience,
    responses((status = 201, body = Audience), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "key_taken"),
              (status = 422, body = ErrorBody, description = "invalid key, prices or unknown template")))]
pub async fn create_audience(
    State(state): State<AppState>,
    auth: AdminAuth,
    Json(b): Json<CreateAudience>,
) -> AppResult<(StatusCode, Json<Audience>)> {
    Ok((StatusCode::CREATED, Json(state.services.audiences.create(auth.store_id, b).await?.into())))
}

/// Find audiences.
#[utoipa::path(get, path = "/v1/stores/{storeId}/audiences", tag = "audiences", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), FindAudiences),
    responses((status = 200, body = Paged<Audience>), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn find_audiences(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<FindAudiences>,
) -> AppResult<Json<Paged<Audience>>> {
    let (rows, cursor) = state
        .services
        .audiences
        .find(auth.store_id, q.ids.as_deref(), q.status, q.query.as_deref(), q.limit, q.cursor.as_deref())
        .await?;
    Ok(Json(Paged { items: rows.into_iter().map(Audience::from).collect(), cursor }))
}

/// One audience by id or key. Without an admin credential only active audiences are visible.
#[utoipa::path(get, path = "/v1/stores/{storeId}/audiences/{id}", tag = "audiences", security((), ("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key")),
    responses((status = 200, body = Audience), (status = 404, body = ErrorBody)))]
pub async fn get_audience(
    State(state): State<AppState>,
    MaybeAdmin(admin): MaybeAdmin,
    Path(path): Path<(Uuid, String)>,
) -> AppResult<Json<Audience>> {
    let store_id = admin.as_ref().map(|a| a.store_id).unwrap_or(path.0);
    Ok(Json(state.services.audiences.get(store_id, &path.1, admin.is_none()).await?.into()))
}

/// Change an audience; its type cannot change.
#[utoipa::path(put, path = "/v1/stores/{storeId}/audiences/{id}", tag = "audiences", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key")), request_body = UpdateAudience,
    responses((status = 200, body = Audience), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody, description = "type_immutable, ...")))]
pub async fn update_audience(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, String)>,
    Json(b): Json<UpdateAudience>,
) -> AppResult<Json<Audience>> {
    Ok(Json(state.services.audiences.update(auth.store_id, &path.1, b).await?.into()))
}

/// Subscribe a profile (the profile itself, or an admin). Standard audiences activate at once, or
/// go `pending` with a confirmation mail when they have a template; already active answers 200.
/// Paid audiences need `price_id` (the price's id or its Stripe price id), `success_url` and
/// `cancel_url`: a Stripe Checkout Session is created (mode `subscription` for interval prices, else
/// `payment`), then a `pending` subscription is stored and `checkout_url` returned; the Stripe webhook
/// activates it. A Stripe failure or timeout answers 502 and stores nothing.
///
/// `confirm_url`, `success_url` and `cancel_url` must be on one of the store's `allowed_origins`
/// (with none set: `http://localhost[:port]` and `http://127.0.0.1[:port]` only), else 422
/// `origin_not_allowed`. A subscription gets at most one confirmation mail per
/// `CONFIRM_MAIL_INTERVAL_SECS` (a repeat inside it answers the pending subscription and sends
/// nothing), and one address at most `CONFIRM_MAIL_LIMIT_PER_RECIPIENT` a day (then 429). A claim
/// (an unverified session that named an existing address) may subscribe, but is answered only the
/// subscription's `id`, `audience_id` and `status`.
#[utoipa::path(post, path = "/v1/stores/{storeId}/audiences/{id}/subscribe", tag = "audiences", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key")), request_body = SubscribeRequest,
    responses((status = 201, body = SubscribeResponse), (status = 200, body = SubscribeResponse),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "audience_archived"),
              (status = 422, body = ErrorBody, description = "unknown_price, price_not_on_stripe, required, invalid_url, origin_not_allowed"),
              (status = 429, body = ErrorBody, description = "rate_limited: too many confirmation mails to this address today"),
              (status = 502, body = ErrorBody, description = "payment_provider_error: Stripe failed or timed out"),
              (status = 503, body = ErrorBody, description = "payments_not_configured")))]
pub async fn subscribe(
    State(state): State<AppState>,
    caller: StoreCaller,
    Witness(witness): Witness,
    Path(path): Path<(Uuid, String)>,
    Json(b): Json<SubscribeRequest>,
) -> AppResult<(StatusCode, Json<SubscribeResponse>)> {
    let (store_id, who) = match &caller {
        StoreCaller::Admin(a) => (a.store_id, Subscriber::Admin),
        StoreCaller::Profile(p) => (p.store_id, Subscriber::Profile(p)),
    };
    let store = state.services.stores.get(store_id).await?;
    let done = state.services.audiences.subscribe(&store, &path.1, who, b, witness).await?;
    let status = if done.created { StatusCode::CREATED } else { StatusCode::OK };
    let s = done.subscription;
    let subscription = if done.claim {
        SubscriptionView::Claim(SubscriptionRef { id: s.id, audience_id: s.audience_id, status: s.status })
    } else {
        SubscriptionView::Full(s.into())
    };
    Ok((status, Json(SubscribeResponse { subscription, checkout_url: done.checkout_url })))
}

/// Whether the calling profile has access to the audience.
#[utoipa::path(get, path = "/v1/stores/{storeId}/audiences/{id}/access", tag = "audiences", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key")),
    responses((status = 200, body = AccessResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn check_access(
    State(state): State<AppState>,
    token: ProfileToken,
    Path(path): Path<(Uuid, String)>,
) -> AppResult<Json<AccessResponse>> {
    let access = state.services.audiences.check_access(&token, &path.1).await?;
    Ok(Json(AccessResponse {
        has_access: access.has_access,
        subscription: access.subscription.map(Subscription::from),
        reason: access.reason,
    }))
}

/// Subscribers, keyset-paged by subscription.
#[utoipa::path(get, path = "/v1/stores/{storeId}/audiences/{id}/subscribers", tag = "audiences", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key"), SubscribersQuery),
    responses((status = 200, body = Paged<SubscriberView>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn get_subscribers(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, String)>,
    Query(q): Query<SubscribersQuery>,
) -> AppResult<Json<Paged<SubscriberView>>> {
    let (rows, cursor) =
        state.services.audiences.subscribers(auth.store_id, &path.1, q.status, q.limit, q.cursor.as_deref()).await?;
    Ok(Json(Paged { items: rows.into_iter().map(SubscriberView::from).collect(), cursor }))
}

/// Add a profile as an active subscriber (no double opt-in); `skipped` when it already was one.
#[utoipa::path(post, path = "/v1/stores/{storeId}/audiences/{id}/subscribers", tag = "audiences", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key")), request_body = AddSubscriber,
    responses((status = 200, body = AddSubscriberResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn add_subscriber(
    State(state): State<AppState>,
    auth: AdminAuth,
    Witness(witness): Witness,
    Path(path): Path<(Uuid, String)>,
    Json(b): Json<AddSubscriber>,
) -> AppResult<Json<AddSubscriberResponse>> {
    let (row, skipped) = state.services.audiences.add_subscriber(auth.store_id, &path.1, b.profile_id, witness).await?;
    Ok(Json(AddSubscriberResponse { subscriber: row.into(), skipped }))
}

/// Remove a subscriber.
#[utoipa::path(delete, path = "/v1/stores/{storeId}/audiences/{id}/subscribers/{profileId}", tag = "audiences",
    security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key"), ("profileId" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_subscriber(
    State(state): State<AppState>,
    auth: AdminAuth,
    Witness(witness): Witness,
    Path(path): Path<(Uuid, String, Uuid)>,
) -> AppResult<Json<Deleted>> {
    state.services.audiences.remove_subscriber(auth.store_id, &path.1, path.2, witness).await?;
    Ok(Json(Deleted { deleted: true }))
}

/// The hosted confirm page a double opt-in mail links when the subscribe named no `confirm_url`:
/// it names the store and the audience and has one button that POSTs the token. A GET never
/// confirms (mail scanners open links).
#[utoipa::path(get, path = "/v1/stores/{storeId}/audiences/confirm", tag = "audiences",
    params(("storeId" = Uuid, Path), TokenQuery),
    responses((status = 200, description = "the page", content_type = "text/html", body = String),
              (status = 404, description = "the page for an unknown, used or expired link", content_type = "text/html", body = String)))]
pub async fn confirm_page(
    State(state): State<AppState>,
    Path(store_id): Path<Uuid>,
    Query(q): Query<TokenQuery>,
) -> AppResult<Response> {
    let token = q.token.unwrap_or_default();
    let subject = state.services.audiences.confirm_page(store_id, &token).await?;
    Ok(pages::confirm(&format!("/v1/stores/{store_id}/audiences/confirm"), &token, subject))
}

/// Confirm a double opt-in with the single-use token from the mail, as JSON, or as the hosted
/// page's form (then the answer is a page).
#[utoipa::path(post, path = "/v1/stores/{storeId}/audiences/confirm", tag = "audiences",
    params(("storeId" = Uuid, Path)),
    request_body(content((TokenRequest = "application/json"), (TokenRequest = "application/x-www-form-urlencoded"))),
    responses((status = 200, body = Confirmed), (status = 400, body = ErrorBody, description = "invalid_token"),
              (status = 422, body = ErrorBody)))]
pub async fn confirm(
    State(state): State<AppState>,
    Path(store_id): Path<Uuid>,
    Witness(witness): Witness,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Response> {
    let page = pages::wants_page(&headers);
    let token = token_of(&headers, &body, None)?;
    let confirmed = state.services.audiences.confirm(store_id, &token, witness).await;
    if page {
        let subject = match &confirmed {
            Ok(_) => state.services.audiences.page_names(store_id, &confirmed).await?,
            Err(_) => None,
        };
        return Ok(match subject {
            Some((store, audience)) => pages::confirmed(&store, &audience),
            None => pages::invalid_link("confirmation"),
        });
    }
    let subscription = confirmed?;
    Ok(Json(Confirmed { confirmed: true, subscription: subscription.into() }).into_response())
}

/// The hosted unsubscribe page that every mail's `unsubscribe_url` links: one button that POSTs
/// the token. A GET never unsubscribes.
#[utoipa::path(get, path = "/v1/stores/{storeId}/audiences/unsubscribe", tag = "audiences",
    params(("storeId" = Uuid, Path), TokenQuery),
    responses((status = 200, description = "the page", content_type = "text/html", body = String),
              (status = 404, description = "the page for a link that is not valid", content_type = "text/html", body = String)))]
pub async fn unsubscribe_page(
    State(state): State<AppState>,
    Path(store_id): Path<Uuid>,
    Query(q): Query<TokenQuery>,
) -> AppResult<Response> {
    let token = q.token.unwrap_or_default();
    let subject = state.services.audiences.unsubscribe_page(store_id, &token).await?;
    Ok(pages::unsubscribe(&format!("/v1/stores/{store_id}/audiences/unsubscribe"), &token, subject))
}

/// Unsubscribe with the token of a mail's link: in the JSON body, in `?token=`, as the RFC 8058
/// one-click POST (`List-Unsubscribe=One-Click` form body, token in the URL), or as the hosted
/// page's form (then the answer is a page). Idempotent: again, the same answer.
#[utoipa::path(post, path = "/v1/stores/{storeId}/audiences/unsubscribe", tag = "audiences",
    params(("storeId" = Uuid, Path), TokenQuery),
    request_body(description = "The token, unless it is in the query string. Mail clients send the RFC 8058 form.",
        content((TokenRequest = "application/json"), (OneClickForm = "application/x-www-form-urlencoded"))),
    responses((status = 200, body = Unsubscribed), (status = 400, body = ErrorBody, description = "invalid_token"),
              (status = 422, body = ErrorBody)))]
pub async fn unsubscribe(
    State(state): State<AppState>,
    Path(store_id): Path<Uuid>,
    Query(q): Query<TokenQuery>,
    Witness(witness): Witness,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Response> {
    let page = pages::wants_page(&headers);
    let token = token_of(&headers, &body, q.token)?;
    let done = state.services.audiences.unsubscribe(store_id, &token, witness).await;
    if page {
        let subject = match &done {
            Ok(_) => state.services.audiences.page_names(store_id, &done).await?,
            Err(_) => None,
        };
        return Ok(match subject {
            Some((store, audience)) => pages::unsubscribed(&store, &audience),
            None => pages::invalid_link("unsubscribe"),
        });
    }
    let subscription = done?;
    Ok(Json(Unsubscribed { unsubscribed: true, subscription: subscription.into() }).into_response())
}

/// The token from the query, a JSON body or a form body.
fn token_of(headers: &HeaderMap, body: &[u8], query: Option<String>) -> AppResult<String> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let from_body = if content_type.starts_with("application/json") {
        Some(parse_json::<TokenRequest>(body)?.token)
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        form_urlencoded::parse(body).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned())
    } else if body.is_empty() || query.is_some() {
        None
    } else {
        return Err(AppError::UnsupportedMediaType {
            message: "send the token as JSON, as a form, or in ?token=".into(),
        });
    };
    query.or(from_body).filter(|t| !t.trim().is_empty()).ok_or_else(|| AppError::invalid("token", "required"))
}
