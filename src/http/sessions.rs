//! The storefront side of profiles: guest, connect, magic-code login, refresh, me, sessions.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::{AppError, AppResult, ErrorBody};
use crate::http::extract::{ClientIp, Json, MaybeProfile, Path, UserAgent};
use crate::http::profiles::{AuthTokenInfo, Profile};
use crate::http::stores::Deleted;
use crate::http::{Paged, auth::LoggedOut};
use crate::services::auth::{ProfileActor, ProfileAuth, ProfileToken};
use crate::services::sessions::IssuedProfileTokens;

/// A profile session's tokens. `id` is the session id (the `tokenId` of the revoke routes).
#[derive(Serialize, ToSchema)]
pub struct AuthToken {
    pub id: Uuid,
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    pub access_expires_at: i64,
    pub refresh_expires_at: i64,
    pub created_at: i64,
    /// True only for sessions opened with a magic code.
    pub is_verified: bool,
    pub profile_id: Uuid,
}

impl From<IssuedProfileTokens> for AuthToken {
    fn from(t: IssuedProfileTokens) -> Self {
        Self {
            id: t.session.id,
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            token_type: "Bearer",
            access_expires_at: t.access_expires_at,
            refresh_expires_at: t.session.refresh_expires_at,
            created_at: t.session.created_at,
            is_verified: t.session.verified,
            profile_id: t.session.profile_id,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailRequest {
    pub email: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    pub email: String,
    /// The 6-digit code from the mail.
    pub code: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Serialize, ToSchema)]
pub struct CodeSent {
    /// Always true for a valid email, whether or not a profile has it.
    pub sent: bool,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(initialize))
        .routes(routes!(connect))
        .routes(routes!(request_code))
        .routes(routes!(verify))
        .routes(routes!(refresh_token))
        .routes(routes!(logout))
        .routes(routes!(get_me))
        .routes(routes!(list_sessions, revoke_all_tokens))
        .routes(routes!(revoke_token))
}

/// A new anonymous guest profile and its (unverified) session. Limited per client address
/// (`SESSION_LIMIT_PER_ADDRESS`, shared with `connect`).
#[utoipa::path(post, path = "/v1/stores/{storeId}/profiles/initialize", tag = "profile sessions",
    params(("storeId" = Uuid, Path)),
    responses((status = 200, body = AuthToken), (status = 404, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "rate_limited; `retry_after` seconds, also in `Retry-After`")))]
pub async fn initialize(
    State(state): State<AppState>,
    Path(store_id): Path<Uuid>,
    UserAgent(ua): UserAgent,
    ClientIp(client): ClientIp,
) -> AppResult<Json<AuthToken>> {
    Ok(Json(state.services.sessions.initialize(store_id, ua, client).await?.into()))
}

/// An unverified session for the profile with this email. A calling guest without email gets the
/// email (same profile id), or is merged into the profile that already has it. When the email was
/// new, the session holds its profile; when a profile already had it, the session is only a
/// **claim** (an email address is not proof): its `getMe` shows the top-level fields only, it may
/// not list or revoke sessions (403 `verification_required`), and `checkAccess` answers
/// `verification_required` until `verify`. Limited per client address with `initialize`.
#[utoipa::path(post, path = "/v1/stores/{storeId}/profiles/connect", tag = "profile sessions",
    params(("storeId" = Uuid, Path)), request_body = EmailRequest, security((), ("bearer" = [])),
    responses((status = 200, body = AuthToken), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "rate_limited; `retry_after` seconds, also in `Retry-After`")))]
pub async fn connect(
    State(state): State<AppState>,
    Path(store_id): Path<Uuid>,
    MaybeProfile(caller): MaybeProfile,
    UserAgent(ua): UserAgent,
    ClientIp(client): ClientIp,
    Json(body): Json<EmailRequest>,
) -> AppResult<Json<AuthToken>> {
    Ok(Json(state.services.sessions.connect(store_id, &body.email, caller.as_ref(), ua, client).await?.into()))
}

/// Mail a 6-digit sign-in code. The answer is the same for known and unknown emails.
#[utoipa::path(post, path = "/v1/stores/{storeId}/profiles/auth/code", tag = "profile sessions",
    params(("storeId" = Uuid, Path)), request_body = EmailRequest,
    responses((status = 202, body = CodeSent), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "rate_limited; `retry_after` seconds, also in `Retry-After`")))]
pub async fn request_code(
    State(state): State<AppState>,
    Path(store_id): Path<Uuid>,
    ClientIp(ip): ClientIp,
    Json(body): Json<EmailRequest>,
) -> AppResult<(StatusCode, Json<CodeSent>)> {
    state.services.sessions.request_code(store_id, &body.email, ip).await?;
    Ok((StatusCode::ACCEPTED, Json(CodeSent { sent: true })))
}

