//! The API document's conventions, applied once to every operation after the routes declared
//! theirs: what every route shares (the error answers a body, a query, a bearer or a limit can
//! bring, their examples and headers, descriptions, which credential each route takes, a server)
//! is written here instead of on each of the 70 operations, so no route can forget it. A route's
//! annotation says `security(("bearer" = []))` when it needs a credential; [`CREDENTIALS`] says
//! which of the three kinds. `schemas` refines the generated schemas.

mod codes;
mod examples;
mod schemas;

use std::collections::HashMap;

use serde_json::{Map, Value, json};

/// The text and an example `error` code of each status the server answers with the error shape.
fn error_status(status: &str) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match status {
        "400" => (
            "bad request: the body is not valid JSON, or a token is unknown, used or expired",
            "invalid_json",
            "the body is not valid JSON: expected value at line 1 column 1",
        ),
        "401" => (
            "the bearer credential is missing, invalid, expired or revoked (`WWW-Authenticate: Bearer`)",
            "unauthorized",
            "the bearer token is invalid, expired or revoked",
        ),
        "403" => (
            "the credential is valid but may not do this (`forbidden`, or `verification_required` for an unverified session that only named an address)",
            "forbidden",
            "this route needs an account token",
        ),
        "404" => (
            "no such store or record (a record of another store is reported the same way)",
            "not_found",
            "profile not found",
        ),
        "409" => {
            ("the request conflicts with the stored state", "conflict", "another audience of this store has this key")
        }
        "413" => ("the body is larger than 1 MiB", "payload_too_large", "the request body is larger than 1 MiB"),
        "415" => (
            "the body is not JSON (`content-type: application/json`)",
            "unsupported_media_type",
            "send a JSON body with content-type: application/json",
        ),
        "422" => (
            "a field is missing, unknown or invalid; `validation_errors` names each",
            "validation_failed",
            "email: invalid_email",
        ),
        "429" => (
            "too many requests: wait `retry_after` seconds (also in `Retry-After`)",
            "rate_limited",
            "too many requests",
        ),
        "502" => (
            "the payment provider failed or timed out; nothing was stored",
            "payment_provider_error",
            "the payment provider did not create the checkout; nothing was stored, try again",
        ),
        "503" => (
            "not available now: the database is unreachable, or concurrent changes kept winning; retry",
            "database_unavailable",
            "the database is not reachable; try again",
        ),
        _ => return None,
    })
}

fn error_example(status: &str, code: &str, message: &str) -> Value {
    let status_code: u16 = status.parse().unwrap_or(500);
    let mut example = json!({
        "error": code,
        "message": message,
        "status_code": status_code,
        "request_id": "0192f4a1-7c3e-7d2a-9b1e-3f6c2d8e4a10",
    });
    if status == "422" {
        example["validation_errors"] = json!([{"field": "email", "error": "invalid_email"}]);
    }
    if status == "429" {
        example["retry_after"] = json!(42);
    }
    example
}

fn error_response(status: &str) -> Value {
    let (description, code, message) = error_status(status).unwrap_or(("error", "error", "error"));
    json!({
        "description": description,
        "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ErrorBody"},
            "example": error_example(status, code, message),
        }},
    })
}

/// Adds the answers an operation can give by its shape: a body (400, 413, 415, 422), query
/// parameters (422), a bearer, even an optional one (401, 403), an id in the path (404).
fn add_shared_responses(path: &str, op: &mut Map<String, Value>, reads_bearer: bool) {
    let has_body = op.contains_key("requestBody");
    let has_query =
        op.get("parameters").and_then(Value::as_array).is_some_and(|params| params.iter().any(|p| p["in"] == "query"));
    let responses = op.entry("responses").or_insert_with(|| json!({})).as_object_mut().expect("responses object");
    let mut wanted: Vec<&str> = vec![];
    if has_body {
        wanted.extend(["400", "413", "415", "422"]);
    }
    if has_query {
        wanted.push("422");
    }
    if reads_bearer {
        wanted.extend(["401", "403"]);
    }
    if path.contains('{') {
        wanted.push("404");
    }
    for status in wanted {
        responses.entry(status).or_insert_with(|| error_response(status));
    }
}

