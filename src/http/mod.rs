//! HTTP: one module per resource, each with its routes and their OpenAPI description.

pub mod audiences;
pub mod auth;
pub mod consents;
pub mod extract;
pub mod imports;
pub mod mail;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod pages;
pub mod payments;
pub mod profiles;
pub mod segments;
pub mod sessions;
pub mod stores;
pub mod taxonomies;
pub mod templates;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::{Keyset, OriginPattern, request_origin};
use crate::error::{AppError, AppResult};

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "storecrm",
        description = "The CRM of an online store platform. Errors always have the `ErrorBody` shape; \
        every response carries `x-request-id`. Timestamps are Unix seconds; ids are UUIDv7. A request-body field the \
        route does not know is refused (422, `unknown_field`), and so is text containing U+0000 anywhere in the body, \
        path or query (422, `invalid_text`). CORS admits the store's `allowed_origins` on its routes and \
        `CORS_ALLOWED_ORIGINS` everywhere; `*` is never answered. An unverified profile session that reached an \
        existing address by naming it is a *claim*: routes that need proof answer it 403 `verification_required`."
    ),
    components(schemas(
        crate::error::ErrorBody,
        crate::error::FieldError,
        crate::domain::SortField,
        crate::domain::SortDirection,
        crate::domain::Status,
        crate::domain::SubscriptionStatus,
        crate::domain::taxonomy::TaxonomyQuery,
        crate::services::exports::ExportFormat
    ))
)]
struct ApiDoc;

/// All routes with their OpenAPI document, before state and layers.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(ops::router())
        .merge(auth::router())
        .merge(stores::router())
        .merge(taxonomies::router())
        .merge(profiles::router())
        .merge(consents::router())
        .merge(segments::router())
        .merge(imports::router())
        .merge(sessions::router())
        .merge(audiences::router())
        .merge(templates::router())
        .merge(mail::router())
        .merge(webhooks::router())
        .merge(payments::router())
        .split_for_parts()
}

/// The OpenAPI document generated from the code, with the conventions every route shares.
pub fn openapi() -> serde_json::Value {
    with_conventions(api().1)
}

/// The document as the repository keeps it (`docs/openapi.json`): pretty JSON, keys sorted.
pub fn openapi_json() -> String {
    serde_json::to_string_pretty(&openapi()).expect("JSON prints")
}

/// As JSON: the conventions use OpenAPI 3.1 parts that utoipa's types do not model.
fn with_conventions(doc: utoipa::openapi::OpenApi) -> serde_json::Value {
    let mut value = serde_json::to_value(&doc).expect("the document serializes");
    openapi::conventions(&mut value);
    value
}

pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let (routes, openapi) = api();
    let mut openapi = with_conventions(openapi);
    openapi::serve_at(&mut openapi, &state.config.public_base_url);
    let layers = ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::request_context))
        .layer(CatchPanicLayer::new())
        .layer(cors(&state))
        .layer(CompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    routes
        .merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", openapi))
        .fallback(|| async { AppError::NotFound("route") })
        .method_not_allowed_fallback(|| async { StatusCode::METHOD_NOT_ALLOWED })
        .layer(layers)
        .with_state(state)
}

/// CORS (§1): the request's `Origin` is echoed only when it is in `CORS_ALLOWED_ORIGINS` or, on
/// `/v1/stores/{storeId}/...`, in that store's `allowed_origins`; `*` is never sent. Preflights
/// follow the same rule (a refused one gets no `Access-Control-Allow-*` headers).
fn cors(state: &AppState) -> CorsLayer {
    let global: Arc<[OriginPattern]> =
        state.config.cors_allowed_origins.iter().filter_map(|o| OriginPattern::parse(o).ok()).collect();
    let state = state.clone();
    let allowed = AllowOrigin::async_predicate(move |origin: HeaderValue, parts: &Parts| {
        let store_id = path_store(parts.uri.path());
        let (state, global) = (state.clone(), global.clone());
        async move {
            let Some(origin) = origin.to_str().ok().and_then(request_origin) else { return false };
            if global.iter().any(|p| p.matches(&origin)) {
                return true;
            }
            let Some(store_id) = store_id else { return false };
            match state.services.stores.allowed_origins(store_id).await {
                Ok(list) => list.iter().any(|p| p.matches(&origin)),
                Err(e) => {
                    tracing::warn!(error = %e, %store_id, "CORS: cannot read the store's origins");
                    false
                }
            }
        }
    });
    CorsLayer::new()
        .allow_origin(allowed)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("x-request-id")])
        .expose_headers([HeaderName::from_static("x-request-id"), header::RETRY_AFTER])
        .max_age(Duration::from_secs(3600))
}

/// The store of a `/v1/stores/{storeId}/...` path.
fn path_store(path: &str) -> Option<Uuid> {
    let rest = path.strip_prefix("/v1/stores/")?;
    let (id, tail) = rest.split_once('/')?;
    (!tail.is_empty()).then(|| Uuid::parse_str(id).ok()).flatten()
}

/// `limit` and `cursor` of a list route.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1–200, default 50.
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<i64>,
    /// The `cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of a list; `cursor` is null on the last page (except the polled event feed: see there).
#[derive(Serialize, ToSchema)]
pub struct Paged<T: ToSchema> {
    pub items: Vec<T>,
    pub cursor: Option<String>,
}

/// The page a list route asks for, in a list ordered by id.
pub fn keyset(q: &ListQuery, scope: String) -> AppResult<(Keyset, Option<Uuid>)> {
    let keyset = Keyset::parse(q.limit, q.cursor.as_deref(), scope).map_err(AppError::validation)?;
    let after = keyset.after_id().map_err(|e| AppError::validation(vec![e]))?;
    Ok((keyset, after))
}

/// A page of a list ordered by id, as answered.
pub fn id_page<R, T: ToSchema>(
    keyset: &Keyset,
    rows: Vec<R>,
    id: impl Fn(&R) -> Uuid,
    view: impl Fn(R) -> T,
) -> Paged<T> {
    let (rows, cursor) = keyset.page(rows, |r| vec![id(r).to_string().into()]);
    Paged { items: rows.into_iter().map(view).collect(), cursor }
}
