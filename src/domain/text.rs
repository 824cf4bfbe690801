use serde::{Deserialize, Deserializer};

/// A display name: trimmed, 1–200 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        let s = input.trim();
        if s.is_empty() {
            return Err("required");
        }
        if s.chars().count() > 200 {
            return Err("too_long");
        }
        if s.chars().any(char::is_control) {
            return Err("invalid_characters");
        }
        Ok(Self(s.to_string()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// An account password: 8–1024 bytes (the cap keeps hashing cost bounded).
pub struct Password(String);

impl Password {
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        match input.len() {
            0 => Err("required"),
            1..8 => Err("too_short"),
            8..=1024 => Ok(Self(input.to_string())),
            _ => Err("too_long"),
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// For `Option<Option<T>>` fields of an update: absent → `None`, `null` → `Some(None)`.
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Deserialize::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_names() {
        assert_eq!(Password::parse("short").unwrap_err(), "too_short");
        assert!(Password::parse("long enough").is_ok());
        assert_eq!(Name::parse("   ").unwrap_err(), "required");
        assert_eq!(Name::parse(" Shop ").unwrap().into_inner(), "Shop");
    }
}