/// Gives every response a description and every error response the shape's example.
fn describe_responses(op: &mut Map<String, Value>) {
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else { return };
    for (status, response) in responses.iter_mut() {
        let Some(response) = response.as_object_mut() else { continue };
        let empty = response.get("description").and_then(Value::as_str).is_none_or(str::is_empty);
        if let Some((text, code, message)) = error_status(status) {
            let detail = response
                .get("description")
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty() && !d.starts_with(text))
                .map(str::to_string);
            if !empty && detail.is_none() {
                continue;
            }
            let description = match &detail {
                Some(d) => format!("{text}: {d}"),
                None => text.to_string(),
            };
            response.insert("description".into(), Value::String(description));
            // The route's own code (`key_taken`, `invalid_code`...) leads its example when it names one.
            let code = detail
                .as_deref()
                .and_then(|d| d.split(|c: char| !(c.is_ascii_lowercase() || c == '_')).find(|w| w.contains('_')))
                .unwrap_or(code);
            if let Some(content) = response.get_mut("content").and_then(|c| c.get_mut("application/json")) {
                content
                    .as_object_mut()
                    .map(|c| c.entry("example").or_insert_with(|| error_example(status, code, message)));
            }
        } else if empty {
            let text = match status.as_str() {
                "200" => "OK",
                "201" => "created",
                "202" => "accepted",
                "204" => "no content",
                _ => "answer",
            };
            response.insert("description".into(), Value::String(text.into()));
        }
    }
}

/// Query parameters that carry JSON (the reference SDK's encoding of arrays): declared as JSON
/// content with their schema rather than as a bare string.
fn json_parameters(op: &mut Map<String, Value>) {
    let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else { return };
    for param in params {
        if param["in"] == "query" && param["name"] == "ids" {
            param["schema"]["pattern"] = Value::String(schemas::ids_pattern());
        }
        if param["in"] == "query" && param["name"] == "token" {
            param["schema"]["pattern"] = Value::String(schemas::nonblank());
        }
        if param["in"] == "query" && param["name"] == "types" {
            param["schema"]["pattern"] = Value::String(schemas::types_pattern());
        }
        if param["name"] == "taxonomy_query" && param["in"] == "query" {
            let param = param.as_object_mut().expect("parameter object");
            param.remove("schema");
            param.insert(
                "content".into(),
                json!({"application/json": {
                    "schema": {"type": "array", "items": {"$ref": "#/components/schemas/TaxonomyQuery"}},
                    "example": [{"taxonomy_id": "0192f4a1-7c3e-7d2a-9b1e-3f6c2d8e4a10",
                                 "query": [{"key": "tier", "type": "text", "value": ["gold"]}]}],
                }}),
            );
        }
    }
}

