//! `/v1/stores/{storeId}/email-templates`: the store's mail templates and their previews (§7).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::Status;
use crate::error::{AppResult, ErrorBody};
use crate::http::extract::{Json, Path, Query};
use crate::http::stores::Deleted;
use crate::http::{ListQuery, Paged, id_page, keyset};
use crate::mail::render::Rendered;
use crate::repo::TemplateRow;
use crate::services::auth::AdminAuth;
use crate::services::templates::{CreateTemplate, UpdateTemplate};

#[derive(Serialize, ToSchema)]
pub struct EmailTemplate {
    pub id: Uuid,
    pub store_id: Uuid,
    pub key: String,
    /// One line; placeholders are not HTML-escaped, line breaks are removed.
    pub subject: String,
    /// HTML; placeholders are HTML-escaped (`{{ x|safe }}` opts out).
    pub body: String,
    /// Plain-text part; when null it is derived from the rendered body.
    pub text_body: Option<String>,
    pub from_name: Option<String>,
    pub from_email: Option<String>,
    pub reply_to: Option<String>,
    /// Inbox preview text, sent as a hidden span at the top of the body.
    pub preheader: Option<String>,
    pub status: Status,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<TemplateRow> for EmailTemplate {
    fn from(t: TemplateRow) -> Self {
        Self {
            id: t.id,
            store_id: t.store_id,
            key: t.key,
            subject: t.subject,
            body: t.body,
            text_body: t.text_body,
            from_name: t.from_name,
            from_email: t.from_email,
            reply_to: t.reply_to,
            preheader: t.preheader,
            status: t.status,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The variables of the placeholders.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub vars: Map<String, Value>,
}

/// A placeholder whose variable was not given: it rendered empty.
#[derive(Serialize, ToSchema)]
pub struct PreviewWarning {
    pub variable: String,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct Preview {
    pub subject: String,
    pub html: String,
    pub text: String,
    pub warnings: Vec<PreviewWarning>,
}

impl From<Rendered> for Preview {
    fn from(r: Rendered) -> Self {
        let warnings =
            r.warnings.into_iter().map(|w| PreviewWarning { variable: w.variable, message: w.message }).collect();
        Self { subject: r.subject, html: r.html, text: r.text, warnings }
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_template, list_templates))
        .routes(routes!(get_template, update_template, delete_template))
        .routes(routes!(preview_template))
}

/// Create an email template.
#[utoipa::path(post, path = "/v1/stores/{storeId}/email-templates", tag = "email templates", security(("bearer" = [])),
    params(("storeId" = Uuid, Path)), request_body = CreateTemplate,
    responses((status = 201, body = EmailTemplate), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "key_taken"),
              (status = 422, body = ErrorBody, description = "invalid field, or a part that does not compile (invalid_template)")))]
pub async fn create_template(
    State(state): State<AppState>,
    auth: AdminAuth,
    Json(body): Json<CreateTemplate>,
) -> AppResult<(StatusCode, Json<EmailTemplate>)> {
    let row = state.services.templates.create(auth.store_id, body).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// The store's email templates, oldest first.
#[utoipa::path(get, path = "/v1/stores/{storeId}/email-templates", tag = "email templates", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ListQuery),
    responses((status = 200, body = Paged<EmailTemplate>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_templates(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<ListQuery>,
) -> AppResult<Json<Paged<EmailTemplate>>> {
    let scope = format!("email-templates:{}", auth.store_id);
    let (page, after) = keyset(&q, scope)?;
    let rows = state.services.templates.list(auth.store_id, after, page.fetch()).await?;
    Ok(Json(id_page(&page, rows, |t| t.id, EmailTemplate::from)))
}

/// One email template, by id or by key.
#[utoipa::path(get, path = "/v1/stores/{storeId}/email-templates/{id}", tag = "email templates", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key")),
    responses((status = 200, body = EmailTemplate), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_template(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, String)>,
) -> AppResult<Json<EmailTemplate>> {
    Ok(Json(state.services.templates.get(auth.store_id, &path.1).await?.into()))
}

/// Change an email template.
#[utoipa::path(put, path = "/v1/stores/{storeId}/email-templates/{id}", tag = "email templates", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key")), request_body = UpdateTemplate,
    responses((status = 200, body = EmailTemplate), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "key_taken"), (status = 422, body = ErrorBody)))]
pub async fn update_template(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, String)>,
    Json(body): Json<UpdateTemplate>,
) -> AppResult<Json<EmailTemplate>> {
    Ok(Json(state.services.templates.update(auth.store_id, &path.1, body).await?.into()))
}

/// Delete an email template; audiences that confirmed with it become single opt-in.
#[utoipa::path(delete, path = "/v1/stores/{storeId}/email-templates/{id}", tag = "email templates", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key")),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_template(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, String)>,
) -> AppResult<Json<Deleted>> {
    state.services.templates.delete(auth.store_id, &path.1).await?;
    Ok(Json(Deleted { deleted: true }))
}

/// Render a template with sample variables; variables it uses but that are not given render
/// empty and are listed in `warnings`.
#[utoipa::path(post, path = "/v1/stores/{storeId}/email-templates/{id}/preview", tag = "email templates",
    security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = String, Path, description = "id or key")), request_body = PreviewRequest,
    responses((status = 200, body = Preview), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody, description = "the template failed with these variables (render_failed)")))]
pub async fn preview_template(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, String)>,
    Json(body): Json<PreviewRequest>,
) -> AppResult<Json<Preview>> {
    let vars = Value::Object(body.vars);
    Ok(Json(state.services.templates.preview(auth.store_id, &path.1, &vars).await?.into()))
}
