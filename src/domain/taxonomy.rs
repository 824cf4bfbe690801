//! Taxonomies: typed field definitions, the entries a profile holds, and the queries over them.
//! Entries are flattened into one typed row per value so the database can index and filter them.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::FieldError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Text,
    Number,
    Boolean,
    GeoLocation,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::GeoLocation => "geo_location",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Text, Self::Number, Self::Boolean, Self::GeoLocation].into_iter().find(|t| t.as_str() == s)
    }
}

/// One field of a taxonomy's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    pub key: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// Text only: the allowed values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    /// Number only: inclusive bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// A key of a taxonomy or field: 1–64 of `[A-Za-z0-9_-]`.
pub fn valid_key(key: &str) -> bool {
    (1..=64).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub const MAX_FIELDS: usize = 50;
pub const MAX_TEXT_VALUES: usize = 100;
pub const MAX_TEXT_LEN: usize = 500;

pub fn validate_schema(fields: &[FieldDef]) -> Vec<FieldError> {
    let mut errors = vec![];
    if fields.len() > MAX_FIELDS {
        errors.push(FieldError::new("schema", "too_many_fields"));
    }
    let mut seen = HashSet::new();
    for (i, f) in fields.iter().enumerate() {
        let at = |part: &str| format!("schema[{i}].{part}");
        if !valid_key(&f.key) {
            errors.push(FieldError::new(at("key"), "invalid_key"));
        } else if !seen.insert(f.key.as_str()) {
            errors.push(FieldError::new(at("key"), "duplicate_key"));
        }
        if let Some(options) = &f.options {
            if f.ty != FieldType::Text {
                errors.push(FieldError::new(at("options"), "only_for_text"));
            } else if options.is_empty() || options.iter().any(|o| o.is_empty() || o.chars().count() > MAX_TEXT_LEN) {
                errors.push(FieldError::new(at("options"), "invalid_options"));
            }
        }
        if (f.min.is_some() || f.max.is_some()) && f.ty != FieldType::Number {
            errors.push(FieldError::new(at("min"), "only_for_number"));
        }
        if let (Some(min), Some(max)) = (f.min, f.max)
            && min > max
        {
            errors.push(FieldError::new(at("min"), "greater_than_max"));
        }
        if f.min.is_some_and(|v| !v.is_finite()) || f.max.is_some_and(|v| !v.is_finite()) {
            errors.push(FieldError::new(at("min"), "not_finite"));
        }
    }
    errors
}

/// A geographic point; `label` is free text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// A profile's values for one taxonomy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaxonomyEntry {
    pub taxonomy_id: Uuid,
    pub fields: Vec<EntryField>,
}

/// `value`: text → `[string]`, number → number, boolean → bool, geo_location → `{lat, lon, label?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryField {
    pub key: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
    #[schema(value_type = FieldValue)]
    pub value: Value,
}

/// An entry field's value, by the field's type: text → `["a", "b"]`, number → `4.5`,
/// boolean → `true`, geo_location → `{"lat", "lon", "label"?}`. (Documentation: the value is
/// checked against the field's definition, not parsed into this type.)
#[derive(ToSchema)]
#[serde(untagged)]
#[schema(example = json!(["gold"]))]
#[allow(dead_code)]
pub enum FieldValue {
    Text(Vec<String>),
    Number(f64),
    Boolean(bool),
    GeoLocation(GeoPoint),
}

/// A query field's value: text → one string or a list; number → a number, or `[a, b]` for
/// `between`; boolean → `true`/`false`; geo_location uses `center` and `radius` instead.
#[derive(ToSchema)]
#[serde(untagged)]
#[schema(example = json!(["gold", "silver"]))]
#[allow(dead_code)]
pub enum QueryValue {
    Text(String),
    List(Vec<String>),
    Number(f64),
    Range([f64; 2]),
    Boolean(bool),
}

