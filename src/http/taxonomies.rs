//! `/v1/stores/{storeId}/taxonomies`: typed field definitions for profile entries.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::Status;
use crate::domain::taxonomy::FieldDef;
use crate::error::{AppResult, ErrorBody};
use crate::http::extract::{Json, Path, Query};
use crate::http::stores::Deleted;
use crate::http::{ListQuery, Paged, id_page, keyset};
use crate::repo::TaxonomyRow;
use crate::services::auth::AdminAuth;
use crate::services::taxonomies::{CreateTaxonomy, UpdateTaxonomy};

#[derive(Serialize, ToSchema)]
pub struct Taxonomy {
    pub id: Uuid,
    pub store_id: Uuid,
    pub key: String,
    pub parent_id: Option<Uuid>,
    pub schema: Vec<FieldDef>,
    pub status: Status,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<TaxonomyRow> for Taxonomy {
    fn from(t: TaxonomyRow) -> Self {
        Self {
            id: t.id,
            store_id: t.store_id,
            key: t.key,
            parent_id: t.parent_id,
            schema: t.schema,
            status: t.status,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_taxonomy, list_taxonomies)).routes(routes!(
        get_taxonomy,
        update_taxonomy,
        delete_taxonomy
    ))
}

/// Define a taxonomy.
#[utoipa::path(post, path = "/v1/stores/{storeId}/taxonomies", tag = "taxonomies", security(("bearer" = [])),
    params(("storeId" = Uuid, Path)), request_body = CreateTaxonomy,
    responses((status = 201, body = Taxonomy), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "key_taken"), (status = 422, body = ErrorBody)))]
pub async fn create_taxonomy(
    State(state): State<AppState>,
    auth: AdminAuth,
    Json(body): Json<CreateTaxonomy>,
) -> AppResult<(StatusCode, Json<Taxonomy>)> {
    let row = state.services.taxonomies.create(auth.store_id, body).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// The store's taxonomies, oldest first.
#[utoipa::path(get, path = "/v1/stores/{storeId}/taxonomies", tag = "taxonomies", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ListQuery),
    responses((status = 200, body = Paged<Taxonomy>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_taxonomies(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<ListQuery>,
) -> AppResult<Json<Paged<Taxonomy>>> {
    let scope = format!("taxonomies:{}", auth.store_id);
    let (page, after) = keyset(&q, scope)?;
    let rows = state.services.taxonomies.list(auth.store_id, after, page.fetch()).await?;
    Ok(Json(id_page(&page, rows, |t| t.id, Taxonomy::from)))
}

/// One taxonomy, by id or by key.
#[utoipa::path(get, path = "/v1/stores/{storeId}/taxonomies/{id}", tag = "taxonomies", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key")),
    responses((status = 200, body = Taxonomy), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_taxonomy(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, String)>,
) -> AppResult<Json<Taxonomy>> {
    Ok(Json(state.services.taxonomies.get(auth.store_id, &path.1).await?.into()))
}

/// Change a taxonomy.
#[utoipa::path(put, path = "/v1/stores/{storeId}/taxonomies/{id}", tag = "taxonomies", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key")), request_body = UpdateTaxonomy,
    responses((status = 200, body = Taxonomy), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_taxonomy(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, String)>,
    Json(body): Json<UpdateTaxonomy>,
) -> AppResult<Json<Taxonomy>> {
    Ok(Json(state.services.taxonomies.update(auth.store_id, &path.1, body).await?.into()))
}

/// Delete a taxonomy and every value profiles hold under it.
#[utoipa::path(delete, path = "/v1/stores/{storeId}/taxonomies/{id}", tag = "taxonomies", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key")),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_taxonomy(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, String)>,
) -> AppResult<Json<Deleted>> {
    state.services.taxonomies.delete(auth.store_id, &path.1).await?;
    Ok(Json(Deleted { deleted: true }))
}