/// Exchange a code for a verified session; the profile becomes verified.
#[utoipa::path(post, path = "/v1/stores/{storeId}/profiles/auth/verify", tag = "profile sessions",
    params(("storeId" = Uuid, Path)), request_body = VerifyRequest, security((), ("bearer" = [])),
    responses((status = 200, body = AuthToken), (status = 401, body = ErrorBody, description = "invalid_code"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn verify(
    State(state): State<AppState>,
    Path(store_id): Path<Uuid>,
    MaybeProfile(caller): MaybeProfile,
    UserAgent(ua): UserAgent,
    Json(body): Json<VerifyRequest>,
) -> AppResult<Json<AuthToken>> {
    Ok(Json(state.services.sessions.verify(store_id, &body.email, &body.code, caller.as_ref(), ua).await?.into()))
}

/// Exchange a refresh token for a new pair. Single use: the same token presented again within a
/// few seconds (two tabs) is answered with the same successor; later reuse revokes the session.
#[utoipa::path(post, path = "/v1/stores/{storeId}/profiles/auth/refresh", tag = "profile sessions",
    params(("storeId" = Uuid, Path)), request_body = RefreshRequest,
    responses((status = 200, body = AuthToken), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn refresh_token(
    State(state): State<AppState>,
    Path(store_id): Path<Uuid>,
    Json(body): Json<RefreshRequest>,
) -> AppResult<Json<AuthToken>> {
    Ok(Json(state.services.sessions.refresh(store_id, &body.refresh_token).await?.into()))
}

/// Revoke the calling session.
#[utoipa::path(post, path = "/v1/stores/{storeId}/profiles/auth/logout", tag = "profile sessions",
    params(("storeId" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = LoggedOut), (status = 401, body = ErrorBody)))]
pub async fn logout(State(state): State<AppState>, auth: ProfileAuth) -> AppResult<Json<LoggedOut>> {
    state.services.sessions.revoke(auth.store_id, auth.profile_id, auth.session_id).await?;
    Ok(Json(LoggedOut { logged_out: true }))
}

/// The calling profile. A claim (an unverified session that reached an existing address by
/// naming it) sees only the top-level fields, with every collection empty.
#[utoipa::path(get, path = "/v1/stores/{storeId}/profiles/me", tag = "profile sessions",
    params(("storeId" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Profile), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn get_me(State(state): State<AppState>, token: ProfileToken) -> AppResult<Response> {
    let me = state.services.sessions.me(&token).await?;
    let body = match me.rendered.get() {
        Some(body) => body.clone(),
        None => {
            let body = serde_json::to_vec(&Profile::from(me.details.clone()))
                .map_err(|e| AppError::Internal(anyhow::Error::new(e)))?;
            let _ = me.rendered.set(body.clone());
            body
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The profile's live sessions (no secrets). Admin, or the profile itself with proof (a claim is
/// answered 403 `verification_required`).
#[utoipa::path(get, path = "/v1/stores/{storeId}/profiles/{id}/sessions", tag = "profile sessions",
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Paged<AuthTokenInfo>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody, description = "verification_required"), (status = 404, body = ErrorBody)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    actor: ProfileActor,
    Path(path): Path<(Uuid, Uuid)>,
) -> AppResult<Json<Paged<AuthTokenInfo>>> {
    let items =
        state.services.sessions.list(store_of(&actor), path.1).await?.into_iter().map(AuthTokenInfo::from).collect();
    Ok(Json(Paged { items, cursor: None }))
}

/// Log the profile out everywhere. Admin, or the profile itself with proof (a claim is answered
/// 403 `verification_required`).
#[utoipa::path(delete, path = "/v1/stores/{storeId}/profiles/{id}/sessions", tag = "profile sessions",
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody, description = "verification_required"), (status = 404, body = ErrorBody)))]
pub async fn revoke_all_tokens(
    State(state): State<AppState>,
    actor: ProfileActor,
    Path(path): Path<(Uuid, Uuid)>,
) -> AppResult<Json<Deleted>> {
    state.services.sessions.revoke_all(store_of(&actor), path.1).await?;
    Ok(Json(Deleted { deleted: true }))
}

/// Revoke one session; its tokens are refused from the next request on. Admin, or the profile
/// itself with proof (a claim is answered 403 `verification_required`).
#[utoipa::path(delete, path = "/v1/stores/{storeId}/profiles/{id}/sessions/{tokenId}", tag = "profile sessions",
    params(("storeId" = Uuid, Path), ("id" = Uuid, Path), ("tokenId" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody, description = "verification_required"), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    actor: ProfileActor,
    Path(path): Path<(Uuid, Uuid, Uuid)>,
) -> AppResult<Json<Deleted>> {
    state.services.sessions.revoke(store_of(&actor), path.1, path.2).await?;
    Ok(Json(Deleted { deleted: true }))
}

fn store_of(actor: &ProfileActor) -> Uuid {
    match actor {
        ProfileActor::Admin(a) => a.store_id,
        ProfileActor::Itself(p) => p.store_id,
    }
}
