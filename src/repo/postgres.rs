use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

use super::BeginWrite;

pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to DATABASE_URL (postgres): {e}"))?;
    Ok(pool)
}

impl BeginWrite for PgPool {
    type Database = sqlx::Postgres;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.begin().await
    }
    fn for_update(&self) -> &'static str {
        " FOR UPDATE"
    }
}
