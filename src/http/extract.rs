//! Extractors whose rejections use the contract's error shape, and the auth extractors.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::error::Category;
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::ClientAddr;
use crate::error::{AppError, FieldError};
use crate::services::auth::{AccountAuth, AdminAuth, ProfileActor, ProfileAuth, ProfileToken};

/// A JSON body (request) or JSON response. Bad syntax → 400, wrong shape → 422 naming the field.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
                mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(AppError::UnsupportedMediaType {
                message: "send a JSON body with content-type: application/json".into(),
            });
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                AppError::PayloadTooLarge { limit: "1 MiB" }
            } else {
                AppError::BadRequest { code: "invalid_body", message: "the request body could not be read".into() }
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Parses JSON, reporting which field is wrong and how. Text holding U+0000 is refused (422
/// `invalid_text`) on both backends: Postgres cannot store it, and no field needs it.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    if has_nul_escape(bytes)
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Some(field) = nul_path(&value, String::new())
    {
        return Err(AppError::invalid(field, "invalid_text"));
    }
    // Every body is an object: serde would also read a struct from an array of its fields.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        return Err(AppError::Validation {
            message: "body: invalid_type (expected an object)".into(),
            errors: vec![FieldError::new("body", "invalid_type")],
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(|e| AppError::BadRequest {
        code: "invalid_json",
        message: format!("the body is not valid JSON: {e}"),
    })?;
    Ok(value)
}

/// Whether the raw JSON holds the escape `\u0000` (raw control characters are invalid JSON anyway).
fn has_nul_escape(bytes: &[u8]) -> bool {
    bytes
        .windows(6)
        .enumerate()
        .any(|(i, w)| w == b"\\u0000" && bytes[..i].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 0)
}

/// The path (`name`, `taxonomies[0].fields[1].value[0]`) of the first string holding U+0000.
fn nul_path(value: &serde_json::Value, path: String) -> Option<String> {
    use serde_json::Value;
    let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    match value {
        Value::String(s) => s.contains('\0').then(|| if path.is_empty() { "body".into() } else { path.clone() }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| nul_path(v, format!("{path}[{i}]"))),
        Value::Object(map) => map
            .iter()
            .find_map(|(k, v)| if k.contains('\0') { Some(join(&k.replace('\0', ""))) } else { nul_path(v, join(k)) }),
        _ => None,
    }
}

fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> AppError {
    let inner = err.inner();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => AppError::BadRequest {
            code: "invalid_json",
            message: format!("the body is not valid JSON (line {}, column {})", inner.line(), inner.column()),
        },
        Category::Data => {
            let text = inner.to_string();
            field_error(&err.path().to_string(), text.split(" at line ").next().unwrap_or(&text))
        }
    }
}

/// A 422 for a body or query value that did not deserialize, in the API's words: the field, a
/// stable code, and what was expected (never the parser's Rust type names).
fn field_error(path: &str, text: &str) -> AppError {
    let (field, error, hint) = describe(path, text);
    let message = match hint {
        Some(hint) => format!("{field}: {error} ({hint})"),
        None => format!("{field}: {error}"),
    };
    AppError::Validation { message, errors: vec![FieldError::new(field, error)] }
}

/// What a Rust type name in a serde message means on the wire.
fn wire_type(expected: &str) -> &'static str {
    let e = expected.trim();
    if e.starts_with("u8") || e.starts_with("u16") || e.starts_with("u32") || e.starts_with("u64") {
        "a whole number of 0 or more"
    } else if e.starts_with('i') && e[1..].chars().all(|c| c.is_ascii_digit()) {
        "a whole number"
    } else if e.starts_with("f32") || e.starts_with("f64") {
        "a number"
    } else if e.contains("UUID") || e.contains("uuid") {
        "a UUID"
    } else if e.contains("bool") {
        "true or false"
    } else if e.contains("sequence") || e.starts_with("a list") || e.contains("array") {
        "an array"
    } else if e.starts_with("struct") || e.contains("map") || e.starts_with("enum") {
        "an object"
    } else if e.contains("string") {
        "a string"
    } else {
        "another type"
    }
}

