//! The zero-setup transport: each mail becomes `<dir>/<uuidv7>.eml`, readable by any mail client.

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
        let name = format!("{}.eml", Uuid::now_v7());
        // A full disk or a missing directory can be fixed by an operator: worth retrying.
        tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &bytes))
            .await
            .map_err(|e| MailError::Transient(format!("file transport task failed: {e}")))?
            .map(drop)
            .map_err(|e| MailError::Transient(format!("cannot write the .eml file: {e}")))
    }
}
