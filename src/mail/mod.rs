//! Outgoing mail: the message type the outbox stores, the `Mailer` trait with its SMTP and
//! file transports, the outbox worker that delivers with retries, and template rendering.
//!
//! Nothing here is called inside a request: services write an outbox row in their own
//! transaction (`repo::NewOutboxMail`) and the worker sends it later.

use std::sync::Arc;

use async_trait::async_trait;
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use serde::{Deserialize, Serialize};

pub mod file;
pub mod outbox;
pub mod render;
pub mod smtp;

pub use file::FileMailer;
pub use outbox::{OutboxSettings, OutboxWorker};
pub use smtp::SmtpMailer;

/// One mail as stored in the outbox (JSON) and handed to a transport.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutgoingMail {
    /// `"Name <addr>"` or `"addr"`.
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub reply_to: Option<String>,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// Extra headers, e.g. `List-Unsubscribe`; they may not replace the ones built from the fields.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// `<id@domain>`; the outbox sets it from the mail's id when it sends, so a retry after a lost
    /// acknowledgement carries the same Message-ID (receivers and tests can tell a duplicate).
    /// None: a random one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MailError {
    /// Worth retrying: the server is unreachable, busy, or answered 4xx.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying the same mail as-is is not expected to help: a 5xx answer or an unbuildable message.
    #[error("permanent: {0}")]
    Permanent(String),
}

#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError>;
}

/// SMTP when `SMTP_URL` is set, else `.eml` files in `MAIL_DIR` (created if missing).
/// Call it inside a Tokio runtime: the SMTP connection pool starts a task.
pub fn mailer_from_config(config: &crate::config::Config) -> anyhow::Result<Arc<dyn Mailer>> {
    Ok(match &config.smtp_url {
        Some(url) => {
            let mailer = SmtpMailer::from_url(url.expose())?;
            tracing::info!(smtp = %mailer.describe(), "mail goes out over SMTP");
            Arc::new(mailer)
        }
        None => {
            let mailer = FileMailer::new(&config.mail_dir)?;
            tracing::info!(dir = %config.mail_dir.display(), "SMTP_URL unset: mail is written as .eml files");
            Arc::new(mailer)
        }
    })
}

/// The lower-cased address of a recipient (`"Name <a@b>"` → `"a@b"`), the outbox's `to_key`.
pub fn address_key(recipient: &str) -> String {
    match recipient.parse::<Mailbox>() {
        Ok(mailbox) => mailbox.email.to_string().to_lowercase(),
        Err(_) => recipient.trim().to_lowercase(),
    }
}

/// `Name <addr>` for a From header. The name loses characters that could end it early, and is
/// quoted when it holds RFC 5322 specials: unquoted, `Smith, Jones` would read as two mailboxes.
pub fn mailbox_display(name: &str, email: &str) -> String {
    let name: String = name.chars().filter(|c| !c.is_control() && !matches!(c, '<' | '>' | '"' | '\\')).collect();
    let name = name.trim();
    if name.is_empty() {
        email.to_string()
    } else if name.contains(['(', ')', ',', '.', ':', ';', '@', '[', ']']) {
        format!("\"{name}\" <{email}>")
    } else {
        format!("{name} <{email}>")
    }
}

/// Headers the message builder sets from `OutgoingMail`'s fields or from the MIME structure.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
];

fn mailbox(field: &str, value: &str) -> Result<Mailbox, MailError> {
    // The address itself stays out of the error: it ends up in logs and in `last_error`.
    value.parse().map_err(|_| MailError::Permanent(format!("invalid {field} address")))
}

fn extra_header(name: &str, value: &str) -> Result<HeaderValue, MailError> {
    let name_ok = !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
    if !name_ok || RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(MailError::Permanent(format!("header {name:?} is not allowed")));
    }
    // A line break in a value would let it smuggle in further headers.
    if value.contains(['\r', '\n']) {
        return Err(MailError::Permanent(format!("header {name} has a line break in its value")));
    }
    let name = HeaderName::new_from_ascii(name.to_string())
        .map_err(|_| MailError::Permanent(format!("header {name:?} is not allowed")))?;
    Ok(HeaderValue::new(name, value.to_string()))
}

