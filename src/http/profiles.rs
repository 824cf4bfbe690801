//! `/v1/stores/{storeId}/profiles`: the admin side of profiles.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::Keyset;
use crate::domain::taxonomy::TaxonomyEntry;
use crate::error::{AppError, AppResult, ErrorBody};
use crate::http::extract::{Json, Path, Query};
use crate::http::stores::Deleted;
use crate::http::{ListQuery, Paged};
use crate::services::auth::AdminAuth;
use crate::services::profiles::{FindProfiles, LinkOrder, UpdateProfile};
pub use crate::views::{AuthTokenInfo, Order, Profile, PromoUsage, VerificationCodeInfo};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProfile {
    pub email: String,
    #[serde(default)]
    pub taxonomies: Vec<TaxonomyEntry>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// The profile merged into the target and then deleted.
    #[serde(alias = "sourceId")]
    pub source_id: Uuid,
}

/// Everything storecrm holds about one profile.
#[derive(Serialize, ToSchema)]
pub struct ProfileExport {
    pub profile: Profile,
    pub orders: Vec<Order>,
    pub subscriptions: Vec<crate::http::audiences::Subscription>,
    /// Live sessions (metadata only).
    pub sessions: Vec<AuthTokenInfo>,
    /// The consent ledger: every change of the profile's subscriptions, oldest first.
    pub consents: Vec<crate::http::consents::Consent>,
    pub exported_at: i64,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_profile, find_profiles))
        .routes(routes!(get_profile, update_profile, erase_profile))
        .routes(routes!(merge_profiles))
        .routes(routes!(export_profile))
        .routes(routes!(link_order, list_orders))
}

/// Create a profile; idempotent on email (201 new, 200 existing).
#[utoipa::path(post, path = "/v1/stores/{storeId}/profiles", tag = "profiles", security(("bearer" = [])),
    params(("storeId" = Uuid, Path)), request_body = CreateProfile,
    responses((status = 201, body = Profile), (status = 200, body = Profile, description = "existing profile"),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_profile(
    State(state): State<AppState>,
    auth: AdminAuth,
    Json(body): Json<CreateProfile>,
) -> AppResult<(StatusCode, Json<Profile>)> {
    let (details, created) = state.services.profiles.create(auth.store_id, &body.email, &body.taxonomies).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(details.into())))
}

/// Search and list profiles with keyset paging.
#[utoipa::path(get, path = "/v1/stores/{storeId}/profiles", tag = "profiles", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), FindProfiles),
    responses((status = 200, body = Paged<Profile>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn find_profiles(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<FindProfiles>,
) -> AppResult<Json<Paged<Profile>>> {
    let (rows, cursor) = state.services.profiles.find(auth.store_id, q).await?;
    Ok(Json(Paged { items: rows.into_iter().map(Profile::from).collect(), cursor }))
}

/// One profile.
#[utoipa::path(get, path = "/v1/stores/{storeId}/profiles/{id}", tag = "profiles", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = Profile), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_profile(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid)>,
) -> AppResult<Json<Profile>> {
    Ok(Json(state.services.profiles.get(auth.store_id, path.1).await?.into()))
}

/// Change a profile's email, taxonomies or status.
#[utoipa::path(put, path = "/v1/stores/{storeId}/profiles/{id}", tag = "profiles", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path)), request_body = UpdateProfile,
    responses((status = 200, body = Profile), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "email_taken"), (status = 422, body = ErrorBody)))]
pub async fn update_profile(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid)>,
    Json(body): Json<UpdateProfile>,
) -> AppResult<Json<Profile>> {
    Ok(Json(state.services.profiles.update(auth.store_id, path.1, body).await?.into()))
}

/// GDPR erasure: the profile and all its personal data are deleted and its sessions end.
#[utoipa::path(delete, path = "/v1/stores/{storeId}/profiles/{id}", tag = "profiles", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn erase_profile(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid)>,
) -> AppResult<Json<Deleted>> {
    state.services.profiles.erase(auth.store_id, path.1).await?;
    Ok(Json(Deleted { deleted: true }))
}

/// Merge `source_id` into this profile (§3.1), in one transaction; the source is deleted.
#[utoipa::path(post, path = "/v1/stores/{storeId}/profiles/{id}/merge", tag = "profiles", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path, description = "the target")), request_body = MergeRequest,
    responses((status = 200, body = Profile), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody, description = "source is the target")))]
pub async fn merge_profiles(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid)>,
    Json(body): Json<MergeRequest>,
) -> AppResult<Json<Profile>> {
    Ok(Json(state.services.profiles.merge(auth.store_id, path.1, body.source_id).await?.into()))
}

/// GDPR export: one JSON document with everything held about the profile.
#[utoipa::path(get, path = "/v1/stores/{storeId}/profiles/{id}/export", tag = "profiles", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = ProfileExport), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn export_profile(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid)>,
) -> AppResult<Json<ProfileExport>> {
    let export = state.services.profiles.export(auth.store_id, path.1).await?;
    let subscriptions = state.services.audiences.of_profile(auth.store_id, path.1).await?;
    let sessions = export.profile.sessions.iter().cloned().map(AuthTokenInfo::from).collect();
    let profile = Profile::from(export.profile);
    Ok(Json(ProfileExport {
        profile,
        orders: export.orders.into_iter().map(Order::from).collect(),
        subscriptions: subscriptions.into_iter().map(Into::into).collect(),
        sessions,
        consents: export.consents.into_iter().map(Into::into).collect(),
        exported_at: crate::now(),
    }))
}

/// Link an order to the profile (201; the same link again answers 200; an order of another profile 409).
#[utoipa::path(post, path = "/v1/stores/{storeId}/profiles/{id}/orders", tag = "profiles", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path)), request_body = LinkOrder,
    responses((status = 201, body = Order), (status = 200, body = Order), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "order_linked_elsewhere"),
              (status = 422, body = ErrorBody)))]
pub async fn link_order(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid)>,
    Json(body): Json<LinkOrder>,
) -> AppResult<(StatusCode, Json<Order>)> {
    let (order, created) = state.services.profiles.link_order(auth.store_id, path.1, body).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(order.into())))
}

/// The profile's linked orders, oldest link first.
#[utoipa::path(get, path = "/v1/stores/{storeId}/profiles/{id}/orders", tag = "profiles", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path), ListQuery),
    responses((status = 200, body = Paged<Order>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_orders(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid)>,
    Query(q): Query<ListQuery>,
) -> AppResult<Json<Paged<Order>>> {
    let scope = format!("orders:{}:{}", auth.store_id, path.1);
    let keyset = Keyset::parse(q.limit, q.cursor.as_deref(), scope).map_err(AppError::validation)?;
    let rows = state.services.profiles.orders(auth.store_id, path.1, &keyset).await?;
    let (rows, cursor) = keyset.page(rows, |o| vec![o.created_at.into(), o.order_id.clone().into()]);
    Ok(Json(Paged { items: rows.into_iter().map(Order::from).collect(), cursor }))
}
