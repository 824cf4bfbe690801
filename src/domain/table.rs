//! Profiles as table rows (CSV export and import): which columns a row has and how a taxonomy
//! value is written in one cell. A CSV export imports back to the same data.
//!
//! Columns: `id`, `email`, `status`, `verified`, `created_at`, `updated_at` (import reads `email`
//! and `status`; the others are the server's and are ignored), then one column per taxonomy field
//! named `<taxonomy key>.<field key>`. Cells by field type:
//! - text: the values joined by `|` (a `|` or `\` inside a value is written `\|`, `\\`)
//! - number: the number (`12`, `4.5`)
//! - boolean: `true` or `false` (import also takes `yes`/`no`, `1`/`0`, any case)
//! - geo_location: `lat,lon` or `lat,lon,label`
//!
//! An empty cell is no value.

use serde_json::{Value, json};

use super::taxonomy::FieldType;

/// The columns every profile row starts with.
pub const PROFILE_COLUMNS: [&str; 6] = ["id", "email", "status", "verified", "created_at", "updated_at"];

/// The header of a taxonomy field's column.
pub fn field_column(taxonomy_key: &str, field_key: &str) -> String {
    format!("{taxonomy_key}.{field_key}")
}

/// Splits a `<taxonomy key>.<field key>` header (keys have no dots).
pub fn parse_field_column(header: &str) -> Option<(&str, &str)> {
    let (t, f) = header.split_once('.')?;
    (!t.is_empty() && !f.is_empty() && !f.contains('.')).then_some((t, f))
}

/// A stored entry value (the API's JSON form) as one cell.
pub fn cell(ty: FieldType, value: &Value) -> String {
    match ty {
        FieldType::Text => {
            let items: Vec<String> = match value {
                Value::Array(a) => a.iter().filter_map(Value::as_str).map(escape_text).collect(),
                Value::String(s) => vec![escape_text(s)],
                _ => vec![],
            };
            items.join("|")
        }
        FieldType::Number => value.as_f64().map(number).unwrap_or_default(),
        FieldType::Boolean => value.as_bool().map(|b| b.to_string()).unwrap_or_default(),
        FieldType::GeoLocation => {
            let (Some(lat), Some(lon)) = (value["lat"].as_f64(), value["lon"].as_f64()) else { return String::new() };
            match value["label"].as_str() {
                Some(label) => format!("{},{},{label}", number(lat), number(lon)),
                None => format!("{},{}", number(lat), number(lon)),
            }
        }
    }
}

/// A cell as the API's JSON form of the value (`None` when empty), to be validated against the
/// field's definition like any entry. The error is a validation code.
pub fn parse_cell(ty: FieldType, raw: &str) -> Result<Option<Value>, &'static str> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    Ok(Some(match ty {
        FieldType::Text => Value::Array(split_text(raw).into_iter().map(Value::String).collect()),
        FieldType::Number => json!(raw.parse::<f64>().ok().filter(|n| n.is_finite()).ok_or("invalid_number")?),
        FieldType::Boolean => Value::Bool(match raw.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => true,
            "false" | "no" | "0" => false,
            _ => return Err("invalid_boolean"),
        }),
        FieldType::GeoLocation => {
            let mut parts = raw.splitn(3, ',');
            let mut coordinate = || parts.next().and_then(|p| p.trim().parse::<f64>().ok()).ok_or("invalid_geo");
            let (lat, lon) = (coordinate()?, coordinate()?);
            match parts.next().map(str::trim).filter(|l| !l.is_empty()) {
                Some(label) => json!({"lat": lat, "lon": lon, "label": label}),
                None => json!({"lat": lat, "lon": lon}),
            }
        }
    }))
}

fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { n.to_string() }
}

fn escape_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|")
}

fn split_text(raw: &str) -> Vec<String> {
    let mut out = vec![];
    let mut current = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.push(chars.next().unwrap_or('\\')),
            '|' => out.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    out.push(current);
    out.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_round_trip() {
        let cases = [
            (FieldType::Text, json!(["vip", "a|b", "back\\slash"])),
            (FieldType::Number, json!(12.0)),
            (FieldType::Number, json!(4.5)),
            (FieldType::Boolean, json!(true)),
            (FieldType::GeoLocation, json!({"lat": 48.8566, "lon": 2.3522, "label": "Paris, France"})),
            (FieldType::GeoLocation, json!({"lat": -33.9, "lon": 151.2})),
        ];
        for (ty, value) in cases {
            let text = cell(ty, &value);
            let back = parse_cell(ty, &text).unwrap().unwrap();
            assert_eq!(back, value, "{text}");
        }
        assert_eq!(cell(FieldType::Text, &json!(["a", "b"])), "a|b");
        assert_eq!(cell(FieldType::Number, &json!(12.0)), "12");
        assert_eq!(parse_cell(FieldType::Boolean, "Yes").unwrap(), Some(json!(true)));
        assert_eq!(parse_cell(FieldType::Boolean, "maybe"), Err("invalid_boolean"));
        assert_eq!(parse_cell(FieldType::Number, "1e999"), Err("invalid_number"));
        assert_eq!(parse_cell(FieldType::GeoLocation, "north"), Err("invalid_geo"));
        assert_eq!(parse_cell(FieldType::Text, "  "), Ok(None));
        assert_eq!(parse_field_column("customer.tags"), Some(("customer", "tags")));
        assert_eq!(parse_field_column("email"), None);
    }
}
