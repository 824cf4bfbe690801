//! The schemas as the server really checks and answers them, where the Rust types cannot say it:
//! the constraints each request field is validated with (key patterns, lengths, email and URL
//! shapes, enums), `Paged_*` pages naming their item schema, and answers told apart from
//! requests (`X` is what the server sends, `XInput` what it accepts, where the two differ).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// Whitespace as Rust's `str::trim` sees it (Unicode `White_Space`), for patterns: `\s` differs
/// between regex dialects.
const WS: &str = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// Control characters (`char::is_control`).
const CTRL: &str = r"\x00-\x1f\x7f-\x9f";
/// A taxonomy, field, template or audience key.
pub const KEY: &str = "^[A-Za-z0-9_-]{1,64}$";
/// One id of a list query: a UUID in its hyphenated form.
const UUID: &str = "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}";

pub fn nonblank() -> String {
    format!("[^{WS}]")
}

/// A display name (`domain::Name`): once trimmed, some text without control characters.
fn name() -> Value {
    let edge = format!("[^{WS}{CTRL}]");
    json!({"pattern": format!("^[{WS}]*({edge}|{edge}[^{CTRL}]*{edge})[{WS}]*$"), "maxLength": 200})
}

/// Optional text where the server takes a blank value for none (template senders).
fn blank_or(rule: Value) -> Value {
    json!({"anyOf": [rule, {"pattern": format!("^[{WS}]*$")}]})
}

fn email() -> Value {
    json!({"format": "email", "maxLength": 254})
}

/// A link the server checks with `domain::link_target`: http(s), a host name, an optional port
/// and path (its origin is then checked against the store's `allowed_origins`).
fn link() -> Value {
    json!({
        "format": "uri",
        "maxLength": 2000,
        "pattern": "^https?://[A-Za-z][A-Za-z0-9-]{0,62}(\\.[A-Za-z][A-Za-z0-9-]{0,62})*(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~/-]*)?$",
    })
}

/// A webhook endpoint (`webhooks::parse_url`): https, a host name, an optional port, path and
/// query. (Where the host resolves to is checked too: `unresolvable_host`, `private_address`.)
fn webhook_url() -> Value {
    json!({
        "format": "uri",
        "maxLength": 2000,
        "pattern": "^https://[A-Za-z][A-Za-z0-9-]{0,62}(\\.[A-Za-z][A-Za-z0-9-]{0,62})*(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~/-]*)?(\\?[A-Za-z0-9._~=&-]*)?$",
    })
}

/// A currency code; the server trims and upper-cases it.
fn currency() -> Value {
    json!({"pattern": format!("^[{WS}]*[A-Za-z]{{3}}[{WS}]*$"), "examples": ["EUR"]})
}

/// `ids` and `types` of list queries: a JSON array or a comma-separated list (blank: none).
fn list_parameter(item: &str, max: usize) -> String {
    let more = max - 1;
    let j = "[ \\t\\n\\r]"; // JSON's whitespace
    let array = format!("\\[{j}*(\"{item}\"{j}*(,{j}*\"{item}\"{j}*){{0,{more}}})?\\]");
    let list = format!("{item}[{WS}]*(,[{WS}]*{item}[{WS}]*){{0,{more}}}");
    format!("^[{WS}]*({array}|{list})?[{WS}]*$")
}

