//! The outermost layer: request id, one log line per request, metrics, and the guarantee that
//! every error response (even a 405 or a timeout produced by the framework) has the JSON shape.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::app::AppState;
use crate::error::{AppError, REQUEST_ID, body_for_status};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

fn incoming_request_id(req: &Request) -> Option<String> {
    let v = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| v.to_string())
}

pub async fn request_context(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = incoming_request_id(&req).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let method = req.method().clone();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let span = tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);

    let response = match nul_in_uri(req.uri()) {
        // Postgres cannot store U+0000 and SQLite would: refused alike, before any handler runs.
        Some(field) => {
            REQUEST_ID
                .scope(request_id.clone(), async { AppError::invalid(field, "invalid_text").into_response() })
                .await
        }
        None => REQUEST_ID.scope(request_id.clone(), next.run(req).instrument(span.clone())).await,
    };
    let mut response = ensure_json_error(response, &request_id);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }

    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.metrics.record(method.as_str(), &route, status, elapsed);
    span.in_scope(|| tracing::info!(status, latency_ms = (elapsed.as_secs_f64() * 10_000.0).round() / 10.0, "served"));
    response
}

/// The part of the URI that decodes to a U+0000: `path`, or the query parameter's name.
fn nul_in_uri(uri: &axum::http::Uri) -> Option<String> {
    let has_nul = |s: &str| s.as_bytes().windows(3).any(|w| w.eq_ignore_ascii_case(b"%00"));
    if has_nul(uri.path()) {
        return Some("path".into());
    }
    let query = uri.query().filter(|q| has_nul(q))?;
    let name = form_urlencoded::parse(query.as_bytes())
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        .map(|(k, _)| k.replace('\0', ""))
        .unwrap_or_else(|| "query".into());
    Some(name)
}

fn ensure_json_error(response: Response, request_id: &str) -> Response {
    let status = response.status();
    // JSON errors, and the pages for people (`pages.rs`), are ours; anything else is the framework's.
    let ours = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || ours {
        return response;
    }
    let body = body_for_status(status, request_id.to_string());
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    Response::from_parts(parts, Body::from(bytes))
}
