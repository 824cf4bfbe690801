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

fn session(r: &impl RowExt) -> sqlx::Result<AccountSessionRow> {
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

    async fn rotate_account_refresh(&self, rot: &RefreshRotation) -> RepoResult<RotateOutcome> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let found = sqlx::query(
                "SELECT s.id, s.account_id, s.user_agent, s.created_at, s.last_used_at, s.refresh_expires_at,
                        s.revoked_at, t.rotated_at AS token_rotated_at
                 FROM account_refresh_tokens t JOIN account_sessions s ON s.id = t.session_id
                 WHERE t.token_hash = $1",
            )
            .bind(&rot.presented[..])
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = found else { return Ok(RotateOutcome::Invalid) };
            let mut current = session(&row)?;
            if current.revoked_at.is_some() || current.refresh_expires_at <= rot.now {
                return Ok(RotateOutcome::Invalid);
            }
            // The claim is one conditional UPDATE, so of two concurrent refreshes exactly one wins it.
            let claimed = sqlx::query(
                "UPDATE account_refresh_tokens SET rotated_at = $2 WHERE token_hash = $1 AND rotated_at IS NULL",
            )
            .bind(&rot.presented[..])
            .bind(rot.now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !claimed {
                let rotated_at: Option<i64> = sqlx::query_scalar(
                    "SELECT rotated_at FROM account_refresh_tokens WHERE token_hash = $1",
                )
                .bind(&rot.presented[..])
                .fetch_one(&mut *tx)
                .await?;
                if rot.now - rotated_at.unwrap_or(rot.now) > rot.grace_secs {
                    sqlx::query("UPDATE account_sessions SET revoked_at = $2 WHERE id = $1")
                        .bind(current.id)
                        .bind(rot.now)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    return Ok(RotateOutcome::Reused);
                }
            }
            sqlx::query("INSERT INTO account_refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)")
                .bind(&rot.replacement[..])
                .bind(current.id)
                .bind(rot.now)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE account_sessions SET last_used_at = $2, refresh_expires_at = $3 WHERE id = $1")
                .bind(current.id)
                .bind(rot.now)
                .bind(rot.refresh_expires_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            current.last_used_at = rot.now;
            current.refresh_expires_at = rot.refresh_expires_at;
            Ok(RotateOutcome::Rotated(current))
        })
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
