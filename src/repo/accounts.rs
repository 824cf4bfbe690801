use async_trait::async_trait;
use uuid::Uuid;

use super::row::RowExt;
use super::{
    AccountRepo, AccountRow, AccountSessionRow, BeginWrite, RefreshRotation, RepoError, RepoResult, RotateOutcome,
    SqlRepo, on_db,
};

fn account(r: &impl RowExt) -> sqlx::Result<AccountRow> {
    Ok(AccountRow {
        id: r.uuid("id")?,
        email: r.text("email")?,
        password_hash: r.text("password_hash")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

pub(super) fn session(r: &impl RowExt) -> sqlx::Result<AccountSessionRow> {
    Ok(AccountSessionRow {
        id: r.uuid("id")?,
        account_id: r.uuid("account_id")?,
        user_agent: r.opt_text("user_agent")?,
        created_at: r.int("created_at")?,
        last_used_at: r.int("last_used_at")?,
        refresh_expires_at: r.int("refresh_expires_at")?,
        revoked_at: r.opt_int("revoked_at")?,
    })
}

#[async_trait]
impl AccountRepo for SqlRepo {
    async fn insert_account(&self, a: &AccountRow, email_key: &str) -> RepoResult<()> {
        on_db!(self, p => {
            sqlx::query(
                "INSERT INTO accounts (id, email, email_key, password_hash, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(a.id)
            .bind(&a.email)
            .bind(email_key)
            .bind(&a.password_hash)
            .bind(a.created_at)
            .bind(a.updated_at)
            .execute(p)
            .await
            .map_err(RepoError::from_write)?;
        });
        Ok(())
    }

    async fn account_by_email(&self, email_key: &str) -> RepoResult<Option<AccountRow>> {
        const SQL: &str = "SELECT id, email, password_hash, created_at, updated_at FROM accounts WHERE email_key = $1";
        on_db!(self, p => {
            let row = sqlx::query(SQL).bind(email_key).fetch_optional(p).await?;
            Ok(row.map(|r| account(&r)).transpose()?)
        })
    }

    async fn account_by_id(&self, id: Uuid) -> RepoResult<Option<AccountRow>> {
        const SQL: &str = "SELECT id, email, password_hash, created_at, updated_at FROM accounts WHERE id = $1";
        on_db!(self, p => {
            let row = sqlx::query(SQL).bind(id).fetch_optional(p).await?;
            Ok(row.map(|r| account(&r)).transpose()?)
        })
    }

    async fn create_account_session(&self, s: &AccountSessionRow, refresh_hash: &[u8; 32]) -> RepoResult<()> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "INSERT INTO account_sessions
                   (id, account_id, user_agent, created_at, last_used_at, refresh_expires_at, revoked_at)
                 VALUES ($1, $2, $3, $4, $5, $6, NULL)",
            )
            .bind(s.id)
            .bind(s.account_id)
            .bind(&s.user_agent)
            .bind(s.created_at)
            .bind(s.last_used_at)
            .bind(s.refresh_expires_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO account_refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)")
                .bind(&refresh_hash[..])
                .bind(s.id)
                .bind(s.created_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    async fn rotate_account_refresh(&self, rot: &RefreshRotation) -> RepoResult<RotateOutcome<AccountSessionRow>> {
        self.rotate_refresh(None, rot).await
    }

    async fn account_session_live(&self, session_id: Uuid, account_id: Uuid) -> RepoResult<bool> {
        on_db!(self, p => {
            let live: Option<Uuid> = sqlx::query_scalar(
                "SELECT id FROM account_sessions WHERE id = $1 AND account_id = $2 AND revoked_at IS NULL",
            )
            .bind(session_id)
            .bind(account_id)
            .fetch_optional(p)
            .await?;
            Ok(live.is_some())
        })
    }

    async fn revoke_account_session(&self, session_id: Uuid, now: i64) -> RepoResult<()> {
        on_db!(self, p => {
            sqlx::query("UPDATE account_sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(session_id)
                .bind(now)
                .execute(p)
                .await?;
        });
        Ok(())
    }
}
