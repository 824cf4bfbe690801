//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::error::{AppError, AppResult};
use crate::http::extract::Json;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = Health),
    (status = 503, body = crate::error::ErrorBody, description = "database unreachable")))]
pub async fn readyz(State(state): State<AppState>) -> AppResult<Json<Health>> {
    match state.db.auto().ping().await {
        Ok(()) => Ok(Json(Health { status: "ready" })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(AppError::Unavailable { code: "not_ready", message: "the database is unreachable".into() })
        }
    }
}

/// Prometheus metrics (OpenMetrics text): requests by route and status, their latency, and the
/// mail outbox (deliveries, retries, failures, delivery latency, and the queue's current sizes).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match state.db.auto().mail_queue_sizes().await {
        Ok((queued, failed)) => state.metrics.set_mail_queue(queued, failed),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the outbox's size"),
    }
    // The getMe cache's hits, misses and entries (Postgres), also brought up to date here.
    if let Some((hits, misses, entries)) = state.services.sessions.me_cache_stats() {
        state.metrics.set_me_cache(hits, misses, entries);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.render(),
    )
}
