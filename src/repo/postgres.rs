use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// Only a connection idle this long is pinged before use. sqlx pings every one by default, which
/// doubles the round trips of a one-query request; a connection in steady use is known to be alive.
pub(super) const PING_IF_IDLE: Duration = Duration::from_secs(30);

pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect(url)
        .await
        .map_err(|e| match e.as_database_error().and_then(|d| d.code()).as_deref() {
            // invalid_catalog_name: the server is there, the database is not.
            Some("3D000") => {
                let name = url.rsplit('/').next().unwrap_or_default().split('?').next().unwrap_or_default();
                anyhow::anyhow!(
                    "the database {name:?} of DATABASE_URL does not exist: create it (createdb {name}) or fix the URL"
                )
            }
            _ => anyhow::anyhow!("cannot connect to DATABASE_URL (postgres): {e}"),
        })?;
    Ok(pool)
}