/// Operation ids after the reference SDK's calls (`crm.requestCode`, `crm.audiences.checkAccess`),
/// prefixed by resource so that they stay unique: what code generators name their methods after.
const OPERATION_IDS: &[(&str, &str)] = &[
    ("healthz", "ops_healthz"),
    ("readyz", "ops_readyz"),
    ("metrics", "ops_metrics"),
    ("account_login", "accounts_login"),
    ("account_refresh", "accounts_refreshToken"),
    ("account_logout", "accounts_logout"),
    ("account_me", "accounts_getMe"),
    ("list_stores", "stores_find"),
    ("create_store", "stores_create"),
    ("get_store", "stores_get"),
    ("update_store", "stores_update"),
    ("list_api_keys", "apiKeys_find"),
    ("create_api_key", "apiKeys_create"),
    ("revoke_api_key", "apiKeys_revoke"),
    ("list_taxonomies", "taxonomies_find"),
    ("create_taxonomy", "taxonomies_create"),
    ("get_taxonomy", "taxonomies_get"),
    ("update_taxonomy", "taxonomies_update"),
    ("delete_taxonomy", "taxonomies_delete"),
    ("create_profile", "profiles_create"),
    ("find_profiles", "profiles_find"),
    ("get_profile", "profiles_get"),
    ("update_profile", "profiles_update"),
    ("merge_profiles", "profiles_merge"),
    ("erase_profile", "profiles_erase"),
    ("export_profile", "profiles_export"),
    ("link_order", "profiles_linkOrder"),
    ("list_orders", "profiles_getOrders"),
    ("initialize", "profiles_initialize"),
    ("connect", "profiles_connect"),
    ("request_code", "profiles_requestCode"),
    ("verify", "profiles_verify"),
    ("refresh_token", "profiles_refreshToken"),
    ("logout", "profiles_logout"),
    ("get_me", "profiles_getMe"),
    ("list_sessions", "profiles_getTokens"),
    ("revoke_token", "profiles_revokeToken"),
    ("revoke_all_tokens", "profiles_revokeAllTokens"),
    ("create_audience", "audiences_create"),
    ("find_audiences", "audiences_find"),
    ("get_audience", "audiences_get"),
    ("update_audience", "audiences_update"),
    ("subscribe", "audiences_subscribe"),
    ("check_access", "audiences_checkAccess"),
    ("get_subscribers", "audiences_getSubscribers"),
    ("add_subscriber", "audiences_addSubscriber"),
    ("remove_subscriber", "audiences_removeSubscriber"),
    ("confirm_page", "audiences_confirmPage"),
    ("confirm", "audiences_confirm"),
    ("unsubscribe_page", "audiences_unsubscribePage"),
    ("unsubscribe", "audiences_unsubscribe"),
    ("list_consents", "profiles_getConsents"),
    ("create_template", "templates_create"),
    ("list_templates", "templates_find"),
    ("get_template", "templates_get"),
    ("update_template", "templates_update"),
    ("delete_template", "templates_delete"),
    ("preview_template", "templates_preview"),
    ("stripe_webhook", "payments_stripeWebhook"),
    ("list_events", "events_find"),
    ("create_webhook", "webhooks_create"),
    ("list_webhooks", "webhooks_find"),
    ("get_webhook", "webhooks_get"),
    ("update_webhook", "webhooks_update"),
    ("delete_webhook", "webhooks_delete"),
    ("rotate_webhook_secret", "webhooks_rotateSecret"),
    ("list_deliveries", "webhooks_getDeliveries"),
    ("retry_delivery", "webhooks_retryDelivery"),
    ("list_consents", "profiles_getConsents"),
    ("export_profiles", "profiles_exportMany"),
    ("export_subscribers", "audiences_exportSubscribers"),
    ("create_segment", "segments_create"),
    ("list_segments", "segments_find"),
    ("get_segment", "segments_get"),
    ("update_segment", "segments_update"),
    ("delete_segment", "segments_delete"),
    ("segment_profiles", "segments_getProfiles"),
    ("segment_count", "segments_count"),
    ("start_import", "imports_start"),
    ("get_import", "imports_get"),
    ("import_errors", "imports_getErrors"),
];