/// Constraints of request fields, by schema and property: merged into the generated property.
fn field_rules() -> Vec<(&'static str, &'static str, Value)> {
    let key = json!({"pattern": KEY});
    let audience_key = json!({"pattern": KEY, "not": {"enum": crate::domain::audience::RESERVED_KEYS}});
    let text = json!({"pattern": nonblank()});
    vec![
        ("LoginRequest", "email", email()),
        ("LoginRequest", "password", json!({"minLength": 1, "maxLength": 1024})),
        ("RefreshRequest", "refresh_token", text.clone()),
        ("EmailRequest", "email", email()),
        ("VerifyRequest", "email", email()),
        ("VerifyRequest", "code", json!({"pattern": "^[0-9]{6}$"})),
        ("CreateStore", "name", name()),
        ("CreateApiKey", "name", name()),
        ("UpdateStore", "name", name()),
        ("UpdateStore", "from_email", email()),
        ("UpdateStore", "from_name", name()),
        (
            "UpdateStore",
            "allowed_origins",
            json!({"maxItems": 50, "items": {"type": "string",
            "pattern": "^https?://(\\*\\.[A-Za-z][A-Za-z0-9-]{0,62}(\\.[A-Za-z][A-Za-z0-9-]{0,62})+|[A-Za-z][A-Za-z0-9-]{0,62}(\\.[A-Za-z][A-Za-z0-9-]{0,62})*)(:[1-9][0-9]{0,3})?/*$"}}),
        ),
        ("CreateProfile", "email", email()),
        ("UpdateProfile", "email", email()),
        ("LinkOrder", "order_id", json!({"pattern": nonblank(), "maxLength": 200})),
        ("LinkOrder", "currency", currency()),
        ("CreateAudience", "key", audience_key.clone()),
        ("CreateAudience", "name", json!({"maxLength": 200})),
        ("UpdateAudience", "key", audience_key),
        ("UpdateAudience", "name", json!({"maxLength": 200})),
        ("UpdateAudience", "prices", json!({"minItems": 1})),
        ("SubscribeRequest", "success_url", link()),
        ("SubscribeRequest", "cancel_url", link()),
        ("SubscribeRequest", "confirm_url", link()),
        ("TokenRequest", "token", text.clone()),
        ("CreateTemplate", "key", key.clone()),
        ("CreateTemplate", "subject", json!({"pattern": nonblank(), "maxLength": 998})),
        ("CreateTemplate", "body", text.clone()),
        ("CreateTemplate", "from_name", blank_or(name())),
        ("CreateTemplate", "from_email", blank_or(email())),
        ("CreateTemplate", "reply_to", blank_or(email())),
        ("UpdateTemplate", "key", key.clone()),
        ("UpdateTemplate", "subject", json!({"pattern": nonblank(), "maxLength": 998})),
        ("UpdateTemplate", "body", text.clone()),
        ("UpdateTemplate", "from_name", blank_or(name())),
        ("UpdateTemplate", "from_email", blank_or(email())),
        ("UpdateTemplate", "reply_to", blank_or(email())),
        ("CreateTaxonomy", "key", key.clone()),
        ("CreateTaxonomy", "schema", json!({"maxItems": crate::domain::taxonomy::MAX_FIELDS})),
        ("UpdateTaxonomy", "key", key.clone()),
        ("UpdateTaxonomy", "schema", json!({"maxItems": crate::domain::taxonomy::MAX_FIELDS})),
        ("CreateWebhook", "url", webhook_url()),
        ("UpdateWebhook", "url", webhook_url()),
        ("CreateWebhook", "events", json!({"items": {"$ref": "#/components/schemas/EventFilter"}})),
        ("UpdateWebhook", "events", json!({"items": {"$ref": "#/components/schemas/EventFilter"}})),
        ("Price", "id", json!({"maxLength": 200})),
        ("Price", "currency", currency()),
        ("Price", "amount", json!({"minimum": 0})),
        ("PriceInterval", "period", json!({"enum": ["month", "year"]})),
        ("PriceInterval", "count", json!({"minimum": 1, "maximum": 12})),
        ("PriceProvider", "type", json!({"enum": ["stripe"]})),
        ("PriceProvider", "id", text),
        ("EntryField", "key", key),
        ("GeoPoint", "lat", json!({"minimum": -90, "maximum": 90})),
        ("GeoPoint", "lon", json!({"minimum": -180, "maximum": 180})),
        (
            "FieldQuery",
            "operation",
            json!({"enum": ["in", "all", "eq", "ne", "gt", "gte", "lt", "lte", "between", null]}),
        ),
        ("AuthToken", "token_type", json!({"enum": ["Bearer"]})),
        ("AccountToken", "token_type", json!({"enum": ["Bearer"]})),
    ]
}

/// Fields the server leaves out instead of sending `null` (`skip_serializing_if`): in answers
/// they are optional and never null. Every other field of an answer is always present.
const OMITTED_WHEN_ABSENT: &[(&str, &str)] = &[
    ("ErrorBody", "validation_errors"),
    ("ErrorBody", "retry_after"),
    ("SubscribeResponse", "checkout_url"),
    ("AccessResponse", "subscription"),
    ("AccessResponse", "reason"),
    ("Price", "compare_at"),
    ("Price", "interval"),
    ("FieldDef", "options"),
    ("FieldDef", "min"),
    ("FieldDef", "max"),
    ("GeoPoint", "label"),
];

fn schemas(doc: &mut Value) -> &mut Map<String, Value> {
    doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut).expect("components.schemas")
}