/// One stored value: the row form of an entry field.
#[derive(Debug, Clone, PartialEq)]
pub struct TaxonomyValue {
    pub taxonomy_id: Uuid,
    pub field_key: String,
    pub field_pos: i32,
    pub value_pos: i32,
    pub value: StoredValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StoredValue {
    Text(String),
    Number(f64),
    Boolean(bool),
    Geo { lat: f64, lon: f64, label: Option<String> },
}

impl StoredValue {
    pub fn field_type(&self) -> FieldType {
        match self {
            Self::Text(_) => FieldType::Text,
            Self::Number(_) => FieldType::Number,
            Self::Boolean(_) => FieldType::Boolean,
            Self::Geo { .. } => FieldType::GeoLocation,
        }
    }
}

fn parse_value(def: &FieldDef, value: &Value) -> Result<Vec<StoredValue>, &'static str> {
    match def.ty {
        FieldType::Text => {
            let items: Vec<&Value> = match value {
                Value::Array(a) => a.iter().collect(),
                Value::String(_) => vec![value],
                _ => return Err("invalid_type"),
            };
            if items.len() > MAX_TEXT_VALUES {
                return Err("too_many_values");
            }
            let mut out = Vec::with_capacity(items.len());
            for v in items {
                let s = v.as_str().ok_or("invalid_type")?.trim();
                if s.is_empty() || s.chars().count() > MAX_TEXT_LEN {
                    return Err("invalid_length");
                }
                if def.options.as_ref().is_some_and(|o| !o.iter().any(|x| x == s)) {
                    return Err("option_not_allowed");
                }
                if !out.iter().any(|x| matches!(x, StoredValue::Text(t) if t == s)) {
                    out.push(StoredValue::Text(s.to_string()));
                }
            }
            Ok(out)
        }
        FieldType::Number => {
            let n = value.as_f64().filter(|n| n.is_finite()).ok_or("invalid_type")?;
            if def.min.is_some_and(|m| n < m) || def.max.is_some_and(|m| n > m) {
                return Err("out_of_range");
            }
            Ok(vec![StoredValue::Number(n)])
        }
        FieldType::Boolean => Ok(vec![StoredValue::Boolean(value.as_bool().ok_or("invalid_type")?)]),
        FieldType::GeoLocation => {
            let p: GeoPoint = serde_json::from_value(value.clone()).map_err(|_| "invalid_type")?;
            if !(-90.0..=90.0).contains(&p.lat) || !(-180.0..=180.0).contains(&p.lon) {
                return Err("out_of_range");
            }
            Ok(vec![StoredValue::Geo { lat: p.lat, lon: p.lon, label: p.label.filter(|l| !l.trim().is_empty()) }])
        }
    }
}

/// Validates entries against the store's definitions and flattens them to rows.
pub fn validate_entries(
    entries: &[TaxonomyEntry],
    defs: &HashMap<Uuid, Vec<FieldDef>>,
) -> Result<Vec<TaxonomyValue>, Vec<FieldError>> {
    let mut errors = vec![];
    let mut rows = vec![];
    let mut seen_taxonomies = HashSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let Some(schema) = defs.get(&entry.taxonomy_id) else {
            errors.push(FieldError::new(format!("taxonomies[{i}].taxonomy_id"), "unknown_taxonomy"));
            continue;
        };
        if !seen_taxonomies.insert(entry.taxonomy_id) {
            errors.push(FieldError::new(format!("taxonomies[{i}].taxonomy_id"), "duplicate_taxonomy"));
            continue;
        }
        let mut seen_keys = HashSet::new();
        for (j, field) in entry.fields.iter().enumerate() {
            let at = |part: &str| format!("taxonomies[{i}].fields[{j}].{part}");
            let Some(def) = schema.iter().find(|d| d.key == field.key) else {
                errors.push(FieldError::new(at("key"), "unknown_field"));
                continue;
            };
            if !seen_keys.insert(field.key.as_str()) {
                errors.push(FieldError::new(at("key"), "duplicate_field"));
                continue;
            }
            if def.ty != field.ty {
                errors.push(FieldError::new(at("type"), "type_mismatch"));
                continue;
            }
            match parse_value(def, &field.value) {
                Err(e) => errors.push(FieldError::new(at("value"), e)),
                Ok(values) => rows.extend(values.into_iter().enumerate().map(|(k, value)| TaxonomyValue {
                    taxonomy_id: entry.taxonomy_id,
                    field_key: field.key.clone(),
                    field_pos: j as i32,
                    value_pos: k as i32,
                    value,
                })),
            }
        }
    }
    if errors.is_empty() { Ok(rows) } else { Err(errors) }
}

