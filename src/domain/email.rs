use std::fmt;

/// A syntactically valid email address: trimmed, domain lower-cased.
/// `key()` is the fully lower-cased form that uniqueness is checked on.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(input: &str) -> Result<Self, &'static str> {
        let s = super::text::trimmed_within(input, Self::MAX_LEN)?;
        if s.is_empty() {
            return Err("required");
        }
        if s.len() > Self::MAX_LEN {
            return Err("too_long");
        }
        let (local, domain) = s.rsplit_once('@').ok_or("invalid_email")?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) || !c.is_ascii());
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !local_ok || !domain_ok || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("invalid_email");
        }
        Ok(Self(format!("{local}@{}", domain.to_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The uniqueness key: the whole address lower-cased.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Email;

    #[test]
    fn normalises_and_keys() {
        let e = Email::parse("  Ann.Lee@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "Ann.Lee@example.com");
        assert_eq!(e.key(), "ann.lee@example.com");
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "plain", "@x.com", "a@", "a@b", "a b@x.com", "a@x..com", ".a@x.com", "a@-x.com", "a@x_y.com"] {
            assert!(Email::parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(Email::parse(&format!("{}@x.com", "a".repeat(65))), Err("invalid_email"));
        assert_eq!(Email::parse(&format!("a@{}.com", "b".repeat(260))), Err("too_long"));
    }
}
