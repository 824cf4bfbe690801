use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub async fn connect(path: &Path, max_connections: u32) -> anyhow::Result<SqlitePool> {
    // A missing folder is a typo far more often than a wish: say so rather than create it.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        anyhow::bail!(
            "invalid DATABASE_URL: the folder {} does not exist; create it (mkdir -p {0}) or choose another path",
            dir.display()
        );
    }
    private_file(path)?;
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open DATABASE_URL (sqlite {}): {e}", path.display()))?;
    Ok(pool)
}

/// Creates the database file owner-only (0600), or narrows an existing one: it holds personal data.
/// SQLite gives its `-wal` and `-shm` files the mode of the database file.
fn private_file(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let cannot = |e: std::io::Error| anyhow::anyhow!("cannot open DATABASE_URL (sqlite {}): {e}", path.display());
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mode = std::fs::metadata(path).map_err(cannot)?.permissions().mode();
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700)).map_err(cannot)?;
                    for suffix in ["-wal", "-shm"] {
                        let mut side = path.as_os_str().to_owned();
                        side.push(suffix);
                        let _ = std::fs::set_permissions(&side, std::fs::Permissions::from_mode(0o600));
                    }
                }
            }
            Err(e) => return Err(cannot(e)),
        }
    }
    Ok(())
}
