use serde::{Deserialize, Deserializer};

/// A display name: trimmed, 1–200 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name(String);

/// `input` without surrounding whitespace, refused as `too_long` when the input *as sent* has
/// more than `max` characters: the API document's `maxLength` counts what the client sends, so
/// whitespace that would be trimmed away does not buy room.
pub fn trimmed_within(input: &str, max: usize) -> Result<&str, &'static str> {
    if input.chars().count() > max {
        return Err("too_long");
    }
    Ok(input.trim())
}

impl Name {
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        let s = trimmed_within(input, 200)?;
        if s.is_empty() {
            return Err("required");
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

    /// Found by schemathesis: a name of 201+ characters sent with whitespace around it was
    /// trimmed to 200 and accepted, though the API document says `maxLength: 200`.
    #[test]
    fn limits_count_what_was_sent() {
        let padded = format!(" \u{2028}{}", "n".repeat(199));
        assert_eq!(padded.chars().count(), 201);
        assert_eq!(Name::parse(&padded).err(), Some("too_long"), "whitespace buys no room");
        assert_eq!(Name::parse(&format!(" {} ", "n".repeat(198))).map(Name::into_inner), Ok("n".repeat(198)));
        assert_eq!(trimmed_within("  a  ", 5), Ok("a"));
        assert_eq!(trimmed_within("  a   ", 5), Err("too_long"));
        assert!(crate::domain::Email::parse(&format!("  {}@example.com", "a".repeat(60))).is_ok());
        let padded_email = format!("{}{}@example.com", " ".repeat(200), "a".repeat(60));
        assert_eq!(crate::domain::Email::parse(&padded_email).err(), Some("too_long"));
    }
}
