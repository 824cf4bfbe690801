//! Store API keys, stored as hashes.

use uuid::Uuid;

use super::{ApiKeyRow, RepoResult, Row, Sql, Tx};

fn api_key(r: &Row) -> sqlx::Result<ApiKeyRow> {
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

/// A live key: its id and when it was last recorded as used.
pub struct LiveKey {
    pub id: Uuid,
    pub last_used_at: Option<i64>,
}

impl Tx {
    pub async fn insert_api_key(&mut self, k: &ApiKeyRow, key_hash: &[u8; 32]) -> RepoResult<()> {
        let sql = Sql::new(
            "INSERT INTO api_keys (store_id, id, name, prefix, key_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(k.store_id)
        .bind(k.id)
        .bind(&k.name)
        .bind(&k.prefix)
        .bind(&key_hash[..])
        .bind(k.created_at);
        self.execute(sql).await?;
        Ok(())
    }

    pub async fn api_keys(&mut self, store_id: Uuid, after: Option<Uuid>, limit: u32) -> RepoResult<Vec<ApiKeyRow>> {
        let sql = Sql::new(
            "SELECT store_id, id, name, prefix, created_at, last_used_at, revoked_at FROM api_keys
             WHERE store_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
        )
        .bind(store_id)
        .bind(after)
        .bind(limit);
        Ok(self.fetch_all(sql).await?.iter().map(api_key).collect::<sqlx::Result<_>>()?)
    }

    /// False when the store has no such key.
    pub async fn revoke_api_key(&mut self, store_id: Uuid, id: Uuid, now: i64) -> RepoResult<bool> {
        let sql = Sql::new(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE store_id = $1 AND id = $2 RETURNING id",
        )
        .bind(store_id)
        .bind(id)
        .bind(now);
        Ok(self.fetch_optional(sql).await?.is_some())
    }

    pub async fn live_api_key(&mut self, store_id: Uuid, key_hash: &[u8; 32]) -> RepoResult<Option<LiveKey>> {
        let sql = Sql::new(
            "SELECT id, last_used_at FROM api_keys WHERE store_id = $1 AND key_hash = $2 AND revoked_at IS NULL",
        )
        .bind(store_id)
        .bind(&key_hash[..]);
        let Some(row) = self.fetch_optional(sql).await? else { return Ok(None) };
        Ok(Some(LiveKey { id: row.uuid("id")?, last_used_at: row.opt_int("last_used_at")? }))
    }

    pub async fn touch_api_key(&mut self, store_id: Uuid, id: Uuid, now: i64) -> RepoResult<()> {
        let sql = Sql::new("UPDATE api_keys SET last_used_at = $3 WHERE store_id = $1 AND id = $2")
            .bind(store_id)
            .bind(id)
            .bind(now);
        self.execute(sql).await?;
        Ok(())
    }
}