/// Rebuilds entries from stored rows (sorted by taxonomy, field position, value position).
pub fn entries_from_values(mut values: Vec<TaxonomyValue>) -> Vec<TaxonomyEntry> {
    values.sort_by(|a, b| {
        (a.taxonomy_id, a.field_pos, &a.field_key, a.value_pos).cmp(&(
            b.taxonomy_id,
            b.field_pos,
            &b.field_key,
            b.value_pos,
        ))
    });
    let mut entries: Vec<TaxonomyEntry> = vec![];
    for v in values {
        if entries.last().is_none_or(|e| e.taxonomy_id != v.taxonomy_id) {
            entries.push(TaxonomyEntry { taxonomy_id: v.taxonomy_id, fields: vec![] });
        }
        let entry = entries.last_mut().expect("pushed above");
        let ty = v.value.field_type();
        let same_field = entry.fields.last().is_some_and(|f| f.key == v.field_key);
        match (v.value, same_field) {
            (StoredValue::Text(t), true) => {
                if let Some(Value::Array(a)) = entry.fields.last_mut().map(|f| &mut f.value) {
                    a.push(Value::String(t));
                }
            }
            (value, _) => {
                let json = match value {
                    StoredValue::Text(t) => Value::Array(vec![Value::String(t)]),
                    StoredValue::Number(n) => serde_json::json!(n),
                    StoredValue::Boolean(b) => Value::Bool(b),
                    StoredValue::Geo { lat, lon, label } => {
                        serde_json::to_value(GeoPoint { lat, lon, label }).unwrap_or_default()
                    }
                };
                entry.fields.push(EntryField { key: v.field_key, ty, value: json });
            }
        }
    }
    entries
}

/// A filter over one taxonomy: all its field queries must hold.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaxonomyQuery {
    pub taxonomy_id: Uuid,
    pub query: Vec<FieldQuery>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldQuery {
    pub key: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// text: `in` (default), `all`; number: `eq` (default), `ne`, `gt`, `gte`, `lt`, `lte`, `between`.
    pub operation: Option<String>,
    #[serde(default)]
    #[schema(value_type = QueryValue)]
    pub value: Value,
    /// geo_location: the centre.
    pub center: Option<GeoPoint>,
    /// geo_location: kilometres.
    pub radius: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumOp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    Between,
}

/// A validated condition on one field.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Any of the values.
    TextIn(Vec<String>),
    /// Every one of the values.
    TextAll(Vec<String>),
    Number(NumOp, f64, f64),
    Boolean(bool),
    Within {
        lat: f64,
        lon: f64,
        radius_km: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub taxonomy_id: Uuid,
    pub field_key: String,
    pub condition: Condition,
}

/// Parses `taxonomy_query` (a JSON array) and checks it against the definitions.
pub fn parse_query(raw: &str, defs: &HashMap<Uuid, Vec<FieldDef>>) -> Result<Vec<Filter>, Vec<FieldError>> {
    let queries: Vec<TaxonomyQuery> =
        serde_json::from_str(raw).map_err(|_| vec![FieldError::new("taxonomy_query", "invalid_json")])?;
    if queries.len() > 20 {
        return Err(vec![FieldError::new("taxonomy_query", "too_many_filters")]);
    }
    let mut errors = vec![];
    let mut filters = vec![];
    for (i, q) in queries.iter().enumerate() {
        let Some(schema) = defs.get(&q.taxonomy_id) else {
            errors.push(FieldError::new(format!("taxonomy_query[{i}].taxonomy_id"), "unknown_taxonomy"));
            continue;
        };
        for (j, fq) in q.query.iter().enumerate() {
            let at = |part: &str| format!("taxonomy_query[{i}].query[{j}].{part}");
            match schema.iter().find(|d| d.key == fq.key) {
                None => errors.push(FieldError::new(at("key"), "unknown_field")),
                Some(def) if def.ty != fq.ty => errors.push(FieldError::new(at("type"), "type_mismatch")),
                Some(_) => match condition(fq) {
                    Ok(condition) => {
                        filters.push(Filter { taxonomy_id: q.taxonomy_id, field_key: fq.key.clone(), condition })
                    }
                    Err((part, e)) => errors.push(FieldError::new(at(part), e)),
                },
            }
        }
    }
    if errors.is_empty() { Ok(filters) } else { Err(errors) }
}