fn describe(path: &str, text: &str) -> (String, &'static str, Option<String>) {
    let join = |name: &str| if path == "." || path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
    let after = |prefix: &str| text.split_once(prefix).map(|(_, rest)| rest.to_string());
    if let Some(rest) = text.strip_prefix("missing field `") {
        return (join(rest.split('`').next().unwrap_or_default()), "required", None);
    }
    if let Some(rest) = text.strip_prefix("unknown field `") {
        // The path already ends at the unknown key (it was being read when the error came).
        let name = rest.split('`').next().unwrap_or_default();
        let field = if path == name || path.ends_with(&format!(".{name}")) { path.to_string() } else { join(name) };
        let accepted = after(", expected ").map(|e| format!("accepted: {}", e.replace("one of ", "")));
        return (field, "unknown_field", accepted);
    }
    let field = if path == "." || path.is_empty() { "body".to_string() } else { path.to_string() };
    if text.starts_with("unknown variant") {
        let accepted = after(", expected ").map(|e| format!("accepted: {}", e.replace("one of ", "")));
        return (field, "invalid_value", accepted);
    }
    if text.starts_with("invalid type") {
        let expected = after(", expected ").map(|e| format!("expected {}", wire_type(&e)));
        return (field, "invalid_type", expected);
    }
    if text.contains("UUID parsing failed") || text.contains("invalid character") || text.contains("invalid group") {
        return (field, "invalid_value", Some("expected a UUID".into()));
    }
    if text.contains("invalid digit") || text.contains("number too large") || text.contains("cannot parse integer") {
        return (field, "invalid_type", Some("expected a whole number".into()));
    }
    if text.contains("invalid float literal") {
        return (field, "invalid_type", Some("expected a number".into()));
    }
    if text.starts_with("invalid length") {
        return (field, "invalid_length", after(", expected ").map(|e| format!("expected {e}")));
    }
    // A domain type refusing a value says why in one snake_case word (`invalid_email`...).
    let word = text.trim();
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        return (field, "invalid_value", Some(word.to_string()));
    }
    (field, "invalid_value", None)
}

/// Path parameters; a value that cannot be parsed (a malformed id) names nothing that exists: 404.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|_| AppError::NotFound("resource"))
    }
}

/// Query parameters; malformed ones → 422.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|err| field_error(&err.path().to_string(), &err.inner().to_string()))
    }
}

/// The bearer credential of the request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn require_bearer(parts: &Parts) -> Result<&str, AppError> {
    bearer(parts).ok_or_else(|| AppError::unauthorized("send Authorization: Bearer <token>"))
}

/// The `User-Agent` header, for session listings.
pub struct UserAgent(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for UserAgent {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(UserAgent(parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string)))
    }
}

impl FromRequestParts<AppState> for AccountAuth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = require_bearer(parts)?;
        state.services.auth.account(token).await
    }
}

/// A UUID path parameter by name; malformed or missing → 404 (`what` names the resource).
async fn path_uuid(parts: &mut Parts, state: &AppState, name: &str, what: &'static str) -> Result<Uuid, AppError> {
    let params = RawPathParams::from_request_parts(parts, state).await.map_err(|_| AppError::NotFound(what))?;
    params.iter().find(|(k, _)| *k == name).and_then(|(_, v)| Uuid::parse_str(v).ok()).ok_or(AppError::NotFound(what))
}

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = require_bearer(parts)?.to_string();
        let params = RawPathParams::from_request_parts(parts, state).await.map_err(|_| AppError::NotFound("store"))?;
        let store_id = params
            .iter()
            .find(|(k, _)| *k == "storeId")
            .and_then(|(_, v)| Uuid::parse_str(v).ok())
            .ok_or(AppError::NotFound("store"))?;
        state.services.auth.admin(store_id, &token).await
    }
}