/// Response links (OpenAPI `links`): what a client (and schemathesis' stateful phase) can call
/// next with the `id` a create answered. Every path parameter of a target is filled: `storeId`
/// from the request (or the answer, for a new store), the resource's `id` from the answer.
const LINKS: &[(&str, &[&str])] = &[
    ("stores_create", &["stores_get", "stores_update", "apiKeys_find"]),
    ("taxonomies_create", &["taxonomies_get", "taxonomies_update", "taxonomies_delete"]),
    (
        "profiles_create",
        &[
            "profiles_get",
            "profiles_update",
            "profiles_export",
            "profiles_getOrders",
            "profiles_linkOrder",
            "profiles_getConsents",
            "profiles_getTokens",
            "profiles_revokeAllTokens",
            "profiles_erase",
        ],
    ),
    (
        "audiences_create",
        &["audiences_get", "audiences_update", "audiences_getSubscribers", "audiences_exportSubscribers"],
    ),
    ("templates_create", &["templates_get", "templates_update", "templates_preview", "templates_delete"]),
    (
        "webhooks_create",
        &["webhooks_get", "webhooks_update", "webhooks_getDeliveries", "webhooks_rotateSecret", "webhooks_delete"],
    ),
    (
        "segments_create",
        &["segments_get", "segments_update", "segments_getProfiles", "segments_count", "segments_delete"],
    ),
    ("imports_start", &["imports_get", "imports_getErrors"]),
];

/// Adds `LINKS` to the 2xx answers of their operations.
fn add_links(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return };
    let path_of: HashMap<String, String> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flat_map(|ops| ops.values())
                .filter_map(move |op| op["operationId"].as_str().map(|id| (id.to_string(), path.clone())))
        })
        .collect();
    for (path, item) in paths.iter_mut() {
        let Some(ops) = item.as_object_mut() else { continue };
        for op in ops.values_mut() {
            let Some((_, targets)) = LINKS.iter().find(|(from, _)| op["operationId"] == *from) else { continue };
            let mut links = Map::new();
            for target in *targets {
                let Some(target_path) = path_of.get(*target) else { continue };
                let parameters: Map<String, Value> = path_parameters(target_path)
                    .map(|name| {
                        let from = match name {
                            "storeId" if path.contains("{storeId}") => "$request.path.storeId",
                            _ => "$response.body#/id",
                        };
                        (name.to_string(), json!(from))
                    })
                    .collect();
                links.insert(target.to_string(), json!({"operationId": target, "parameters": parameters}));
            }
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else { continue };
            for (_, response) in responses.iter_mut().filter(|(status, _)| status.starts_with('2')) {
                response["links"] = Value::Object(links.clone());
            }
        }
    }
}

/// The `{names}` of a path template.
fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('{').skip(1).filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

/// Resources in the order a reader meets them; operations last.
const TAGS: &[(&str, &str)] = &[
    ("accounts", "Platform accounts: password login (account access tokens)."),
    ("stores", "Stores and their settings (an account token)."),
    ("api keys", "A store's API keys for servers and dashboards."),
    ("profiles", "Profiles as an admin sees them: find, edit, merge, erase, export, order links."),
    ("profile sessions", "The storefront side: guests, connect, magic-code login, refresh, getMe, sessions."),
    ("segments", "Saved profile filters: their profiles, counts and exports."),
    ("imports", "Customer lists imported from CSV or NDJSON, as jobs with progress and row errors."),
    ("taxonomies", "Typed profile attributes."),
    ("audiences", "Newsletters, gated content and paid memberships; subscribe, confirm, unsubscribe, access."),
    ("email templates", "A store's mail templates."),
    ("mail", "A store's outbox: queued, sent and failed mail."),
    ("events", "What happened in a store, as a feed kept 30 days."),
    ("webhooks", "Signed deliveries of events to the store's other systems (Standard Webhooks)."),
    ("payments", "Stripe webhooks."),
    ("operations", "Health, readiness, metrics."),
];

/// The credentials (§2), as three bearer schemes so that a tool can tell which one a route takes.
const SCHEMES: &[(&str, &str)] = &[
    (
        "accountToken",
        "An account access token from `POST /v1/auth/login` (JWT, 15 minutes; `POST /v1/auth/refresh` renews it).",
    ),
    (
        "apiKey",
        "A store API key `sk_...` (`storecrm api-keys create`, or `POST /v1/stores/{storeId}/api-keys`); shown once.",
    ),
    ("profileToken", "A profile access token from `initialize`, `connect`, `verify` or `refresh` (JWT, 15 minutes)."),
];

