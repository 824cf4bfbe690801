use serde::{Deserialize, Serialize};
use serde_json::Value;

use uuid::Uuid;

use crate::crypto::{b64, sha256, unb64};
use crate::error::FieldError;

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

/// One keyset page of a list: its size and the position after which it starts, both parsed from
/// the request, bound to a scope (route, store, filters, sort). The one paging helper of every list.
#[derive(Debug, Clone)]
pub struct Keyset {
    pub limit: u32,
    /// The sort key of the last row of the previous page.
    pub after: Option<Vec<Value>>,
    scope: String,
}

impl Keyset {
    /// Parses `limit` and `cursor`; both are checked, and every error names its field.
    pub fn parse(limit: Option<i64>, cursor: Option<&str>, scope: String) -> Result<Self, Vec<FieldError>> {
        let mut errors = vec![];
        let page = Page::parse(limit).map_err(|e| errors.push(FieldError::new("limit", e))).ok();
        let after = match cursor.filter(|c| !c.is_empty()) {
            None => None,
            Some(text) => Cursor::decode(text, &scope).map_err(|e| errors.push(FieldError::new("cursor", e))).ok(),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let limit = page.map(|p| p.limit).unwrap_or(Page::DEFAULT);
        Ok(Self { limit, after: after.map(|c| c.after), scope })
    }

    /// For lists ordered by id alone: the id after which the page starts.
    pub fn after_id(&self) -> Result<Option<Uuid>, FieldError> {
        match &self.after {
            None => Ok(None),
            Some(key) => key
                .first()
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
                .map(Some)
                .ok_or_else(|| FieldError::new("cursor", "invalid_cursor")),
        }
    }

    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch(&self) -> u32 {
        self.limit + 1
    }

    /// Cuts the fetched rows to the page and makes the next cursor from the last row kept.
    pub fn page<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> Vec<Value>) -> (Vec<T>, Option<String>) {
        if rows.len() <= self.limit as usize {
            return (rows, None);
        }
        rows.truncate(self.limit as usize);
        let next = rows.last().map(|last| Cursor { after: key(last) }.encode(&self.scope));
        (rows, next)
    }

    /// For a feed that consumers poll: a cursor after the last row on the last page too, and the
    /// cursor sent when nothing newer exists yet, so a poller resumes where it stopped instead of
    /// reading the whole feed again.
    pub fn feed_page<T>(&self, rows: Vec<T>, key: impl Fn(&T) -> Vec<Value>) -> (Vec<T>, Option<String>) {
        let (rows, next) = self.page(rows, &key);
        if next.is_some() {
            return (rows, next);
        }
        let resume = match rows.last() {
            Some(last) => Some(key(last)),
            None => self.after.clone(),
        };
        (rows, resume.map(|after| Cursor { after }.encode(&self.scope)))
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
    fn a_feed_page_always_gives_a_cursor_to_resume_from() {
        let key = |n: &i64| vec![Value::from(*n)];
        let first = Keyset::parse(Some(2), None, "feed".into()).unwrap();
        // More than a page: the usual next cursor.
        let (rows, next) = first.feed_page(vec![1, 2, 3], key);
        assert_eq!((rows, next.clone()), (vec![1, 2], first.page(vec![1, 2, 3], key).1));
        // The last page: a cursor after its last row.
        let (rows, last) = first.feed_page(vec![1], key);
        assert_eq!(rows, vec![1]);
        let resumed = Keyset::parse(Some(2), last.as_deref(), "feed".into()).unwrap();
        assert_eq!(resumed.after, Some(vec![Value::from(1)]));
        // Nothing newer: the cursor sent comes back; nothing at all: none.
        let (rows, again) = resumed.feed_page(Vec::<i64>::new(), key);
        assert!(rows.is_empty());
        assert_eq!(Keyset::parse(Some(2), again.as_deref(), "feed".into()).unwrap().after, resumed.after);
        assert_eq!(first.feed_page(Vec::<i64>::new(), key).1, None);
    }

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
