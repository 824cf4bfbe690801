//! The zero-setup transport: each mail becomes `<dir>/<outbox id>.eml` (a UUIDv7, so names sort
//! by time), readable by any mail client and by `storecrm mail show ID`, which decodes it.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use uuid::Uuid;

use super::{MailError, Mailer, OutgoingMail, build_message};

#[derive(Debug, Clone)]
pub struct FileMailer {
    dir: PathBuf,
}

impl FileMailer {
    /// Creates `dir` if missing.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        private_dir(dir).map_err(|e| anyhow::anyhow!("cannot create MAIL_DIR {}: {e}", dir.display()))?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn file_name(id: Uuid) -> String {
    format!("{id}.eml")
}

/// A delivered mail of the outbox as the file transport wrote it, decoded (quoted-printable and
/// base64 undone, headers unfolded): `storecrm mail show`, the local mail viewer. None when the
/// folder has no file of that mail.
pub fn read_delivered(dir: &Path, id: Uuid) -> std::io::Result<Option<(PathBuf, OutgoingMail)>> {
    let path = dir.join(file_name(id));
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let message = mail_parser::MessageParser::default()
        .parse(&bytes)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not a mail message"))?;
    let mailbox = |address: Option<&mail_parser::Address>| {
        let first = address.and_then(|a| a.first());
        match (first.and_then(|a| a.name()), first.and_then(|a| a.address())) {
            (Some(name), Some(addr)) => format!("{name} <{addr}>"),
            (_, addr) => addr.unwrap_or_default().to_string(),
        }
    };
    let headers = ["List-Unsubscribe", "List-Unsubscribe-Post"]
        .into_iter()
        .filter_map(|name| message.header_raw(name).map(|v| (name.to_string(), v.trim().to_string())))
        .collect();
    let mail = OutgoingMail {
        from: mailbox(message.from()),
        to: mailbox(message.to()),
        reply_to: message.reply_to().map(|a| mailbox(Some(a))),
        subject: message.subject().unwrap_or_default().to_string(),
        html: message.body_html(0).map(|b| b.into_owned()).unwrap_or_default(),
        text: message.body_text(0).map(|b| b.into_owned()).unwrap_or_default(),
        headers,
        message_id: message.message_id().map(|id| format!("<{id}>")),
    };
    Ok(Some((path, mail)))
}

/// The mail folder, owner-only (0700): its files hold live sign-in codes and confirmation links.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Each file owner-only (0600), whatever the umask.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Writes under a hidden temporary name and renames, so a reader never sees half a file.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let result = (|| {
        // Recreated on demand: a cleaned-out mail directory must not stall the outbox.
        private_dir(dir)?;
        let mut file = create_private(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| path)
}

#[async_trait]
impl Mailer for FileMailer {
    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        let bytes = build_message(mail)?.formatted();
        let dir = self.dir.clone();
        // Named after the outbox mail (from its Message-ID): a resend after a lost acknowledgement
        // rewrites the same file, and `storecrm mail show` finds it.
        let id = mail.message_id.as_deref().and_then(super::outbox::outbox_id).unwrap_or_else(Uuid::now_v7);
        let name = file_name(id);
        // A full disk or a missing directory can be fixed by an operator: worth retrying.
        tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &bytes))
            .await
            .map_err(|e| MailError::Transient(format!("file transport task failed: {e}")))?
            .map(drop)
            .map_err(|e| MailError::Transient(format!("cannot write the .eml file: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the viewer shows is what was sent: soft line breaks and encodings undone, so a long
    /// link or a token can be read (and grepped) whole.
    #[tokio::test]
    async fn a_written_mail_reads_back_decoded_under_its_outbox_id() {
        let dir = std::env::temp_dir().join(format!("storecrm-file-mailer-{}", Uuid::now_v7()));
        let mailer = FileMailer::new(&dir).unwrap();
        let id = Uuid::now_v7();
        let link = format!("https://shop.example/confirm?token={}", "x".repeat(120));
        let mail = OutgoingMail {
            message_id: Some(super::super::outbox::message_id(id, "Shop <news@shop.example>")),
            from: "Shop <news@shop.example>".into(),
            to: "ann@example.com".into(),
            reply_to: None,
            subject: "Confirm Grüße".into(),
            html: format!("<p>Grüße: <a href=\"{link}\">confirm</a></p>"),
            text: format!("Grüße: {link}"),
            headers: vec![("List-Unsubscribe".into(), "<https://shop.example/u/1>".into())],
        };
        mailer.send(&mail).await.unwrap();
        let raw = std::fs::read_to_string(dir.join(format!("{id}.eml"))).unwrap();
        assert!(!raw.contains(&link), "the file itself is encoded (that is why the viewer exists)");
        let (path, read) = read_delivered(&dir, id).unwrap().expect("the file of that mail");
        assert_eq!(path, dir.join(format!("{id}.eml")));
        assert_eq!((read.from.as_str(), read.to.as_str()), ("Shop <news@shop.example>", "ann@example.com"));
        assert_eq!(read.subject, mail.subject);
        assert_eq!(read.text.trim_end(), mail.text);
        assert!(read.html.contains(&link), "{}", read.html);
        assert_eq!(read.headers, vec![("List-Unsubscribe".to_string(), "<https://shop.example/u/1>".to_string())]);
        assert_eq!(read.message_id, mail.message_id);
        assert!(read_delivered(&dir, Uuid::now_v7()).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