/// Which credentials a route that reads a bearer takes, by operation; every other such route is an
/// admin route (an account token of a member, or the store's API key). `optional`: the route is
/// public and reads the credential when one is sent.
const CREDENTIALS: &[(&str, &[&str], bool)] = &[
    ("accounts_logout", &["accountToken"], false),
    ("accounts_getMe", &["accountToken"], false),
    ("stores_find", &["accountToken"], false),
    ("stores_create", &["accountToken"], false),
    ("profiles_getMe", &["profileToken"], false),
    ("profiles_logout", &["profileToken"], false),
    ("audiences_checkAccess", &["profileToken"], false),
    ("profiles_getTokens", &["accountToken", "apiKey", "profileToken"], false),
    ("profiles_revokeToken", &["accountToken", "apiKey", "profileToken"], false),
    ("profiles_revokeAllTokens", &["accountToken", "apiKey", "profileToken"], false),
    ("audiences_subscribe", &["accountToken", "apiKey", "profileToken"], false),
    ("profiles_connect", &["profileToken"], true),
    ("profiles_verify", &["profileToken"], true),
    ("audiences_get", &["accountToken", "apiKey"], true),
];
const ADMIN: &[&str] = &["accountToken", "apiKey"];

fn security_of(operation_id: &str) -> Value {
    let (schemes, optional) =
        CREDENTIALS.iter().find(|(id, ..)| *id == operation_id).map(|(_, s, o)| (*s, *o)).unwrap_or((ADMIN, false));
    let mut list: Vec<Value> = schemes.iter().map(|s| json!({ *s: [] })).collect();
    if optional {
        list.insert(0, json!({}));
    }
    Value::Array(list)
}

/// Headers of the answers: `x-request-id` on every one, `WWW-Authenticate` on 401, `Retry-After`
/// on 429 and on a transient 503.
fn add_headers(op: &mut Map<String, Value>) {
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else { return };
    for (status, response) in responses.iter_mut() {
        let headers = response.as_object_mut().expect("response object").entry("headers").or_insert_with(|| json!({}));
        headers["x-request-id"] = json!({"$ref": "#/components/headers/RequestId"});
        match status.as_str() {
            "401" => headers["WWW-Authenticate"] = json!({"$ref": "#/components/headers/WwwAuthenticate"}),
            "429" => headers["Retry-After"] = json!({"$ref": "#/components/headers/RetryAfter"}),
            "503" => headers["Retry-After"] = json!({"$ref": "#/components/headers/RetryAfterTransient"}),
            _ => {}
        }
    }
}

fn components_headers() -> Value {
    json!({
        "RequestId": {
            "description": "The request's id: the one the client sent in `x-request-id`, or a new UUIDv7. Quote it when reporting a problem; the server logs under it.",
            "required": true,
            "schema": {"type": "string"},
        },
        "WwwAuthenticate": {
            "description": "`Bearer`: the route wants a bearer credential.",
            "required": true,
            "schema": {"type": "string", "enum": ["Bearer"]},
        },
        "RetryAfter": {
            "description": "Seconds to wait before trying again (also `retry_after` in the body).",
            "required": true,
            "schema": {"type": "integer", "minimum": 0},
        },
        "RetryAfterTransient": {
            "description": "On a 503 that clears by itself (`database_unavailable`, `not_ready`, `contention`): seconds to wait before retrying (also `retry_after` in the body). Absent on `payments_not_configured`.",
            "required": false,
            "schema": {"type": "integer", "minimum": 0},
        },
    })
}

/// The served document names this server: `baseUrl` defaults to `PUBLIC_BASE_URL`, so code
/// generators and Postman reach it without editing (the committed snapshot keeps the
/// development default).
pub fn serve_at(doc: &mut Value, public_base_url: &str) {
    doc["servers"][0]["variables"]["baseUrl"]["default"] = json!(public_base_url);
}