/// The MIME message: multipart/alternative (text/plain, then text/html) plus the extra headers.
pub fn build_message(mail: &OutgoingMail) -> Result<Message, MailError> {
    let mut builder = Message::builder()
        .from(mailbox("from", &mail.from)?)
        .to(mailbox("to", &mail.to)?)
        .subject(mail.subject.clone())
        .message_id(mail.message_id.clone());
    if let Some(reply_to) = &mail.reply_to {
        builder = builder.reply_to(mailbox("reply-to", reply_to)?);
    }
    for (name, value) in &mail.headers {
        builder = builder.raw_header(extra_header(name, value)?);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(mail.text.clone(), mail.html.clone()))
        .map_err(|e| MailError::Permanent(format!("cannot build the message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail() -> OutgoingMail {
        OutgoingMail {
            message_id: None,
            from: "Shop <shop@example.com>".into(),
            to: "Ann <Ann@Example.com>".into(),
            reply_to: Some("help@example.com".into()),
            subject: "Hello".into(),
            html: "<p>Hi</p>".into(),
            text: "Hi".into(),
            headers: vec![("List-Unsubscribe".into(), "<https://example.com/u/1>".into())],
        }
    }

    #[test]
    fn builds_multipart_with_extra_headers() {
        let raw = String::from_utf8(build_message(&mail()).unwrap().formatted()).unwrap();
        assert!(raw.contains("List-Unsubscribe: <https://example.com/u/1>\r\n"), "{raw}");
        assert!(raw.contains("Content-Type: multipart/alternative"), "{raw}");
        assert!(raw.contains("text/plain") && raw.contains("text/html"), "{raw}");
    }

    #[test]
    fn an_outbox_mail_keeps_one_message_id_across_attempts() {
        let mut m = mail();
        let id = uuid::Uuid::now_v7();
        let simple = id.simple();
        m.message_id = Some(outbox::message_id(id, &m.from));
        assert_eq!(m.message_id.as_deref(), Some(format!("<{simple}@example.com>").as_str()));
        for _ in 0..2 {
            let raw = String::from_utf8(build_message(&m).unwrap().formatted()).unwrap();
            assert!(raw.contains(&format!("Message-ID: <{simple}@example.com>\r\n")), "{raw}");
        }
        assert_eq!(outbox::message_id(id, "no-reply"), format!("<{simple}@storecrm.invalid>"));
    }

    #[test]
    fn refuses_header_injection_and_reserved_names() {
        let mut m = mail();
        m.headers = vec![("X-Note".into(), "a\r\nBcc: evil@example.com".into())];
        assert!(matches!(build_message(&m), Err(MailError::Permanent(_))));
        m.headers = vec![("Subject".into(), "other".into())];
        assert!(matches!(build_message(&m), Err(MailError::Permanent(_))));
        m.headers = vec![("Bad Name".into(), "x".into())];
        assert!(matches!(build_message(&m), Err(MailError::Permanent(_))));
    }

    #[test]
    fn bad_addresses_are_permanent_and_not_echoed() {
        let mut m = mail();
        m.to = "not an address".into();
        let err = build_message(&m).unwrap_err();
        assert_eq!(err, MailError::Permanent("invalid to address".into()));
    }

    #[test]
    fn display_names_with_specials_still_build() {
        for name in ["Smith, Jones & Co", "J. R. Shop", "A (b) c: d; e@f [g]", "<\"Q\\\">", "Plain Shop", "Café Ümlaut"]
        {
            let mut m = mail();
            m.from = mailbox_display(name, "shop@example.com");
            let raw = String::from_utf8(build_message(&m).unwrap().formatted()).unwrap();
            assert!(raw.contains("shop@example.com"), "{name}: {raw}");
        }
        assert_eq!(mailbox_display("Shop & Co", "a@b.example"), "Shop & Co <a@b.example>");
        assert_eq!(mailbox_display("Smith, Jones", "a@b.example"), "\"Smith, Jones\" <a@b.example>");
        assert_eq!(mailbox_display(" <> ", "a@b.example"), "a@b.example");
    }

    #[test]
    fn address_key_is_the_lowercased_address() {
        assert_eq!(address_key("Ann <Ann@Example.com>"), "ann@example.com");
        assert_eq!(address_key("Bob@Example.com"), "bob@example.com");
    }
}
