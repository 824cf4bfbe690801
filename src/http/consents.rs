//! `/v1/stores/{storeId}/profiles/{id}/consents`: the consent ledger of a profile.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::{ConsentAction, Keyset, SubscriptionStatus};
use crate::error::{AppError, AppResult, ErrorBody};
use crate::http::extract::{Json, Path, Query};
use crate::http::{ListQuery, Paged};
use crate::repo::ConsentRow;
use crate::services::auth::AdminAuth;

/// One record of the consent ledger: a change of one subscription, as it happened. Records are
/// never changed; a merge moves them to the surviving profile, an erasure deletes them.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct Consent {
    pub id: Uuid,
    pub subscription_id: Uuid,
    pub profile_id: Uuid,
    pub audience_id: Uuid,
    pub action: ConsentAction,
    /// The subscription's status after the change.
    pub status_after: SubscriptionStatus,
    /// When it happened (unix seconds); for an import, when the file says the consent was given.
    pub at: i64,
    /// Where, in words: an import's source column, the Stripe event, the merge.
    pub source: Option<String>,
    /// The caller's address: `203.0.113.0/24` (IPv4) or `2001:db8:1::/48` (IPv6) unless the
    /// store keeps full addresses (`consent_full_ip`).
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The double opt-in mail the subscriber confirmed, or that a subscribe queued.
    pub confirm_mail_id: Option<Uuid>,
    /// SHA-256 (hex) of the wording agreed to: the subscribe's `consent_text`, or the
    /// confirmation mail's text with its one-time link replaced by `{{ confirm_url }}`.
    pub wording_hash: Option<String>,
}

impl From<ConsentRow> for Consent {
    fn from(r: ConsentRow) -> Self {
        Self {
            id: r.id,
            subscription_id: r.subscription_id,
            profile_id: r.profile_id,
            audience_id: r.audience_id,
            action: r.action,
            status_after: r.status_after,
            at: r.at,
            source: r.source,
            ip: r.ip,
            user_agent: r.user_agent,
            confirm_mail_id: r.confirm_mail_id,
            wording_hash: r.wording_hash,
        }
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_consents))
}

/// The profile's consent ledger, oldest record first: every subscribe, confirmation,
/// unsubscribe, admin change, import, payment, merge and expiry of its subscriptions.
#[utoipa::path(get, path = "/v1/stores/{storeId}/profiles/{id}/consents", tag = "profiles", security(("bearer" = [])),
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path), ListQuery),
    responses((status = 200, body = Paged<Consent>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn list_consents(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(path): Path<(Uuid, Uuid)>,
    Query(q): Query<ListQuery>,
) -> AppResult<Json<Paged<Consent>>> {
    let scope = format!("consents:{}:{}", auth.store_id, path.1);
    let keyset = Keyset::parse(q.limit, q.cursor.as_deref(), scope).map_err(AppError::validation)?;
    let rows = state.services.consents.list(auth.store_id, path.1, &keyset).await?;
    let (rows, cursor) = keyset.page(rows, |c| vec![c.id.to_string().into()]);
    Ok(Json(Paged { items: rows.into_iter().map(Consent::from).collect(), cursor }))
}
