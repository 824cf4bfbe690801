//! Examples for every request body and every main answer, so that Swagger UI, generated clients
//! and Postman show real values instead of `"string"`. A request body gets its own example where
//! one is written below; everything else is built from the schema, a field's value chosen by its
//! name (`email`, `key`, `created_at`...), else by its format, enum or type.

use serde_json::{Map, Value, json};

const STORE_ID: &str = "0192f4a1-7c3e-7d2a-9b1e-3f6c2d8e4a10";
const PROFILE_ID: &str = "0192f4a1-8d20-7b61-a3c4-5e7f9a0b1c2d";
const TAXONOMY_ID: &str = "0192f4a1-9a01-7c55-8e2d-4b6a1f3c5d7e";
const TEMPLATE_ID: &str = "0192f4a1-a2b3-7e44-9f10-2c3d4e5f6a7b";

/// Request bodies, by schema: what a client would send.
fn request(schema: &str) -> Option<Value> {
    Some(match schema {
        "LoginRequest" => json!({"email": "ann@example.com", "password": "correct horse battery staple"}),
        "RefreshRequest" => json!({"refresh_token": "Yq3v9x0b4n8s2k7d1f6h5j0l3p9r2t4w8z1c6e0g5i7"}),
        "CreateStore" => json!({"name": "Ann's shop"}),
        "UpdateStore" => json!({"from_name": "Ann's shop", "from_email": "news@shop.example",
            "allowed_origins": ["https://shop.example", "https://*.shop.example"]}),
        "CreateApiKey" => json!({"name": "backend"}),
        "CreateTaxonomy" => json!({"key": "tier", "schema": [
            {"key": "level", "type": "text", "options": ["gold", "silver"]},
            {"key": "spend", "type": "number", "min": 0}]}),
        "UpdateTaxonomy" => json!({"schema": [
            {"key": "level", "type": "text", "options": ["gold", "silver", "bronze"]},
            {"key": "spend", "type": "number", "min": 0}, {"key": "vip", "type": "boolean"}]}),
        "CreateProfile" => json!({"email": "carol@example.com", "taxonomies": [{"taxonomy_id": TAXONOMY_ID,
            "fields": [{"key": "level", "type": "text", "value": ["gold"]}]}]}),
        "UpdateProfile" => json!({"taxonomies": [{"taxonomy_id": TAXONOMY_ID,
            "fields": [{"key": "spend", "type": "number", "value": 120}]}]}),
        "MergeRequest" => json!({"source_id": "0192f4a1-b4c5-7d66-8e77-9f8a0b1c2d3e"}),
        "LinkOrder" => json!({"order_id": "A-1001", "total": 4990, "currency": "EUR", "status": "paid"}),
        "EmailRequest" => json!({"email": "bob@example.com"}),
        "VerifyRequest" => json!({"email": "bob@example.com", "code": "123456"}),
        "CreateAudience" => json!({"key": "news", "name": "Weekly news", "confirm_template_id": TEMPLATE_ID}),
        "UpdateAudience" => json!({"name": "The weekly news"}),
        "SubscribeRequest" => {
            json!({"profile_id": PROFILE_ID, "confirm_url": "https://shop.example/newsletter/confirm"})
        }
        "AddSubscriber" => json!({"profile_id": PROFILE_ID}),
        "TokenRequest" => json!({"token": "AZLyoXo0fPqW3mJ8vK2nR5tY7uI9oP1aS4dF6gH8jK0"}),
        "CreateTemplate" => {
            json!({"key": "newsletter-confirm", "subject": "Confirm your subscription to {{ audience_name }}",
            "body": "<p>Hi {{ email }},</p><p><a href=\"{{ confirm_url }}\">Yes, subscribe me</a></p><p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a> - {{ store_name }}</p>"})
        }
        "UpdateTemplate" => json!({"preheader": "One click and you are in."}),
        "PreviewRequest" => json!({"vars": {"email": "bob@example.com", "audience_name": "Weekly news"}}),
        "CreateWebhook" => {
            json!({"url": "https://hooks.shop.example/storecrm", "events": ["profile.created", "subscription.activated"],
            "description": "the shop's backend"})
        }
        "UpdateWebhook" => json!({"events": ["*"]}),
        _ => return None,
    })
}