impl FromRequestParts<AppState> for ProfileAuth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = require_bearer(parts)?.to_string();
        let store_id = path_uuid(parts, state, "storeId", "store").await?;
        state.services.auth.profile(store_id, &token).await
    }
}

/// A profile token without the session check: the handler's own query must make it.
impl FromRequestParts<AppState> for ProfileToken {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = require_bearer(parts)?.to_string();
        let store_id = path_uuid(parts, state, "storeId", "store").await?;
        state.services.auth.profile_token(store_id, &token)
    }
}

/// An optional profile bearer (connect, verify): absent is fine, present must be valid.
pub struct MaybeProfile(pub Option<ProfileAuth>);

impl FromRequestParts<AppState> for MaybeProfile {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if parts.headers.get(AUTHORIZATION).is_none() {
            return Ok(MaybeProfile(None));
        }
        ProfileAuth::from_request_parts(parts, state).await.map(|a| MaybeProfile(Some(a)))
    }
}

/// An admin of the store or the profile named by the `id` path parameter.
impl FromRequestParts<AppState> for ProfileActor {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = require_bearer(parts)?.to_string();
        let store_id = path_uuid(parts, state, "storeId", "store").await?;
        let profile_id = path_uuid(parts, state, "id", "profile").await?;
        state.services.auth.admin_or_self(store_id, profile_id, &token).await
    }
}

/// The client's address as the rate limits count it: the socket peer or, with
/// `TRUSTED_PROXY_HOPS=N`, the N-th `X-Forwarded-For` entry from the right (the one the outermost
/// trusted proxy appended; entries to its left are written by the client). A header with fewer
/// entries than that leaves the peer.
pub struct ClientIp(pub Option<ClientAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
        let hops = state.config.limits.trusted_proxy_hops as usize;
        let forwarded = (hops > 0).then(|| forwarded_for(&parts.headers, hops)).flatten();
        Ok(ClientIp(forwarded.or(peer).map(ClientAddr::new)))
    }
}

/// Who made a request, for the consent ledger: the client's full address (by the same rule as
/// [`ClientIp`]) and its user agent. The ledger shortens the address unless the store opted in.
pub struct Witness(pub crate::services::consents::Witness);

impl FromRequestParts<AppState> for Witness {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
        let hops = state.config.limits.trusted_proxy_hops as usize;
        let forwarded = (hops > 0).then(|| forwarded_for(&parts.headers, hops)).flatten();
        let user_agent =
            parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(|u| u.chars().take(500).collect());
        Ok(Witness(crate::services::consents::Witness { ip: forwarded.or(peer), user_agent }))
    }
}

fn forwarded_for(headers: &axum::http::HeaderMap, hops: usize) -> Option<std::net::IpAddr> {
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let entry = entries.len().checked_sub(hops).map(|i| entries[i])?;
    entry.parse().ok().or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// An admin of the store or one of its profiles, by the kind of bearer presented.
pub enum StoreCaller {
    Admin(AdminAuth),
    Profile(ProfileAuth),
}

impl FromRequestParts<AppState> for StoreCaller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = require_bearer(parts)?.to_string();
        let store_id = path_uuid(parts, state, "storeId", "store").await?;
        if state.services.auth.is_profile_token(&token) {
            state.services.auth.profile(store_id, &token).await.map(StoreCaller::Profile)
        } else {
            state.services.auth.admin(store_id, &token).await.map(StoreCaller::Admin)
        }
    }
}

/// `Some` for an admin of the store; `None` for anyone else (no bearer, or a profile's).
pub struct MaybeAdmin(pub Option<AdminAuth>);

impl FromRequestParts<AppState> for MaybeAdmin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        match bearer(parts) {
            None => Ok(MaybeAdmin(None)),
            Some(token) if state.services.auth.is_profile_token(token) => Ok(MaybeAdmin(None)),
            Some(_) => AdminAuth::from_request_parts(parts, state).await.map(|a| MaybeAdmin(Some(a))),
        }
    }
}
