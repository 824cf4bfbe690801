//! `/v1/stores/{storeId}/segments`: saved `find` filters, their profiles and counts; and the
//! streaming exports of profiles and of an audience's subscribers.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::{SortDirection, SortField, Status, SubscriptionStatus};
use crate::error::{AppResult, ErrorBody};
use crate::http::extract::{Json, Path, Query};
use crate::http::profiles::Profile;
use crate::http::stores::Deleted;
use crate::http::{ListQuery, Paged, id_page, keyset};
use crate::repo::SegmentRow;
use crate::services::auth::AdminAuth;
use crate::services::exports::{ExportFormat, ExportStream, ProfileFilter};
use crate::services::profiles::FindProfiles;
use crate::services::segments::{CreateSegment, UpdateSegment};

/// Stored `find` filters: its profiles are those that match when asked.
#[derive(Serialize, ToSchema)]
pub struct Segment {
    pub id: Uuid,
    pub store_id: Uuid,
    pub key: String,
    pub name: Option<String>,
    pub query: Option<String>,
    /// JSON-encoded `TaxonomyQuery[]`.
    pub taxonomy_query: Option<String>,
    /// The profiles' status; null: any.
    pub status: Option<Status>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<SegmentRow> for Segment {
    fn from(s: SegmentRow) -> Self {
        Self {
            id: s.id,
            store_id: s.store_id,
            key: s.key,
            name: s.name,
            query: s.query,
            taxonomy_query: s.taxonomy_query,
            status: s.status,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SegmentCount {
    pub segment_id: Uuid,
    /// Profiles the segment matches now.
    pub count: i64,
}

/// A page of a segment's profiles, in `find`'s orders.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SegmentPageQuery {
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub sort_field: Option<SortField>,
    pub sort_direction: Option<SortDirection>,
}

/// Which profiles to export, and how: `find`'s filters, or a segment (not both).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProfileExportQuery {
    /// `ndjson` (default) or `csv`.
    pub format: Option<ExportFormat>,
    pub query: Option<String>,
    /// JSON-encoded `TaxonomyQuery[]`.
    pub taxonomy_query: Option<String>,
    pub status: Option<Status>,
    /// A segment's id or key; its filters are used (422 `conflicts_with_filters` with others).
    pub segment: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubscriberExportQuery {
    /// `ndjson` (default) or `csv`.
    pub format: Option<ExportFormat>,
    pub status: Option<SubscriptionStatus>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_segment, list_segments))
        .routes(routes!(get_segment, update_segment, delete_segment))
        .routes(routes!(segment_profiles))
        .routes(routes!(segment_count))
        .routes(routes!(export_profiles))
        .routes(routes!(export_subscribers))
}

/// Save a segment: `find`'s filters under a key.
#[utoipa::path(post, path = "/v1/stores/{storeId}/segments", tag = "segments", security(("bearer" = [])),
    params(("storeId" = Uuid, Path)), request_body = CreateSegment,
    responses((status = 201, body = Segment), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "key_taken"), (status = 422, body = ErrorBody)))]
pub async fn create_segment(
    State(state): State<AppState>,
    auth: AdminAuth,
    Json(body): Json<CreateSegment>,
) -> AppResult<(StatusCode, Json<Segment>)> {
    let row = state.services.segments.create(auth.store_id, body).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// The store's segments, oldest first.
#[utoipa::path(get, path = "/v1/stores/{storeId}/segments", tag = "segments", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ListQuery),
    responses((status = 200, body = Paged<Segment>), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list_segments(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<ListQuery>,
) -> AppResult<Json<Paged<Segment>>> {
    let (page, _) = keyset(&q, format!("segments:{}", auth.store_id))?;
    let rows = state.services.segments.list(auth.store_id, &page).await?;
    Ok(Json(id_page(&page, rows, |s| s.id, Segment::from)))
}

/// One segment, by id or key.
#[utoipa::path(get, path = "/v1/stores/{storeId}/segments/{id}", tag = "segments", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key")),
    responses((status = 200, body = Segment), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_segment(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, String)>,
) -> AppResult<Json<Segment>> {
    Ok(Json(state.services.segments.get(auth.store_id, &path.1).await?.into()))
}

/// Change a segment; absent fields stay, `null` clears a filter.
#[utoipa::path(put, path = "/v1/stores/{storeId}/segments/{id}", tag = "segments", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key")), request_body = UpdateSegment,
    responses((status = 200, body = Segment), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "key_taken"), (status = 422, body = ErrorBody)))]