/// A value for a field, by its name, when the schema allows it.
fn by_name(field: &str) -> Option<Value> {
    Some(match field {
        "id" | "account_id" | "session_id" => json!("0192f4a1-c6d7-7e88-9f90-a1b2c3d4e5f6"),
        "store_id" => json!(STORE_ID),
        "profile_id" => json!(PROFILE_ID),
        "taxonomy_id" => json!(TAXONOMY_ID),
        "confirm_template_id" | "template_id" => json!(TEMPLATE_ID),
        "audience_id" => json!("0192f4a1-d8e9-7fa0-b1c2-d3e4f5a6b7c8"),
        "email" => json!("bob@example.com"),
        "from_email" | "reply_to" => json!("news@shop.example"),
        "name" | "from_name" => json!("Weekly news"),
        "key" => json!("news"),
        "prefix" => json!("sk_Xq3v9"),
        "secret" => json!("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "access_token" => json!("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIwMTkyZjRhMSJ9.c2lnbmF0dXJl"),
        "refresh_token" => json!("Yq3v9x0b4n8s2k7d1f6h5j0l3p9r2t4w8z1c6e0g5i7"),
        "currency" => json!("EUR"),
        "url" => json!("https://hooks.shop.example/storecrm"),
        "checkout_url" => json!("https://checkout.stripe.com/c/pay/cs_test_a1b2c3"),
        "user_agent" => json!("Mozilla/5.0 (X11; Linux x86_64)"),
        "message" => json!("email: invalid_email"),
        "request_id" => json!("0192f4a1-7c3e-7d2a-9b1e-3f6c2d8e4a10"),
        "subject" => json!("Confirm your subscription to Weekly news"),
        "order_id" => json!("A-1001"),
        "amount" | "total" => json!(4990),
        // What a fresh record has: not ended, not paid, the last page.
        "cursor" | "cancelled_at" | "end_date" | "price_id" | "payment" | "failing_since" | "previous_secret_until" => {
            Value::Null
        }
        "subscriber_count" | "attempts" | "uses" => json!(3),
        f if f.ends_with("_at") || f.ends_with("_date") || f == "at" || f == "exported_at" => json!(1764000000),
        _ => return None,
    })
}

fn resolve<'a>(schemas: &'a Map<String, Value>, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => resolve(schemas, &schemas[name]),
        None => schema,
    }
}

fn matches_type(schema: &Value, value: &Value) -> bool {
    let kind = match value {
        Value::String(_) => "string",
        Value::Number(n) if n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::Bool(_) => "boolean",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => "null",
    };
    let ok = |t: &Value| t == kind || (kind == "integer" && t == "number");
    match &schema["type"] {
        Value::String(_) => ok(&schema["type"]),
        Value::Array(types) => types.iter().any(ok),
        _ => false,
    }
}

/// A value the schema accepts, built from it (depth-limited: schemas may nest).
fn build(schemas: &Map<String, Value>, schema: &Value, field: &str, depth: usize) -> Value {
    let schema = resolve(schemas, schema);
    if depth > 8 {
        return Value::Null;
    }
    if let Some(example) = schema.get("example").or_else(|| schema["examples"].get(0)) {
        return example.clone();
    }
    if let Some(value) = by_name(field).filter(|v| matches_type(schema, v) && schema.get("enum").is_none()) {
        return value;
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.iter().find(|v| !v.is_null())) {
        return first.clone();
    }
    for k in ["oneOf", "anyOf"] {
        if let Some(variant) = schema[k].as_array().and_then(|v| v.iter().find(|s| s["type"] != "null")) {
            return build(schemas, variant, field, depth + 1);
        }
    }
    if let Some(parts) = schema["allOf"].as_array() {
        let mut out = Map::new();
        for part in parts {
            if let Value::Object(o) = build(schemas, part, field, depth + 1) {
                out.extend(o);
            }
        }
        return Value::Object(out);
    }
    let ty = match &schema["type"] {
        Value::String(t) => t.as_str(),
        Value::Array(types) => types.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "object",
    };
    match ty {
        "object" => {
            let required: Vec<&str> =
                schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            let mut out = Map::new();
            for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
                // Answers show every field they send; optional ones only when the name says what.
                if required.contains(&name.as_str()) || by_name(name).is_some() {
                    out.insert(name.clone(), build(schemas, prop, name, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let item = build(schemas, &schema["items"], field, depth + 1);
            json!([item])
        }
        "string" => match schema["format"].as_str() {
            Some("uuid") => json!("0192f4a1-c6d7-7e88-9f90-a1b2c3d4e5f6"),
            Some("email") => json!("bob@example.com"),
            Some("uri") => json!("https://shop.example/"),
            _ => json!("text"),
        },
        "integer" => json!(schema["minimum"].as_i64().unwrap_or(1).max(1)),
        "number" => json!(1.5),
        "boolean" => json!(true),
        _ => Value::Null,
    }
}

/// Puts an example on each JSON request body and each 2xx JSON answer that has none.
pub fn apply(doc: &mut Value) {
    let schemas = doc["components"]["schemas"].as_object().cloned().expect("components.schemas");
    for item in doc["paths"].as_object_mut().expect("paths").values_mut() {
        for method in ["get", "put", "post", "delete", "patch"] {
            let Some(op) = item.get_mut(method) else { continue };
            if let Some(media) = op.pointer_mut("/requestBody/content/application~1json")
                && media.get("example").is_none()
            {
                let name = media["schema"]["$ref"].as_str().and_then(|r| r.rsplit('/').next()).unwrap_or_default();
                let name = name.trim_end_matches("Input");
                let example = request(name).unwrap_or_else(|| build(&schemas, &media["schema"], "", 0));
                media["example"] = example;
            }
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else { continue };
            for (status, response) in responses.iter_mut() {
                if !status.starts_with('2') {
                    continue;
                }
                if let Some(media) = response.pointer_mut("/content/application~1json")
                    && media.get("example").is_none()
                {
                    media["example"] = build(&schemas, &media["schema"], "", 0);
                }
            }
        }
    }
}
