//! Audiences: their type and prices, and the subscription states.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::error::FieldError;

/// Words under `/audiences/` that are routes, not keys: an audience keyed so could not be read by key.
pub const RESERVED_KEYS: [&str; 2] = ["confirm", "unsubscribe"];

/// Why an audience key is refused (§6): not 1–64 of `[A-Za-z0-9_-]`, or a route word.
pub fn key_error(key: &str) -> Option<&'static str> {
    if !super::taxonomy::valid_key(key) {
        Some("invalid_key")
    } else if RESERVED_KEYS.contains(&key) {
        Some("reserved_key")
    } else {
        None
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceInterval {
    /// `month` or `year`.
    pub period: String,
    #[serde(deserialize_with = "super::whole_u32")]
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceProvider {
    /// `stripe`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The provider's price id, e.g. Stripe's `price_...`.
    pub id: String,
}

/// A price of a paid audience. `id` is generated when omitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[serde(default)]
    pub id: String,
    /// ISO 4217, upper-cased.
    pub currency: String,
    /// Minor units.
    #[serde(deserialize_with = "super::whole_i64")]
    pub amount: i64,
    #[serde(default, deserialize_with = "super::opt_whole_i64", skip_serializing_if = "Option::is_none")]
    pub compare_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<PriceInterval>,
    #[serde(default)]
    pub providers: Vec<PriceProvider>,
}

impl Price {
    /// Mode of the Stripe Checkout Session: recurring prices subscribe, others pay once.
    pub fn is_recurring(&self) -> bool {
        self.interval.is_some()
    }

    /// The price's Stripe price id; `None` when it is not sold on Stripe.
    pub fn stripe_price_id(&self) -> Option<&str> {
        let stripe = super::ProviderKind::Stripe.as_str();
        self.providers.iter().find(|p| p.kind == stripe).map(|p| p.id.as_str())
    }

    /// Matches the price's own id or one of its provider ids.
    pub fn matches(&self, id: &str) -> bool {
        self.id == id || self.providers.iter().any(|p| p.id == id)
    }
}

/// `{"type": "standard"}` | `{"type": "paid", "prices": [...]}`; the bare string `"standard"` is accepted.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AudienceType {
    Standard,
    Paid { prices: Vec<Price> },
}

impl<'de> Deserialize<'de> for AudienceType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
        enum Tagged {
            Standard {},
            Paid { prices: Vec<Price> },
        }
        // Through a Value rather than an untagged enum, so a wrong field is named in the error.
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) if s == "standard" => Ok(Self::Standard),
            serde_json::Value::String(s) if s == "paid" => {
                Err(serde::de::Error::custom("invalid value: a paid type needs its prices"))
            }
            serde_json::Value::String(s) => Err(serde::de::Error::custom(format!("unknown variant `{s}`"))),
            v @ serde_json::Value::Object(_) => match Tagged::deserialize(v).map_err(serde::de::Error::custom)? {
                Tagged::Standard {} => Ok(Self::Standard),
                Tagged::Paid { prices } => Ok(Self::Paid { prices }),
            },
            _ => Err(serde::de::Error::custom("invalid type: expected \"standard\" or {\"type\": ...}")),
        }
    }
}

impl AudienceType {
    pub fn kind(&self) -> super::AudienceKind {
        match self {
            Self::Standard => super::AudienceKind::Standard,
            Self::Paid { .. } => super::AudienceKind::Paid,
        }
    }
}

/// Checks and normalises prices in place (ids generated, currency upper-cased).
pub fn validate_prices(prices: &mut [Price], field: &str) -> Vec<FieldError> {
    let mut errors = vec![];
    if prices.is_empty() {
        errors.push(FieldError::new(field, "required"));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, p) in prices.iter_mut().enumerate() {
        let at = |part: &str| format!("{field}[{i}].{part}");
        if p.id.trim().is_empty() {
            p.id = uuid::Uuid::now_v7().to_string();
        } else if p.id.len() > 200 {
            errors.push(FieldError::new(at("id"), "too_long"));
        }
        if !seen.insert(p.id.clone()) {
            errors.push(FieldError::new(at("id"), "duplicate_id"));
        }
        p.currency = p.currency.trim().to_ascii_uppercase();
        if p.currency.len() != 3 || !p.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            errors.push(FieldError::new(at("currency"), "invalid_currency"));
        }
        if p.amount < 0 {
            errors.push(FieldError::new(at("amount"), "out_of_range"));
        }
        if p.compare_at.is_some_and(|c| c < p.amount) {
            errors.push(FieldError::new(at("compare_at"), "below_amount"));
        }
        if let Some(interval) = &p.interval
            && (!matches!(interval.period.as_str(), "month" | "year") || !(1..=12).contains(&interval.count))
        {
            errors.push(FieldError::new(at("interval"), "invalid_interval"));
        }
        for (j, provider) in p.providers.iter().enumerate() {
            if provider.kind.parse::<super::ProviderKind>().is_err() {
                errors.push(FieldError::new(format!("{field}[{i}].providers[{j}].type"), "invalid_value"));
            }
            if provider.id.trim().is_empty() {
                errors.push(FieldError::new(format!("{field}[{i}].providers[{j}].id"), "required"));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_that_are_routes_are_reserved() {
        assert_eq!(key_error("news"), None);
        assert_eq!(key_error("confirm"), Some("reserved_key"));
        assert_eq!(key_error("unsubscribe"), Some("reserved_key"));
        assert_eq!(key_error("has space"), Some("invalid_key"));
        assert_eq!(key_error(""), Some("invalid_key"));
    }

    #[test]
    fn type_accepts_bare_and_tagged_forms() {
        assert_eq!(serde_json::from_value::<AudienceType>(json!("standard")).unwrap(), AudienceType::Standard);
        assert_eq!(
            serde_json::from_value::<AudienceType>(json!({"type": "standard"})).unwrap(),
            AudienceType::Standard
        );
        let paid: AudienceType =
            serde_json::from_value(json!({"type": "paid", "prices": [{"currency": "eur", "amount": 500}]})).unwrap();
        assert_eq!(paid.kind(), crate::domain::AudienceKind::Paid);
        assert!(serde_json::from_value::<AudienceType>(json!("gold")).is_err());
        assert_eq!(serde_json::to_value(AudienceType::Standard).unwrap(), json!({"type": "standard"}));
    }

    #[test]
    fn prices_are_checked_and_normalised() {
        let mut prices: Vec<Price> = serde_json::from_value(json!([
            {"currency": "eur", "amount": 500, "interval": {"period": "month", "count": 1},
             "providers": [{"type": "stripe", "id": "price_123"}]},
            {"id": "p2", "currency": "euro", "amount": -1, "interval": {"period": "week", "count": 1}}
        ]))
        .unwrap();
        let errors: Vec<String> =
            validate_prices(&mut prices, "prices").into_iter().map(|e| e.field + ":" + &e.error).collect();
        assert_eq!(
            errors,
            [
                "prices[1].currency:invalid_currency",
                "prices[1].amount:out_of_range",
                "prices[1].interval:invalid_interval"
            ]
        );
        assert_eq!(prices[0].currency, "EUR");
        assert!(!prices[0].id.is_empty());
        assert!(prices[0].matches("price_123") && prices[0].is_recurring());
    }
}
