//! `/v1/auth/*`: account login, refresh, logout and identity.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::{AppResult, ErrorBody};
use crate::http::extract::{ClientIp, Json, UserAgent};
use crate::http::stores::MemberStore;
use crate::repo::AccountRow;
use crate::services::accounts::IssuedTokens;
use crate::services::auth::AccountAuth;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// An account session's tokens. `id` is the session id.
#[derive(Serialize, ToSchema)]
pub struct AccountToken {
    pub id: Uuid,
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    pub access_expires_at: i64,
    pub refresh_expires_at: i64,
    pub created_at: i64,
    pub account_id: Uuid,
}

impl From<IssuedTokens> for AccountToken {
    fn from(t: IssuedTokens) -> Self {
        Self {
            id: t.session_id,
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            token_type: "Bearer",
            access_expires_at: t.access_expires_at,
            refresh_expires_at: t.refresh_expires_at,
            created_at: t.created_at,
            account_id: t.account_id,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Account {
    pub id: Uuid,
    pub email: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<AccountRow> for Account {
    fn from(a: AccountRow) -> Self {
        Self { id: a.id, email: a.email, created_at: a.created_at, updated_at: a.updated_at }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    pub account: Account,
    /// The stores this account is a member of (the first 200, oldest first).
    pub stores: Vec<MemberStore>,
}

#[derive(Serialize, ToSchema)]
pub struct LoggedOut {
    pub logged_out: bool,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login)).routes(routes!(refresh)).routes(routes!(logout)).routes(routes!(me))
}

/// Log in with email and password. Unknown email and wrong password answer alike. Failures are
/// limited per email and per client address (`LOGIN_LIMIT_*`): past the limit every attempt,
/// right or wrong, answers 429 until the window ends.
#[utoipa::path(post, operation_id = "account_login", path = "/v1/auth/login", tag = "accounts", request_body = LoginRequest, responses(
    (status = 200, body = AccountToken),
    (status = 401, body = ErrorBody, description = "invalid_credentials"),
    (status = 422, body = ErrorBody),
    (status = 429, body = ErrorBody, description = "rate_limited; `retry_after` seconds, also in `Retry-After`")))]
pub async fn login(
    State(state): State<AppState>,
    UserAgent(user_agent): UserAgent,
    ClientIp(client): ClientIp,
    Json(body): Json<LoginRequest>,
) -> AppResult<Json<AccountToken>> {
    let tokens = state.services.accounts.login(&body.email, &body.password, user_agent, client).await?;
    Ok(Json(tokens.into()))
}

/// Exchange a refresh token for a new pair. Each refresh token works once; presenting a used one
/// after a short grace window revokes the session.
#[utoipa::path(post, operation_id = "account_refresh", path = "/v1/auth/refresh", tag = "accounts", request_body = RefreshRequest, responses(
    (status = 200, body = AccountToken),
    (status = 401, body = ErrorBody, description = "invalid_refresh_token or refresh_token_reused"),
    (status = 422, body = ErrorBody)))]
pub async fn refresh(State(state): State<AppState>, Json(body): Json<RefreshRequest>) -> AppResult<Json<AccountToken>> {
    Ok(Json(state.services.accounts.refresh(&body.refresh_token).await?.into()))
}

/// Revoke the calling session; its access and refresh tokens stop working at once.
#[utoipa::path(post, operation_id = "account_logout", path = "/v1/auth/logout", tag = "accounts", security(("bearer" = [])), responses(
    (status = 200, body = LoggedOut),
    (status = 401, body = ErrorBody)))]
pub async fn logout(State(state): State<AppState>, auth: AccountAuth) -> AppResult<Json<LoggedOut>> {
    state.services.accounts.logout(auth.session_id).await?;
    Ok(Json(LoggedOut { logged_out: true }))
}

/// The calling account and its stores.
#[utoipa::path(get, operation_id = "account_me", path = "/v1/auth/me", tag = "accounts", security(("bearer" = [])), responses(
    (status = 200, body = Me),
    (status = 401, body = ErrorBody)))]
pub async fn me(State(state): State<AppState>, auth: AccountAuth) -> AppResult<Json<Me>> {
    let (account, stores) = state.services.accounts.me(auth.account_id).await?;
    Ok(Json(Me { account: account.into(), stores: stores.into_iter().map(MemberStore::from).collect() }))
}
