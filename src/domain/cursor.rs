use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crypto::{b64, sha256, unb64};

/// An opaque keyset cursor: the sort key of the last row served, bound to the query it came from.
/// A cursor of another query, store or sort order is refused instead of silently misapplied.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub after: Vec<Value>,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    a: Vec<Value>,
    f: String,
}

fn fingerprint(scope: &str) -> String {
    b64(&sha256(scope.as_bytes())[..9])
}

impl Cursor {
    /// `scope` names everything the position depends on: route, store, filters and sort.
    pub fn encode(&self, scope: &str) -> String {
        let wire = Wire { a: self.after.clone(), f: fingerprint(scope) };
        b64(&serde_json::to_vec(&wire).expect("cursor values serialise"))
    }

    pub fn decode(text: &str, scope: &str) -> Result<Self, &'static str> {
        let bytes = unb64(text).ok_or("invalid_cursor")?;
        let wire: Wire = serde_json::from_slice(&bytes).map_err(|_| "invalid_cursor")?;
        if wire.f != fingerprint(scope) {
            return Err("cursor_mismatch");
        }
        Ok(Self { after: wire.a })
    }
}

impl Cursor {
    /// For lists ordered by id alone: the id after which the next page starts.
    pub fn after_id(text: &str, scope: &str) -> Result<uuid::Uuid, &'static str> {
        let cursor = Self::decode(text, scope)?;
        cursor.after.first().and_then(Value::as_str).and_then(|s| uuid::Uuid::parse_str(s).ok()).ok_or("invalid_cursor")
    }
}

/// Page size: 50 by default, 1–200.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: u32,
}

impl Page {
    pub const DEFAULT: u32 = 50;
    pub const MAX: u32 = 200;

    pub fn parse(limit: Option<i64>) -> Result<Self, &'static str> {
        match limit {
            None => Ok(Self { limit: Self::DEFAULT }),
            Some(n) if (1..=Self::MAX as i64).contains(&n) => Ok(Self { limit: n as u32 }),
            Some(_) => Err("out_of_range"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_scope_check() {
        let c = Cursor { after: vec![Value::from(17), Value::from("abc")] };
        let text = c.encode("stores:acct1");
        assert_eq!(Cursor::decode(&text, "stores:acct1").unwrap(), c);
        assert_eq!(Cursor::decode(&text, "stores:acct2").unwrap_err(), "cursor_mismatch");
        assert_eq!(Cursor::decode("%%%", "x").unwrap_err(), "invalid_cursor");
    }

    #[test]
    fn limits() {
        assert_eq!(Page::parse(None).unwrap().limit, 50);
        assert!(Page::parse(Some(0)).is_err());
        assert!(Page::parse(Some(201)).is_err());
    }
}
