//! Where a browser may call from and where a store's mail may link to (CONTRACT §1 CORS, §6), and
//! the client address that rate limits count (§4 "Limits").

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use url::{Host, Url};

/// An `allowed_origins` entry: an origin (`https://shop.example`, `http://localhost:3000`), or
/// `https://*.shop.example` for every subdomain of `shop.example` (not the domain itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    /// Lower-cased (punycode) host, without the `*.` of a wildcard.
    host: String,
    wildcard: bool,
    /// `None` for the scheme's default port.
    port: Option<u16>,
}

impl OriginPattern {
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        const BAD: &str = "invalid_origin";
        let s = input.trim().trim_end_matches('/');
        let (scheme, rest) = s.split_once("://").ok_or(BAD)?;
        if !matches!(scheme, "http" | "https") {
            return Err(BAD);
        }
        let (wildcard, rest) = match rest.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', '*', '\\']) {
            return Err(BAD);
        }
        let url = Url::parse(&format!("{scheme}://{rest}")).map_err(|_| BAD)?;
        let host = match url.host() {
            Some(Host::Domain(d)) => d.to_string(),
            Some(Host::Ipv4(ip)) if !wildcard => ip.to_string(),
            Some(Host::Ipv6(ip)) if !wildcard => format!("[{ip}]"),
            _ => return Err(BAD),
        };
        // A wildcard over a bare top-level name (`*.com`) would allow half the web.
        if wildcard && !host.contains('.') {
            return Err(BAD);
        }
        Ok(Self { scheme: scheme.to_string(), host, wildcard, port: url.port() })
    }

    /// Whether a serialized origin (`Origin` header, or a URL's origin) is covered.
    pub fn matches(&self, origin: &url::Origin) -> bool {
        let url::Origin::Tuple(scheme, host, port) = origin else { return false };
        let default = if scheme == "https" { 443 } else { 80 };
        if *scheme != self.scheme || *port != self.port.unwrap_or(default) {
            return false;
        }
        let host = match host {
            Host::Ipv6(ip) => format!("[{ip}]"),
            other => other.to_string(),
        };
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, if self.wildcard { "*." } else { "" }, self.host)?;
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// The origin of an `Origin` request header; `None` for `null` or anything unparsable.
pub fn request_origin(header: &str) -> Option<url::Origin> {
    let origin = Url::parse(header.trim()).ok()?.origin();
    origin.is_tuple().then_some(origin)
}

/// Why a link target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// Not an absolute http(s) URL of reasonable length, or it carries credentials.
    Invalid,
    /// Its origin is not among the store's `allowed_origins`.
    NotAllowed,
}

impl LinkError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Invalid => "invalid_url",
            Self::NotAllowed => "origin_not_allowed",
        }
    }
}

/// A URL the store may put in mail or redirect to: http(s), and on one of `allowed` origins; with
/// none configured, only `http://localhost[:port]` and `http://127.0.0.1[:port]` (development).
pub fn link_target(input: &str, allowed: &[OriginPattern]) -> Result<Url, LinkError> {
    if input.len() > 2000 || input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(LinkError::Invalid);
    }
    let url = Url::parse(input).map_err(|_| LinkError::Invalid)?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(LinkError::Invalid);
    }
    let origin = url.origin();
    let ok = if allowed.is_empty() {
        url.scheme() == "http"
            && match url.host() {
                Some(Host::Domain(d)) => d == "localhost",
                Some(Host::Ipv4(ip)) => ip.is_loopback() && ip.octets() == [127, 0, 0, 1],
                _ => false,
            }
    } else {
        allowed.iter().any(|p| p.matches(&origin))
    };
    if ok { Ok(url) } else { Err(LinkError::NotAllowed) }
}

/// The client address as rate limits count it: IPv4 as is, IPv6 by its /64 (one subscriber line
/// gets a whole /64, so per-address limits would otherwise be trivially sidestepped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(IpAddr);

impl ClientAddr {
    pub fn new(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    Self(IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)))
                }
            },
            v4 => Self(v4),
        }
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(ip) => write!(f, "{ip}"),
            IpAddr::V6(ip) => write!(f, "{ip}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> url::Origin {
        request_origin(s).unwrap()
    }

    #[test]
    fn patterns_parse_and_print() {
        assert_eq!(OriginPattern::parse("https://Shop.Example/").unwrap().to_string(), "https://shop.example");
        assert_eq!(OriginPattern::parse("http://localhost:3000").unwrap().to_string(), "http://localhost:3000");
        assert_eq!(OriginPattern::parse("https://shop.example:443").unwrap().to_string(), "https://shop.example");
        assert_eq!(OriginPattern::parse("https://*.shop.example").unwrap().to_string(), "https://*.shop.example");
        for bad in ["shop.example", "https://x.com/path", "ftp://x.com", "https://*.com", "https://a@b.com", "*", ""] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_match_exactly_or_by_subdomain() {
        let exact = OriginPattern::parse("https://shop.example").unwrap();
        assert!(exact.matches(&origin("https://shop.example")));
        assert!(exact.matches(&origin("https://SHOP.example:443")));
        assert!(!exact.matches(&origin("http://shop.example")));
        assert!(!exact.matches(&origin("https://shop.example:8443")));
        assert!(!exact.matches(&origin("https://eu.shop.example")));
        let wild = OriginPattern::parse("https://*.shop.example").unwrap();
        assert!(wild.matches(&origin("https://eu.shop.example")));
        assert!(wild.matches(&origin("https://a.b.shop.example")));
        assert!(!wild.matches(&origin("https://shop.example")));
        assert!(!wild.matches(&origin("https://evilshop.example")));
        assert!(!wild.matches(&origin("https://shop.example.evil.example")));
    }

    #[test]
    fn link_targets() {
        let none: &[OriginPattern] = &[];
        assert!(link_target("http://localhost:3000/confirm", none).is_ok());
        assert!(link_target("http://127.0.0.1:8080/c?x=1", none).is_ok());
        assert_eq!(link_target("https://evil.example/login", none), Err(LinkError::NotAllowed));
        assert_eq!(link_target("https://localhost/x", none), Err(LinkError::NotAllowed));
        assert_eq!(link_target("http://localhost.evil.example/", none), Err(LinkError::NotAllowed));
        assert_eq!(link_target("javascript:alert(1)", none), Err(LinkError::Invalid));
        assert_eq!(link_target("http://user:pw@localhost/", none), Err(LinkError::Invalid));
        assert_eq!(link_target("/relative", none), Err(LinkError::Invalid));
        let shop = [OriginPattern::parse("https://shop.example").unwrap()];
        assert!(link_target("https://shop.example/confirm", &shop).is_ok());
        assert_eq!(link_target("http://localhost:3000/", &shop), Err(LinkError::NotAllowed));
        assert_eq!(link_target("https://shop.example.evil.example/", &shop), Err(LinkError::NotAllowed));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let a = ClientAddr::new("2001:db8:1:2::1".parse().unwrap());
        let b = ClientAddr::new("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = ClientAddr::new("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(ClientAddr::new("::ffff:10.0.0.1".parse().unwrap()).to_string(), "10.0.0.1");
    }
}
