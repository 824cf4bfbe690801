//! `/v1/stores` and `/v1/stores/{storeId}/api-keys`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::Role;
use crate::error::{AppResult, ErrorBody};
use crate::http::extract::{Json, Path, Query};
use crate::http::{ListQuery, Paged, id_page, keyset};
use crate::repo::{ApiKeyRow, StoreRow};
use crate::services::auth::{AccountAuth, AdminAuth};
use crate::services::stores::UpdateStore;

#[derive(Serialize, ToSchema)]
pub struct Store {
    pub id: Uuid,
    pub name: String,
    pub from_email: Option<String>,
    pub from_name: Option<String>,
    pub allowed_origins: Vec<String>,
    /// The consent ledger keeps full IP addresses (else /24 for IPv4, /48 for IPv6).
    pub consent_full_ip: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<StoreRow> for Store {
    fn from(s: StoreRow) -> Self {
        Self {
            id: s.id,
            name: s.name,
            from_email: s.from_email,
            from_name: s.from_name,
            allowed_origins: s.allowed_origins,
            consent_full_ip: s.consent_full_ip,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A store with the calling account's role in it.
#[derive(Serialize, ToSchema)]
pub struct MemberStore {
    #[serde(flatten)]
    pub store: Store,
    pub role: Role,
}

impl From<(StoreRow, Role)> for MemberStore {
    fn from((store, role): (StoreRow, Role)) -> Self {
        Self { store: store.into(), role }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStore {
    pub name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
}

/// The only time the secret `key` is shown.
#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub key: String,
    pub created_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl From<ApiKeyRow> for ApiKey {
    fn from(k: ApiKeyRow) -> Self {
        Self {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub deleted: bool,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_store, list_stores))
        .routes(routes!(get_store, update_store))
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(revoke_api_key))
}

/// Create a store; the calling account becomes its owner.
#[utoipa::path(post, path = "/v1/stores", tag = "stores", security(("bearer" = [])), request_body = CreateStore,
    responses((status = 201, body = Store), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn create_store(
    State(state): State<AppState>,
    auth: AccountAuth,
    Json(body): Json<CreateStore>,
) -> AppResult<(StatusCode, Json<Store>)> {
    let store = state.services.stores.create(auth.account_id, &body.name).await?;
    Ok((StatusCode::CREATED, Json(store.into())))
}

/// The stores the calling account is a member of.
#[utoipa::path(get, path = "/v1/stores", tag = "stores", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = Paged<MemberStore>), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list_stores(
    State(state): State<AppState>,
    auth: AccountAuth,
    Query(q): Query<ListQuery>,
) -> AppResult<Json<Paged<MemberStore>>> {
    let scope = format!("stores:{}", auth.account_id);
    let (page, after) = keyset(&q, scope)?;
    let rows = state.services.stores.of_account(auth.account_id, after, page.fetch()).await?;
    Ok(Json(id_page(&page, rows, |(s, _)| s.id, MemberStore::from)))
}

/// One store's settings.
#[utoipa::path(get, path = "/v1/stores/{storeId}", tag = "stores", security(("bearer" = [])),
    params(("storeId" = Uuid, Path)),
    responses((status = 200, body = Store), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_store(State(state): State<AppState>, auth: AdminAuth) -> AppResult<Json<Store>> {
    Ok(Json(state.services.stores.get(auth.store_id).await?.into()))
}

/// Change a store's settings.
#[utoipa::path(put, path = "/v1/stores/{storeId}", tag = "stores", security(("bearer" = [])),
    params(("storeId" = Uuid, Path)), request_body = UpdateStore,
    responses((status = 200, body = Store), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn update_store(
    State(state): State<AppState>,
    auth: AdminAuth,
    Json(body): Json<UpdateStore>,
) -> AppResult<Json<Store>> {
    Ok(Json(state.services.stores.update(auth.store_id, body).await?.into()))
}

/// Create an API key. The secret `key` is in this response only; it is stored as a hash.
#[utoipa::path(post, path = "/v1/stores/{storeId}/api-keys", tag = "api keys", security(("bearer" = [])),
    params(("storeId" = Uuid, Path)), request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn create_api_key(
    State(state): State<AppState>,
    auth: AdminAuth,
    Json(body): Json<CreateApiKey>,
) -> AppResult<(StatusCode, Json<CreatedApiKey>)> {
    let created = state.services.stores.create_api_key(auth.store_id, &body.name).await?;
    let k = created.key;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey { id: k.id, name: k.name, prefix: k.prefix, key: created.secret, created_at: k.created_at }),
    ))
}

/// The store's API keys, revoked ones included; no secrets.
#[utoipa::path(get, path = "/v1/stores/{storeId}/api-keys", tag = "api keys", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ListQuery),
    responses((status = 200, body = Paged<ApiKey>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<ListQuery>,
) -> AppResult<Json<Paged<ApiKey>>> {
    let scope = format!("api-keys:{}", auth.store_id);
    let (page, after) = keyset(&q, scope)?;
    let rows = state.services.stores.api_keys(auth.store_id, after, page.fetch()).await?;
    Ok(Json(id_page(&page, rows, |k| k.id, ApiKey::from)))
}

/// Revoke an API key; it is refused from the next request on.
#[utoipa::path(delete, path = "/v1/stores/{storeId}/api-keys/{id}", tag = "api keys", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(ids): Path<(Uuid, Uuid)>,
) -> AppResult<Json<Deleted>> {
    state.services.stores.revoke_api_key(auth.store_id, ids.1).await?;
    Ok(Json(Deleted { deleted: true }))
}