/// Applies the conventions to the generated document.
pub fn conventions(doc: &mut Value) {
    doc["servers"] = json!([{
        "url": "{baseUrl}",
        "description": "the server (`PUBLIC_BASE_URL`); `cargo run` listens on http://127.0.0.1:8080",
        "variables": {"baseUrl": {"default": "http://127.0.0.1:8080"}},
    }]);
    doc["components"]["securitySchemes"] = SCHEMES
        .iter()
        .map(|(name, description)| {
            let scheme = json!({"type": "http", "scheme": "bearer", "description": description});
            (name.to_string(), scheme)
        })
        .collect::<Map<_, _>>()
        .into();
    doc["components"]["headers"] = components_headers();
    // Routes that declare no security are public; the document's default is an admin credential.
    doc["security"] = security_of("");
    doc["tags"] = TAGS.iter().map(|(name, description)| json!({"name": name, "description": description})).collect();
    codes::describe(doc);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for method in ["get", "put", "post", "delete", "patch"] {
            let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) else { continue };
            if let Some(id) = op.get("operationId").and_then(Value::as_str)
                && let Some((_, stable)) = OPERATION_IDS.iter().find(|(handler, _)| *handler == id)
            {
                op.insert("operationId".into(), Value::String((*stable).into()));
            }
            let id = op.get("operationId").and_then(Value::as_str).unwrap_or_default().to_string();
            let reads_bearer = match op.get("security").and_then(Value::as_array) {
                None => {
                    op.insert("security".into(), json!([]));
                    false
                }
                Some(_) => {
                    op.insert("security".into(), security_of(&id));
                    true
                }
            };
            json_parameters(op);
            // The unsubscribe token may come in the URL alone (RFC 8058 one-click links).
            if id == "audiences_unsubscribe"
                && let Some(body) = op.get_mut("requestBody").and_then(Value::as_object_mut)
            {
                body.insert("required".into(), Value::Bool(false));
            }
            add_shared_responses(path, op, reads_bearer);
            describe_responses(op);
            add_headers(op);
        }
    }
    schemas::apply(doc);
    examples::apply(doc);
    add_links(doc);
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// A renamed operation must not silently fall back to the admin credentials.
    #[test]
    fn every_credential_rule_names_an_operation() {
        let doc = crate::http::openapi();
        let ids: Vec<&str> = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .filter_map(Value::as_object)
            .flat_map(|item| item.values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        for (id, ..) in super::CREDENTIALS {
            assert!(ids.contains(id), "CREDENTIALS names {id}, which is not an operation");
        }
        for (from, targets) in super::LINKS {
            for id in std::iter::once(from).chain(targets.iter()) {
                assert!(ids.contains(id), "LINKS names {id}, which is not an operation");
            }
        }
    }

    /// A create's answer links to the calls on what it created, every path parameter filled.
    #[test]
    fn creates_link_to_their_resource() {
        let doc = crate::http::openapi();
        let links = &doc["paths"]["/v1/stores/{storeId}/webhooks"]["post"]["responses"]["201"]["links"];
        assert_eq!(
            links["webhooks_getDeliveries"],
            serde_json::json!({"operationId": "webhooks_getDeliveries",
                "parameters": {"storeId": "$request.path.storeId", "id": "$response.body#/id"}})
        );
        let links = &doc["paths"]["/v1/stores"]["post"]["responses"]["201"]["links"];
        assert_eq!(links["stores_get"]["parameters"], serde_json::json!({"storeId": "$response.body#/id"}));
    }

    /// The committed document is the one the code generates: a change to the API shows in review
    /// as a diff of `docs/openapi.json`, and the SDK's types are generated from it.
    /// `UPDATE_OPENAPI=1 cargo test openapi_snapshot` rewrites it.
    #[test]
    fn openapi_snapshot_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
        let generated = crate::http::openapi_json() + "\n";
        if std::env::var("UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
            std::fs::write(&path, &generated).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is not the generated document: run UPDATE_OPENAPI=1 cargo test openapi_snapshot"
        );
    }
}