fn merge(target: &mut Value, patch: &Value) {
    let (Some(target), Some(patch)) = (target.as_object_mut(), patch.as_object()) else { return };
    for (k, v) in patch {
        match target.get_mut(k) {
            Some(existing) if existing.is_object() && v.is_object() && v.get("$ref").is_none() => merge(existing, v),
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Applies everything this module knows to the document.
pub fn apply(doc: &mut Value) {
    let schemas = schemas(doc);
    // Event types are dotted (`profile.created`); the generator spells enum variants by
    // `rename_all` only.
    let event_types: Vec<&str> = crate::domain::EventType::ALL.iter().map(|t| t.as_str()).collect();
    schemas.get_mut("EventType").expect("EventType")["enum"] = json!(event_types);
    schemas.insert(
        "EventFilter".into(),
        json!({
            "description": "An event type, or `*` for every type.",
            "type": "string",
            "enum": std::iter::once("*").chain(crate::domain::EventType::ALL.iter().map(|t| t.as_str())).collect::<Vec<_>>(),
        }),
    );
    for (schema, property, patch) in field_rules() {
        let target = schemas
            .get_mut(schema)
            .and_then(|s| s.pointer_mut(&format!("/properties/{property}")))
            .unwrap_or_else(|| panic!("openapi rules: no property {schema}.{property}"));
        merge(target, &patch);
    }
    field_def_by_type(schemas);
    // A claim's answer has exactly these fields, so it is never mistaken for a whole subscription.
    schemas.get_mut("SubscriptionRef").expect("SubscriptionRef")["additionalProperties"] = Value::Bool(false);
    paged_items_by_reference(schemas);
    split_answers_from_requests(doc);
}

/// `FieldDef`: options for text fields only, bounds for number fields only.
fn field_def_by_type(schemas: &mut Map<String, Value>) {
    let def = schemas.get_mut("FieldDef").expect("FieldDef");
    let description = def["description"].clone();
    let props = def["properties"].clone();
    let variant = |ty: &str, extra: &[&str]| {
        let mut properties =
            json!({"key": {"type": "string", "pattern": KEY}, "type": {"type": "string", "enum": [ty]}});
        for name in extra {
            properties[*name] = props[*name].clone();
        }
        json!({"type": "object", "additionalProperties": false, "required": ["key", "type"], "properties": properties})
    };
    let mut text = variant("text", &["options"]);
    merge(
        &mut text["properties"]["options"],
        &json!({"minItems": 1, "items": {"type": "string", "minLength": 1, "maxLength": crate::domain::taxonomy::MAX_TEXT_LEN}}),
    );
    *def = json!({
        "description": description,
        "oneOf": [text, variant("number", &["min", "max"]), variant("boolean", &[]), variant("geo_location", &[])],
    });
}

/// `Paged_X` names `X` for its items instead of repeating it (when `X` is that very schema).
fn paged_items_by_reference(schemas: &mut Map<String, Value>) {
    let names: Vec<String> = schemas.keys().filter(|k| k.starts_with("Paged_")).cloned().collect();
    for paged in names {
        let item = paged.trim_start_matches("Paged_").to_string();
        let Some(item_schema) = schemas.get(&item).cloned() else { continue };
        let items = schemas.get_mut(&paged).and_then(|p| p.pointer_mut("/properties/items/items")).expect("items");
        let same = |mut a: Value, mut b: Value| {
            for v in [&mut a, &mut b] {
                if let Some(o) = v.as_object_mut() {
                    o.remove("description");
                }
            }
            a == b
        };
        assert!(same(items.clone(), item_schema), "openapi: the items of {paged} are not {item}");
        *items = json!({"$ref": format!("#/components/schemas/{item}")});
    }
}

fn refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(Value::as_str)
                && let Some(name) = r.strip_prefix("#/components/schemas/")
            {
                out.insert(name.to_string());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The schemas reachable from `roots`.
fn closure(schemas: &Map<String, Value>, roots: BTreeSet<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.into_iter().collect();
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone())
            && let Some(s) = schemas.get(&name)
        {
            let mut next = BTreeSet::new();
            refs(s, &mut next);
            todo.extend(next);
        }
    }
    seen
}

fn strip_null(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else { return };
    if let Some(types) = obj.get_mut("type").and_then(Value::as_array_mut) {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types[0].clone();
            obj.insert("type".into(), only);
        }
    }
    for k in ["oneOf", "anyOf"] {
        let Some(variants) = obj.get_mut(k).and_then(Value::as_array_mut) else { continue };
        variants.retain(|s| s["type"] != "null");
        if variants.len() == 1 {
            let only = variants[0].clone();
            obj.remove(k);
            merge(schema, &only);
            return strip_null(schema);
        }
    }
    if let Some(values) = obj.get_mut("enum").and_then(Value::as_array_mut) {
        values.retain(|v| !v.is_null());
    }
}

/// An answer's view of a schema: every field the server always sends is required (nullable ones
/// as `null`); the fields it leaves out are optional and never null.
fn answer_view(name: &str, schema: &Value) -> Value {
    let mut schema = schema.clone();
    answer_object(name, &mut schema);
    schema
}

fn answer_object(name: &str, schema: &mut Value) {
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        let mut required = vec![];
        for (field, prop) in props.iter_mut() {
            if OMITTED_WHEN_ABSENT.contains(&(name, field.as_str())) {
                strip_null(prop);
            } else {
                required.push(Value::String(field.clone()));
            }
        }
        let old: Vec<Value> = schema["required"].as_array().cloned().unwrap_or_default();
        // Keep the generated order, then the newly required fields.
        let mut all = old.clone();
        all.extend(required.into_iter().filter(|f| !old.contains(f)));
        schema["required"] = Value::Array(all);
    }
    for k in ["oneOf", "anyOf", "allOf"] {
        if let Some(variants) = schema.get_mut(k).and_then(Value::as_array_mut) {
            variants.iter_mut().for_each(|v| answer_object(name, v));
        }
    }
}

