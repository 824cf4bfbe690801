//! SMTP through lettre's pooled async transport, configured from one URL:
//! `smtp://user:pass@host:587` (STARTTLS required), `smtps://user:pass@host:465` (implicit TLS),
//! `smtp://host:1025?tls=none` (plain, for a local relay). `tls=opportunistic` is accepted too.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{MailError, Mailer, OutgoingMail, build_message};
use crate::config::Secret;

/// Per network operation; well under the outbox lease, so a hung server cannot outlive it.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtps://`: TLS from the first byte.
    Implicit,
    /// `smtp://` (default): STARTTLS, refusing to continue without it.
    StartTls,
    /// `?tls=opportunistic`: STARTTLS when the server offers it.
    Opportunistic,
    /// `?tls=none`: plain text.
    None,
}

/// A parsed `SMTP_URL`; `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub credentials: Option<(String, Secret)>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or("has a bad %-escape in its user or password")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "has a user or password that is not UTF-8".to_string())
}

impl SmtpSettings {
    /// Errors name the problem, never the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or("must start with smtp:// or smtps://")?;
        let rest = rest.split('#').next().unwrap_or_default();
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = before_query.split('/').next().unwrap_or_default();
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };

        let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("has an unclosed [ in its host")?;
            (host, after.strip_prefix(':'))
        } else {
            match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() {
            return Err("has no host".into());
        }

        let mut tls_param = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("tls", value)) => tls_param = Some(value),
                _ => return Err("accepts only the query parameter tls=required|opportunistic|none".into()),
            }
        }
        let tls = match (scheme, tls_param) {
            ("smtps", None) => SmtpTls::Implicit,
            ("smtps", Some(_)) => return Err("smtps:// is always implicit TLS: drop the tls parameter".into()),
            ("smtp", None | Some("required")) => SmtpTls::StartTls,
            ("smtp", Some("opportunistic")) => SmtpTls::Opportunistic,
            ("smtp", Some("none")) => SmtpTls::None,
            ("smtp", Some(_)) => return Err("tls must be required, opportunistic or none".into()),
            _ => return Err("must start with smtp:// or smtps://".into()),
        };
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or("has an invalid port")?,
            None => match tls {
                SmtpTls::Implicit => 465,
                SmtpTls::StartTls | SmtpTls::Opportunistic => 587,
                SmtpTls::None => 25,
            },
        };
        let credentials = match userinfo {
            None => None,
            Some(userinfo) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                Some((percent_decode(user)?, Secret::new(percent_decode(pass)?)))
            }
        };
        Ok(Self { host: host.to_string(), port, tls, credentials })
    }
}

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    settings: SmtpSettings,
}

impl SmtpMailer {
    /// Must run inside a Tokio runtime (lettre's pool starts a cleanup task).
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let settings = SmtpSettings::parse(url).map_err(|e| anyhow::anyhow!("invalid SMTP_URL: {e}"))?;
        Self::new(settings)
    }

    pub fn new(settings: SmtpSettings) -> anyhow::Result<Self> {
        let params = || {
            TlsParameters::new(settings.host.clone()).map_err(|e| anyhow::anyhow!("invalid SMTP_URL: TLS setup: {e}"))
        };
        let tls = match settings.tls {
            SmtpTls::Implicit => Tls::Wrapper(params()?),
            SmtpTls::StartTls => Tls::Required(params()?),
            SmtpTls::Opportunistic => Tls::Opportunistic(params()?),
            SmtpTls::None => Tls::None,
        };
        if settings.tls == SmtpTls::None && settings.credentials.is_some() {
            tracing::warn!(host = %settings.host, "SMTP credentials will cross the network unencrypted (tls=none)");
        }
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.clone())
            .port(settings.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        if let Some((user, pass)) = &settings.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), pass.expose().to_string()));
        }
        Ok(Self { transport: builder.build(), settings })
    }

    /// `host:port (tls)`, for logs.
    pub fn describe(&self) -> String {
        format!("{}:{} ({:?})", self.settings.host, self.settings.port, self.settings.tls)
    }
}

fn classify(e: &lettre::transport::smtp::Error) -> MailError {
    // Only a 5xx answer is permanent; refused connections, timeouts, TLS trouble and 4xx are not.
    if e.is_permanent() { MailError::Permanent(e.to_string()) } else { MailError::Transient(e.to_string()) }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        let message = build_message(mail)?;
        self.transport.send(message).await.map(drop).map_err(|e| classify(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starttls_is_the_default_and_credentials_are_decoded() {
        let s = SmtpSettings::parse("smtp://me%40shop.com:p%3Ass%20w@mail.example.com").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls), ("mail.example.com", 587, SmtpTls::StartTls));
        let (user, pass) = s.credentials.unwrap();
        assert_eq!((user.as_str(), pass.expose()), ("me@shop.com", "p:ss w"));
    }

    #[test]
    fn schemes_tls_modes_and_ports() {
        let s = SmtpSettings::parse("smtps://u:p@smtp.example.com").unwrap();
        assert_eq!((s.port, s.tls), (465, SmtpTls::Implicit));
        let s = SmtpSettings::parse("smtp://127.0.0.1:1025?tls=none").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls, s.credentials), ("127.0.0.1", 1025, SmtpTls::None, None));
        let s = SmtpSettings::parse("smtp://[::1]:2525/?tls=opportunistic").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls), ("::1", 2525, SmtpTls::Opportunistic));
        assert_eq!(SmtpSettings::parse("smtp://relay?tls=none").unwrap().port, 25);
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for url in [
            "http://mx.invalid",
            "smtp://",
            "smtp://u:secret@mx.invalid:0",
            "smtp://u:secret@mx.invalid:99999",
            "smtp://mx.invalid?tls=maybe",
            "smtp://mx.invalid?timeout=3",
            "smtps://mx.invalid?tls=none",
            "smtp://u:sec%zzret@mx.invalid",
        ] {
            let err = SmtpSettings::parse(url).unwrap_err();
            assert!(!err.contains("secret") && !err.contains("mx.invalid"), "{url}: {err}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let s = SmtpSettings::parse("smtp://user:hunter2@mail.example.com").unwrap();
        let shown = format!("{s:?}");
        assert!(shown.contains("user") && !shown.contains("hunter2"), "{shown}");
    }
}
