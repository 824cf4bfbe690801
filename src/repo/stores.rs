use async_trait::async_trait;
use sqlx::types::Json;
use uuid::Uuid;

use super::row::RowExt;
use super::{BeginWrite, RepoResult, SessionMembership, SqlRepo, StoreRepo, StoreRow, on_db};

fn store(r: &impl RowExt) -> sqlx::Result<StoreRow> {
    Ok(StoreRow {
        id: r.uuid("id")?,
        name: r.text("name")?,
        from_email: r.opt_text("from_email")?,
        from_name: r.opt_text("from_name")?,
        allowed_origins: r.strings("allowed_origins")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

#[async_trait]
impl StoreRepo for SqlRepo {
    async fn create_store(&self, s: &StoreRow, owner: Uuid) -> RepoResult<()> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "INSERT INTO stores (id, name, from_email, from_name, allowed_origins, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(s.id)
            .bind(&s.name)
            .bind(&s.from_email)
            .bind(&s.from_name)
            .bind(Json(&s.allowed_origins))
            .bind(s.created_at)
            .bind(s.updated_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO store_members (store_id, account_id, role, created_at) VALUES ($1, $2, 'owner', $3)")
                .bind(s.id)
                .bind(owner)
                .bind(s.created_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    async fn store_by_id(&self, id: Uuid) -> RepoResult<Option<StoreRow>> {
        on_db!(self, p => {
            let row = sqlx::query(
                "SELECT id, name, from_email, from_name, allowed_origins, created_at, updated_at
                 FROM stores WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await?;
            Ok(row.map(|r| store(&r)).transpose()?)
        })
    }

    async fn update_store(&self, s: &StoreRow) -> RepoResult<()> {
        on_db!(self, p => {
            sqlx::query(
                "UPDATE stores SET name = $2, from_email = $3, from_name = $4, allowed_origins = $5, updated_at = $6
                 WHERE id = $1",
            )
            .bind(s.id)
            .bind(&s.name)
            .bind(&s.from_email)
            .bind(&s.from_name)
            .bind(Json(&s.allowed_origins))
            .bind(s.updated_at)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    async fn stores_of_account(
        &self,
        account_id: Uuid,
        after: Option<Uuid>,
        limit: u32,
    ) -> RepoResult<Vec<(StoreRow, String)>> {
        on_db!(self, p => {
            let rows = sqlx::query(
                "SELECT s.id, s.name, s.from_email, s.from_name, s.allowed_origins, s.created_at, s.updated_at, m.role
                 FROM store_members m JOIN stores s ON s.id = m.store_id
                 WHERE m.account_id = $1 AND ($2 IS NULL OR m.store_id > $2)
                 ORDER BY m.store_id LIMIT $3",
            )
            .bind(account_id)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(|r| Ok((store(r)?, r.text("role")?))).collect::<sqlx::Result<_>>()?)
        })
    }

    async fn membership_via_session(
        &self,
        session_id: Uuid,
        account_id: Uuid,
        store_id: Uuid,
    ) -> RepoResult<SessionMembership> {
        on_db!(self, p => {
            let row = sqlx::query(
                "SELECT m.role AS role FROM account_sessions s
                 LEFT JOIN store_members m ON m.account_id = s.account_id AND m.store_id = $3
                 WHERE s.id = $1 AND s.account_id = $2 AND s.revoked_at IS NULL",
            )
            .bind(session_id)
            .bind(account_id)
            .bind(store_id)
            .fetch_optional(p)
            .await?;
            Ok(match row {
                None => SessionMembership::SessionDead,
                Some(r) => match r.opt_text("role")? {
                    None => SessionMembership::NotMember,
                    Some(role) => SessionMembership::Member { role },
                },
            })
        })
    }
}