fn rename_refs(value: &mut Value, renamed: &BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref")
                && let Some(new) = r.strip_prefix("#/components/schemas/").and_then(|n| renamed.get(n))
            {
                *r = format!("#/components/schemas/{new}");
            }
            map.values_mut().for_each(|v| rename_refs(v, renamed));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename_refs(v, renamed)),
        _ => {}
    }
}

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// Answers use the answer view of every schema; where a request uses the same schema and the
/// views differ (or it contains one that does), the request gets `XInput`, the schema as accepted.
fn split_answers_from_requests(doc: &mut Value) {
    let (mut inputs, mut outputs) = (BTreeSet::new(), BTreeSet::new());
    for item in doc["paths"].as_object().expect("paths").values() {
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            refs(&op["requestBody"], &mut inputs);
            refs(&op["parameters"], &mut inputs);
            refs(&op["responses"], &mut outputs);
        }
    }
    let schemas = schemas(doc);
    let inputs = closure(schemas, inputs);
    let outputs = closure(schemas, outputs);

    let mut changed: BTreeSet<String> = inputs
        .intersection(&outputs)
        .filter(|n| schemas.get(*n).is_some_and(|s| answer_view(n, s) != *s))
        .cloned()
        .collect();
    loop {
        let more: Vec<String> = inputs
            .intersection(&outputs)
            .filter(|n| !changed.contains(*n))
            .filter(|n| {
                let mut r = BTreeSet::new();
                refs(&schemas[n.as_str()], &mut r);
                r.iter().any(|x| changed.contains(x))
            })
            .cloned()
            .collect();
        if more.is_empty() {
            break;
        }
        changed.extend(more);
    }
    let renamed: BTreeMap<String, String> = changed.iter().map(|n| (n.clone(), format!("{n}Input"))).collect();

    for name in &changed {
        let mut input = schemas[name.as_str()].clone();
        rename_refs(&mut input, &renamed);
        schemas.insert(renamed[name].clone(), input);
    }
    for name in inputs.difference(&outputs) {
        if let Some(s) = schemas.get_mut(name) {
            rename_refs(s, &renamed);
        }
    }
    for name in &outputs {
        if let Some(s) = schemas.get_mut(name) {
            *s = answer_view(name, s);
        }
    }
    // The bare string `"standard"` is accepted for the type (CONTRACT §6).
    let variants = schemas
        .get_mut("AudienceTypeInput")
        .and_then(|s| s.get_mut("oneOf"))
        .and_then(Value::as_array_mut)
        .expect("AudienceTypeInput is a oneOf");
    for v in variants.iter_mut().filter(|v| v["type"] == "object") {
        v["additionalProperties"] = Value::Bool(false);
        if let Some(prices) = v.pointer_mut("/properties/prices") {
            prices["minItems"] = json!(1);
        }
    }
    variants.insert(0, json!({"type": "string", "enum": ["standard"]}));

    for item in doc["paths"].as_object_mut().expect("paths").values_mut() {
        for m in METHODS {
            let Some(op) = item.get_mut(m) else { continue };
            for part in ["requestBody", "parameters"] {
                if let Some(v) = op.get_mut(part) {
                    rename_refs(v, &renamed);
                }
            }
        }
    }
}

/// `ids` of `GET /audiences`: a JSON array or a comma-separated list of at most 200 UUIDs.
pub fn ids_pattern() -> String {
    list_parameter(UUID, 200)
}

/// `types` of `GET /events`: a JSON array or a comma-separated list of at most 20 event types.
pub fn types_pattern() -> String {
    let names: Vec<String> = crate::domain::EventType::ALL.iter().map(|t| t.as_str().replace('.', "\\.")).collect();
    list_parameter(&format!("({})", names.join("|")), 20)
}
