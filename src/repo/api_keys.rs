use async_trait::async_trait;
use uuid::Uuid;

use super::row::RowExt;
use super::{ApiKeyRepo, ApiKeyRow, RepoError, RepoResult, SqlRepo, on_db};

fn api_key(r: &impl RowExt) -> sqlx::Result<ApiKeyRow> {
    Ok(ApiKeyRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        name: r.text("name")?,
        prefix: r.text("prefix")?,
        created_at: r.int("created_at")?,
        last_used_at: r.opt_int("last_used_at")?,
        revoked_at: r.opt_int("revoked_at")?,
    })
}

/// Seconds between two writes of `last_used_at` for one key: a busy key must not write per request.
const TOUCH_INTERVAL: i64 = 60;

#[async_trait]
impl ApiKeyRepo for SqlRepo {
    async fn insert_api_key(&self, k: &ApiKeyRow, key_hash: &[u8; 32]) -> RepoResult<()> {
        on_db!(self, p => {
            sqlx::query(
                "INSERT INTO api_keys (store_id, id, name, prefix, key_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(k.store_id)
            .bind(k.id)
            .bind(&k.name)
            .bind(&k.prefix)
            .bind(&key_hash[..])
            .bind(k.created_at)
            .execute(p)
            .await
            .map_err(RepoError::from_write)?;
        });
        Ok(())
    }

    async fn api_keys(&self, store_id: Uuid, after: Option<Uuid>, limit: u32) -> RepoResult<Vec<ApiKeyRow>> {
        on_db!(self, p => {
            let rows = sqlx::query(
                "SELECT store_id, id, name, prefix, created_at, last_used_at, revoked_at FROM api_keys
                 WHERE store_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
            )
            .bind(store_id)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(api_key).collect::<sqlx::Result<_>>()?)
        })
    }

    async fn revoke_api_key(&self, store_id: Uuid, id: Uuid, now: i64) -> RepoResult<bool> {
        on_db!(self, p => {
            let found: Option<Uuid> = sqlx::query_scalar(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE store_id = $1 AND id = $2 RETURNING id",
            )
            .bind(store_id)
            .bind(id)
            .bind(now)
            .fetch_optional(p)
            .await?;
            Ok(found.is_some())
        })
    }

    async fn use_api_key(&self, store_id: Uuid, key_hash: &[u8; 32], now: i64) -> RepoResult<Option<Uuid>> {
        on_db!(self, p => {
            let row = sqlx::query(
                "SELECT id, last_used_at FROM api_keys WHERE store_id = $1 AND key_hash = $2 AND revoked_at IS NULL",
            )
            .bind(store_id)
            .bind(&key_hash[..])
            .fetch_optional(p)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let id = row.uuid("id")?;
            if row.opt_int("last_used_at")?.is_none_or(|t| now - t >= TOUCH_INTERVAL) {
                sqlx::query("UPDATE api_keys SET last_used_at = $3 WHERE store_id = $1 AND id = $2")
                    .bind(store_id)
                    .bind(id)
                    .bind(now)
                    .execute(p)
                    .await?;
            }
            Ok(Some(id))
        })
    }
}
