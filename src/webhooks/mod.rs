//! Outgoing webhooks (CONTRACT §9.1): the Standard Webhooks signature, the address rules that keep
//! the server from being pointed at its own network (SSRF), the HTTP client that enforces them at
//! connect time, and the worker that fans events out to endpoints and delivers them.

mod client;
mod worker;

use std::net::{IpAddr, Ipv4Addr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use client::{SendOutcome, WebhookClient};
pub use worker::{DEFAULT_SCHEDULE_SECS, WebhookSettings, WebhookWorker};

/// The prefix of a signing secret as shown to people (Standard Webhooks).
pub const SECRET_PREFIX: &str = "whsec_";

/// The secret as shown once to the endpoint's owner: `whsec_` and the key in standard base64.
pub fn secret_text(key: &[u8]) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The key inside a `whsec_...` secret.
pub fn secret_key(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text.strip_prefix(SECRET_PREFIX).unwrap_or(text)).ok()
}

/// One signature of the `webhook-signature` header: `v1,` and the base64 HMAC-SHA256 of
/// `"{id}.{timestamp}.{body}"` under the key.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// What a receiver does: true when one of the header's space-separated signatures is the
/// message's under the secret and the timestamp is within `tolerance_secs` of `now`.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> bool {
    let (Some(key), Ok(ts)) = (secret_key(secret), timestamp.parse::<i64>()) else { return false };
    if (now - ts).abs() > tolerance_secs {
        return false;
    }
    let expected = sign(&key, id, ts, body);
    signatures.split(' ').any(|s| crate::crypto::constant_time_eq(s.as_bytes(), expected.as_bytes()))
}

/// Addresses a webhook may not reach unless `WEBHOOKS_ALLOW_PRIVATE=true`: loopback, private,
/// link-local (cloud metadata lives there), shared (CGNAT), unspecified, multicast, broadcast and
/// documentation ranges, and IPv6 forms that embed such an IPv4 address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
                || (seg[0] == 0x0064 && seg[1] == 0xff9b) // NAT64: embeds an IPv4 address
                || seg[0] == 0x2002 // 6to4: embeds an IPv4 address
                || (seg[..6] == [0, 0, 0, 0, 0, 0] && is_internal_v4(Ipv4Addr::from(v6.to_bits() as u32)))
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT), 100.100.100.200 metadata
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

/// Why a webhook URL is refused (the 422 codes of the `url` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlProblem {
    /// Not an absolute http(s) URL with a host.
    Invalid,
    /// http where https is required.
    NotHttps,
    /// The name does not resolve.
    Unresolvable,
    /// It is, or resolves to, an internal address.
    Internal,
}

impl UrlProblem {
    pub fn code(self) -> &'static str {
        match self {
            UrlProblem::Invalid => "invalid_url",
            UrlProblem::NotHttps => "https_required",
            UrlProblem::Unresolvable => "unresolvable_host",
            UrlProblem::Internal => "private_address",
        }
    }
}

/// The URL's rules that need no network: absolute http(s) with a host, no fragment, at most 2000
/// characters; https unless private addresses are allowed (development).
pub fn parse_url(raw: &str, allow_private: bool) -> Result<url::Url, UrlProblem> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 2000 {
        return Err(UrlProblem::Invalid);
    }
    let url = url::Url::parse(raw).map_err(|_| UrlProblem::Invalid)?;
    if url.host().is_none() || url.fragment().is_some() || url.cannot_be_a_base() {
        return Err(UrlProblem::Invalid);
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_private => Ok(url),
        "http" => Err(UrlProblem::NotHttps),
        _ => Err(UrlProblem::Invalid),
    }
}

/// Every rule, resolving the host: refused when any address it resolves to is internal (a name
/// with one public and one private address could be steered to the private one).
pub async fn check_url(raw: &str, allow_private: bool) -> Result<url::Url, UrlProblem> {
    let url = parse_url(raw, allow_private)?;
    if allow_private {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(url::Host::Domain(name)) => match tokio::net::lookup_host((name, port)).await {
            Ok(found) => found.map(|a| a.ip()).collect(),
            Err(_) => return Err(UrlProblem::Unresolvable),
        },
        None => return Err(UrlProblem::Invalid),
    };
    if addrs.is_empty() {
        return Err(UrlProblem::Unresolvable);
    }
    if addrs.into_iter().any(is_internal) {
        return Err(UrlProblem::Internal);
    }
    Ok(url)
}

/// An IPv6 literal of an IPv4-compatible form, for the tests.
#[cfg(test)]
fn v6(text: &str) -> IpAddr {
    IpAddr::V6(text.parse::<std::net::Ipv6Addr>().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of docs/webhooks.md: a receiver computing the same signature from these
    /// inputs has implemented the check correctly.
    #[test]
    fn signature_matches_the_documented_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let timestamp = 1614265330;
        let body = br#"{"test": 2432232314}"#;
        let key = secret_key(secret).unwrap();
        let signature = sign(&key, id, timestamp, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(secret, id, "1614265330", &format!("v1,bm90IGl0 {signature}"), body, 1614265330 + 60, 300));
        assert!(!verify(secret, id, "1614265330", &signature, body, 1614265330 + 301, 300), "too old");
        assert!(!verify(secret, id, "1614265330", &signature, b"{}", 1614265330, 300), "another body");
    }

    #[test]
    fn secrets_round_trip() {
        let key = [7u8; 32];
        let text = secret_text(&key);
        assert!(text.starts_with("whsec_"));
        assert_eq!(secret_key(&text).unwrap(), key);
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in
            ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "100.100.100.200"]
        {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["::1", "fe80::1", "fd00:ec2::254", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "::"] {
            assert!(is_internal(v6(ip)), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "8.8.8.8"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
        assert!(!is_internal(v6("2606:4700:4700::1111")));
    }

    #[tokio::test]
    async fn urls_are_checked() {
        assert_eq!(parse_url("ftp://example.com/", false).unwrap_err(), UrlProblem::Invalid);
        assert_eq!(parse_url("http://example.com/", false).unwrap_err(), UrlProblem::NotHttps);
        assert!(parse_url("http://127.0.0.1:9/", true).is_ok());
        assert_eq!(check_url("https://127.0.0.1/hook", false).await.unwrap_err(), UrlProblem::Internal);
        assert_eq!(check_url("https://[::1]/hook", false).await.unwrap_err(), UrlProblem::Internal);
        assert_eq!(check_url("https://localhost/hook", false).await.unwrap_err(), UrlProblem::Internal);
        assert_eq!(check_url("https://93.184.216.34/hook", false).await.unwrap().host_str(), Some("93.184.216.34"));
    }
}
