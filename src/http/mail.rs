//! `/v1/stores/{storeId}/mail`: the store's outbox, to see what was queued, sent or given up on.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::{Keyset, MailKind, MailStatus};
use crate::error::{AppError, AppResult, ErrorBody};
use crate::http::Paged;
use crate::http::extract::{Json, Path, Query};
use crate::repo::MailSummary;
use crate::services::auth::AdminAuth;

/// A mail of the outbox: never its body; a sign-in code in the subject is masked.
#[derive(Serialize, ToSchema)]
pub struct Mail {
    pub id: Uuid,
    pub kind: MailKind,
    /// The recipient's address.
    pub to: String,
    pub subject: String,
    pub status: MailStatus,
    /// Failed delivery attempts so far.
    pub attempts: i64,
    /// The last failure's answer from the mail server.
    pub last_error: Option<String>,
    pub created_at: i64,
    /// When a queued mail is tried next.
    pub next_attempt_at: Option<i64>,
    pub sent_at: Option<i64>,
    pub failed_at: Option<i64>,
}

impl From<MailSummary> for Mail {
    fn from(m: MailSummary) -> Self {
        Self {
            id: m.id,
            kind: m.kind,
            to: m.to,
            subject: m.subject,
            status: m.status,
            attempts: m.attempts,
            last_error: m.last_error,
            created_at: m.created_at,
            next_attempt_at: m.next_attempt_at,
            sent_at: m.sent_at,
            failed_at: m.failed_at,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MailQuery {
    pub status: Option<MailStatus>,
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_mail)).routes(routes!(retry_mail))
}

/// The store's mail, newest first: queued, sent (a summary, kept `MAIL_KEEP_SENT_SECS`) and
/// failed (given up after `MAIL_MAX_ATTEMPTS`).
#[utoipa::path(get, path = "/v1/stores/{storeId}/mail", tag = "mail", operation_id = "mail_find",
    params(("storeId" = Uuid, Path), MailQuery), security(("bearer" = [])),
    responses((status = 200, body = Paged<Mail>), (status = 422, body = ErrorBody)))]
pub async fn list_mail(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<MailQuery>,
) -> AppResult<Json<Paged<Mail>>> {
    let scope = format!("mail\n{}\n{:?}", auth.store_id, q.status.map(MailStatus::as_str));
    let keyset = Keyset::parse(q.limit, q.cursor.as_deref(), scope).map_err(AppError::validation)?;
    let rows = state.services.outbox.list(Some(auth.store_id), q.status, &keyset).await?;
    let (rows, cursor) = keyset.page(rows, |m| vec![m.id.to_string().into()]);
    Ok(Json(Paged { items: rows.into_iter().map(Mail::from).collect(), cursor }))
}

/// Queue a failed mail again, due now, with its attempts counted afresh.
#[utoipa::path(post, path = "/v1/stores/{storeId}/mail/{id}/retry", tag = "mail", operation_id = "mail_retry",
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Mail), (status = 409, body = ErrorBody, description = "not_failed")))]
pub async fn retry_mail(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid)>,
) -> AppResult<Json<Mail>> {
    Ok(Json(state.services.outbox.retry(Some(auth.store_id), path.1).await?.into()))
}