pub async fn update_segment(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, String)>,
    Json(body): Json<UpdateSegment>,
) -> AppResult<Json<Segment>> {
    Ok(Json(state.services.segments.update(auth.store_id, &path.1, body).await?.into()))
}

/// Delete a segment (its profiles stay: a segment stores only filters).
#[utoipa::path(delete, path = "/v1/stores/{storeId}/segments/{id}", tag = "segments", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key")),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_segment(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, String)>,
) -> AppResult<Json<Deleted>> {
    state.services.segments.delete(auth.store_id, &path.1).await?;
    Ok(Json(Deleted { deleted: true }))
}

/// The profiles the segment matches now, paged like `find`.
#[utoipa::path(get, path = "/v1/stores/{storeId}/segments/{id}/profiles", tag = "segments", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key"), SegmentPageQuery),
    responses((status = 200, body = Paged<Profile>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn segment_profiles(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, String)>,
    Query(q): Query<SegmentPageQuery>,
) -> AppResult<Json<Paged<Profile>>> {
    let segment = state.services.segments.get(auth.store_id, &path.1).await?;
    let find = FindProfiles {
        query: segment.query,
        taxonomy_query: segment.taxonomy_query,
        status: segment.status,
        limit: q.limit,
        cursor: q.cursor,
        sort_field: q.sort_field,
        sort_direction: q.sort_direction,
    };
    let (rows, cursor) = state.services.profiles.find(auth.store_id, find).await?;
    Ok(Json(Paged { items: rows.into_iter().map(Profile::from).collect(), cursor }))
}

/// How many profiles the segment matches now.
#[utoipa::path(get, path = "/v1/stores/{storeId}/segments/{id}/count", tag = "segments", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key")),
    responses((status = 200, body = SegmentCount), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn segment_count(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, String)>,
) -> AppResult<Json<SegmentCount>> {
    let (segment, count) = state.services.segments.count(auth.store_id, &path.1).await?;
    Ok(Json(SegmentCount { segment_id: segment.id, count }))
}

/// Export profiles, streamed from one snapshot: `find`'s filters or a segment, as NDJSON (one
/// profile per line: id, email, status, verified, taxonomies, created_at, updated_at) or CSV
/// (columns `id,email,status,verified,created_at,updated_at`, then `<taxonomy>.<field>` per
/// field; `docs/data.md`). Oldest profile first.
#[utoipa::path(get, path = "/v1/stores/{storeId}/profiles/export", tag = "profiles", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ProfileExportQuery),
    responses((status = 200, description = "the rows", content((String = "application/x-ndjson"), (String = "text/csv"))),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody, description = "unknown segment"),
              (status = 422, body = ErrorBody)))]
pub async fn export_profiles(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<ProfileExportQuery>,
) -> AppResult<Response> {
    let format = q.format.unwrap_or_default();
    // An empty parameter is no filter (`?segment=` from a form).
    let given = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let filter = ProfileFilter {
        query: given(q.query),
        taxonomy_query: given(q.taxonomy_query),
        status: q.status,
        segment: given(q.segment),
    };
    let stream = state.services.exports.profiles(auth.store_id, filter, format).await?;
    Ok(streamed(stream, format, "profiles"))
}

/// Export an audience's subscribers (all, or those of one status), streamed from one snapshot,
/// as NDJSON or CSV with the columns `profile_id,email,subscription_id,status,source,price_id,
/// start_date,end_date,confirmed_at,cancelled_at,created_at,updated_at`.
#[utoipa::path(get, path = "/v1/stores/{storeId}/audiences/{id}/subscribers/export", tag = "audiences",
    security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key"), SubscriberExportQuery),
    responses((status = 200, description = "the rows", content((String = "application/x-ndjson"), (String = "text/csv"))),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn export_subscribers(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, String)>,
    Query(q): Query<SubscriberExportQuery>,
) -> AppResult<Response> {
    let format = q.format.unwrap_or_default();
    let stream = state.services.exports.subscribers(auth.store_id, &path.1, q.status, format).await?;
    Ok(streamed(stream, format, "subscribers"))
}

/// An export as a streamed download.
fn streamed(stream: ExportStream, format: ExportFormat, name: &str) -> Response {
    let disposition = format!("attachment; filename=\"{name}-{}.{}\"", crate::now(), format.extension());
    let mut response = Body::new(ChannelBody(stream.chunks)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

/// A response body fed by a channel of chunks; an `Err` chunk aborts the response.
struct ChannelBody(mpsc::Receiver<std::io::Result<Bytes>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|r| r.map(http_body::Frame::data)))
    }
}