fn condition(fq: &FieldQuery) -> Result<Condition, (&'static str, &'static str)> {
    let op = fq.operation.as_deref();
    match fq.ty {
        FieldType::Text => {
            let values: Vec<String> = match &fq.value {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) if !a.is_empty() && a.len() <= MAX_TEXT_VALUES => a
                    .iter()
                    .map(|v| v.as_str().map(|s| s.trim().to_string()))
                    .collect::<Option<_>>()
                    .ok_or(("value", "invalid_type"))?,
                _ => return Err(("value", "invalid_type")),
            };
            match op {
                None | Some("in") => Ok(Condition::TextIn(values)),
                Some("all") => Ok(Condition::TextAll(values)),
                _ => Err(("operation", "unknown_operation")),
            }
        }
        FieldType::Number => {
            let op = match op {
                None | Some("eq") => NumOp::Eq,
                Some("ne") => NumOp::Ne,
                Some("gt") => NumOp::Gt,
                Some("gte") => NumOp::Gte,
                Some("lt") => NumOp::Lt,
                Some("lte") => NumOp::Lte,
                Some("between") => NumOp::Between,
                _ => return Err(("operation", "unknown_operation")),
            };
            let finite = |v: &Value| v.as_f64().filter(|n| n.is_finite());
            if op == NumOp::Between {
                match fq.value.as_array().map(|a| a.as_slice()) {
                    Some([a, b]) => match (finite(a), finite(b)) {
                        (Some(a), Some(b)) if a <= b => Ok(Condition::Number(op, a, b)),
                        (Some(_), Some(_)) => Err(("value", "invalid_range")),
                        _ => Err(("value", "invalid_type")),
                    },
                    _ => Err(("value", "expected_pair")),
                }
            } else {
                let n = finite(&fq.value).ok_or(("value", "invalid_type"))?;
                Ok(Condition::Number(op, n, n))
            }
        }
        FieldType::Boolean => {
            if op.is_some_and(|o| o != "eq") {
                return Err(("operation", "unknown_operation"));
            }
            Ok(Condition::Boolean(fq.value.as_bool().ok_or(("value", "invalid_type"))?))
        }
        FieldType::GeoLocation => {
            if op.is_some_and(|o| o != "within") {
                return Err(("operation", "unknown_operation"));
            }
            let center = fq.center.as_ref().ok_or(("center", "required"))?;
            if !(-90.0..=90.0).contains(&center.lat) || !(-180.0..=180.0).contains(&center.lon) {
                return Err(("center", "out_of_range"));
            }
            let radius =
                fq.radius.filter(|r| r.is_finite() && *r > 0.0 && *r <= 20_000.0).ok_or(("radius", "invalid"))?;
            Ok(Condition::Within { lat: center.lat, lon: center.lon, radius_km: radius })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defs() -> (Uuid, HashMap<Uuid, Vec<FieldDef>>) {
        let id = Uuid::now_v7();
        let schema: Vec<FieldDef> = serde_json::from_value(json!([
            {"key": "tags", "type": "text"},
            {"key": "tier", "type": "text", "options": ["gold", "silver"]},
            {"key": "age", "type": "number", "min": 0, "max": 150},
            {"key": "vip", "type": "boolean"},
            {"key": "home", "type": "geo_location"}
        ]))
        .unwrap();
        assert!(validate_schema(&schema).is_empty());
        (id, HashMap::from([(id, schema)]))
    }

    #[test]
    fn entries_round_trip_through_rows() {
        let (id, defs) = defs();
        let entries: Vec<TaxonomyEntry> = serde_json::from_value(json!([{"taxonomy_id": id, "fields": [
            {"key": "tags", "type": "text", "value": ["a", "b", "a"]},
            {"key": "age", "type": "number", "value": 42},
            {"key": "vip", "type": "boolean", "value": true},
            {"key": "home", "type": "geo_location", "value": {"lat": 52.5, "lon": 13.4, "label": "Berlin"}}
        ]}]))
        .unwrap();
        let rows = validate_entries(&entries, &defs).unwrap();
        assert_eq!(rows.len(), 5, "duplicate text values collapse");
        let back = entries_from_values(rows);
        assert_eq!(back[0].fields[0].value, json!(["a", "b"]));
        assert_eq!(back[0].fields[1].value, json!(42.0));
        assert_eq!(back[0].fields[3].value, json!({"lat": 52.5, "lon": 13.4, "label": "Berlin"}));
    }

    #[test]
    fn entries_are_checked_against_definitions() {
        let (id, defs) = defs();
        let bad: Vec<TaxonomyEntry> = serde_json::from_value(json!([
            {"taxonomy_id": id, "fields": [
                {"key": "nope", "type": "text", "value": ["x"]},
                {"key": "tags", "type": "number", "value": 1},
                {"key": "age", "type": "number", "value": 200},
                {"key": "tier", "type": "text", "value": ["bronze"]},
                {"key": "vip", "type": "boolean", "value": "yes"}
            ]},
            {"taxonomy_id": Uuid::now_v7(), "fields": []}
        ]))
        .unwrap();
        let errors = validate_entries(&bad, &defs).unwrap_err();
        let got: Vec<(&str, &str)> = errors.iter().map(|e| (e.field.as_str(), e.error.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("taxonomies[0].fields[0].key", "unknown_field"),
                ("taxonomies[0].fields[1].type", "type_mismatch"),
                ("taxonomies[0].fields[2].value", "out_of_range"),
                ("taxonomies[0].fields[3].value", "option_not_allowed"),
                ("taxonomies[0].fields[4].value", "invalid_type"),
                ("taxonomies[1].taxonomy_id", "unknown_taxonomy"),
            ]
        );
    }

    #[test]
    fn queries_parse_and_reject_bad_input() {
        let (id, defs) = defs();
        let q = json!([{"taxonomy_id": id, "query": [
            {"key": "tags", "type": "text", "value": ["a", "b"], "operation": "all"},
            {"key": "age", "type": "number", "operation": "between", "value": [18, 30]},
            {"key": "home", "type": "geo_location", "center": {"lat": 1, "lon": 2}, "radius": 10}
        ]}]);
        let filters = parse_query(&q.to_string(), &defs).unwrap();
        assert_eq!(filters[0].condition, Condition::TextAll(vec!["a".into(), "b".into()]));
        assert_eq!(filters[1].condition, Condition::Number(NumOp::Between, 18.0, 30.0));
        assert!(matches!(parse_query("[{", &defs).unwrap_err()[0].error.as_str(), "invalid_json"));
        let bad_op =
            json!([{"taxonomy_id": id, "query": [{"key": "age", "type": "number", "operation": "like", "value": 1}]}]);
        assert_eq!(parse_query(&bad_op.to_string(), &defs).unwrap_err()[0].error, "unknown_operation");
        let bad_pair = json!([{"taxonomy_id": id, "query": [{"key": "age", "type": "number", "operation": "between", "value": [5, 1]}]}]);
        assert_eq!(parse_query(&bad_pair.to_string(), &defs).unwrap_err()[0].error, "invalid_range");
    }

    #[test]
    fn schema_rules() {
        let bad: Vec<FieldDef> = serde_json::from_value(json!([
            {"key": "a b", "type": "text"},
            {"key": "n", "type": "number", "min": 5, "max": 1},
            {"key": "n", "type": "boolean", "options": ["x"]}
        ]))
        .unwrap();
        let errors: Vec<String> = validate_schema(&bad).into_iter().map(|e| e.error).collect();
        assert_eq!(errors, vec!["invalid_key", "greater_than_max", "duplicate_key", "only_for_text"]);
    }
}
