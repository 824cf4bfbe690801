use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// Only a connection idle this long is pinged before use. sqlx pings every one by default, which
/// doubles the round trips of a one-query request; a connection in steady use is known to be alive.
const PING_IF_IDLE: Duration = Duration::from_secs(30);

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
        .map_err(|e| anyhow::anyhow!("cannot connect to DATABASE_URL (postgres): {e}"))?;
    Ok(pool)
}
