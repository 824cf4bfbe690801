//! `/v1/stores/{storeId}/imports`: import a customer list (CSV or NDJSON) as a job.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::Keyset;
use crate::error::{AppError, AppResult, ErrorBody, FieldError};
use crate::http::extract::{Json, Path, Query};
use crate::http::{ListQuery, Paged};
use crate::services::auth::AdminAuth;
use crate::services::imports::{ImportFormat, ImportJob, ImportOptions, Mapping, OnExisting, RowError};

/// The largest file an import takes through the API (the CLI reads files of any size).
pub const IMPORT_MAX_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// `csv` or `ndjson`; by default from the Content-Type (`text/csv`, `application/x-ndjson`).
    pub format: Option<ImportFormat>,
    /// Validate and count only; nothing is written.
    pub dry_run: Option<bool>,
    /// `update` (default) or `skip` a row whose email is a profile already.
    pub on_existing: Option<OnExisting>,
    /// CSV only: JSON `{"columns": {"<header>": "email" | "status" | "<taxonomy>.<field>" |
    /// "audience:<key>" | "consent_at" | "consent_source" | "ignore"}}` for headers that are
    /// not already named so.
    pub mapping: Option<String>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(start_import)).routes(routes!(get_import)).routes(routes!(import_errors))
}

fn format_of(q: Option<ImportFormat>, headers: &HeaderMap) -> AppResult<ImportFormat> {
    if let Some(f) = q {
        return Ok(f);
    }
    let ty = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ty.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "text/csv" => Ok(ImportFormat::Csv),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(ImportFormat::Ndjson),
        _ => Err(AppError::UnsupportedMediaType {
            message: "send the file as text/csv or application/x-ndjson (or name it with ?format=)".into(),
        }),
    }
}

/// Start an import: the request body is the file (CSV with a header row, or NDJSON), streamed to
/// the server (at most 512 MiB); the answer is the job (202), which runs on in the background.
/// Poll `GET .../imports/{id}` for its progress and counts. A CSV header or mapping that cannot
/// be read is answered at once (422). Running the same file again is safe: profiles are matched
/// by email, and a subscription is only created where the profile has none.
#[utoipa::path(post, path = "/v1/stores/{storeId}/imports", tag = "imports", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ImportQuery),
    request_body(description = "The file.", content((String = "text/csv"), (String = "application/x-ndjson"))),
    responses((status = 202, body = ImportJob, headers(("location" = String))),
              (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn start_import(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> AppResult<Response> {
    let format = format_of(q.format, &headers)?;
    let mapping = match q.mapping.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        None => Mapping::default(),
        Some(raw) => serde_json::from_str(raw).map_err(|_| AppError::invalid("mapping", "invalid_mapping"))?,
    };
    if format == ImportFormat::Ndjson && !mapping.columns.is_empty() {
        return Err(AppError::validation(vec![FieldError::new("mapping", "csv_only")]));
    }
    let options =
        ImportOptions { on_existing: q.on_existing.unwrap_or_default(), dry_run: q.dry_run.unwrap_or(false), mapping };
    let path = std::env::temp_dir().join(format!("storecrm-import-{}", Uuid::now_v7()));
    if let Err(e) = receive(body, &path).await {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e);
    }
    let job = state.services.imports.start(auth.store_id, format, options, path).await?;
    let location = format!("/v1/stores/{}/imports/{}", job.store_id, job.id);
    let mut response = (StatusCode::ACCEPTED, Json(job)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Streams the request body to a file, refusing more than [`IMPORT_MAX_BYTES`].
async fn receive(mut body: Body, path: &std::path::Path) -> AppResult<()> {
    let mut file = tokio::fs::File::create(path).await.map_err(AppError::internal)?;
    let mut size = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|_| AppError::BadRequest { code: "invalid_body", message: "the body could not be read".into() })?;
        if let Ok(data) = frame.into_data() {
            size += data.len() as u64;
            if size > IMPORT_MAX_BYTES {
                return Err(AppError::PayloadTooLarge { limit: "512 MiB" });
            }
            file.write_all(&data).await.map_err(AppError::internal)?;
        }
    }
    file.flush().await.map_err(AppError::internal)?;
    if size == 0 {
        return Err(AppError::invalid("file", "empty"));
    }
    Ok(())
}

/// An import job: status (`running`, `completed`, `failed`, `interrupted`), progress, counts
/// and the first row errors.
#[utoipa::path(get, path = "/v1/stores/{storeId}/imports/{id}", tag = "imports", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = ImportJob), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_import(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid)>,
) -> AppResult<Json<ImportJob>> {
    Ok(Json(state.services.imports.get(auth.store_id, path.1).await?))
}

/// Every row error of an import (up to 10,000), in row order.
#[utoipa::path(get, path = "/v1/stores/{storeId}/imports/{id}/errors", tag = "imports", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path), ListQuery),
    responses((status = 200, body = Paged<RowError>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn import_errors(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid)>,
    Query(q): Query<ListQuery>,
) -> AppResult<Json<Paged<RowError>>> {
    let scope = format!("import-errors:{}:{}", auth.store_id, path.1);
    let keyset = Keyset::parse(q.limit, q.cursor.as_deref(), scope).map_err(AppError::validation)?;
    let after = match keyset.after.as_deref() {
        None => None,
        Some([Value::Number(row), Value::String(error)]) => row.as_i64().map(|r| (r, error.clone())),
        Some(_) => return Err(AppError::invalid("cursor", "invalid_cursor")),
    };
    let rows = state.services.imports.errors(auth.store_id, path.1, after, keyset.fetch()).await?;
    let (rows, cursor) = keyset.page(rows, |e| vec![Value::from(e.row), Value::from(e.error.clone())]);
    Ok(Json(Paged { items: rows, cursor }))
}
