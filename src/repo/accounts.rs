//! Platform accounts and their sessions.

use uuid::Uuid;

use super::{AccountRow, AccountSessionRow, RepoResult, Row, Sql, Tx};

fn account(r: &Row) -> sqlx::Result<AccountRow> {
    Ok(AccountRow {
        id: r.uuid("id")?,
        email: r.text("email")?,
        password_hash: r.text("password_hash")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

fn session(r: &Row) -> sqlx::Result<AccountSessionRow> {
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

const ACCOUNT_COLUMNS: &str = "id, email, password_hash, created_at, updated_at";

impl Tx {
    /// `Unique("accounts_email_key_unique")` when the email is taken.
    pub async fn insert_account(&mut self, a: &AccountRow, email_key: &str) -> RepoResult<()> {
        let sql = Sql::new(
            "INSERT INTO accounts (id, email, email_key, password_hash, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(a.id)
        .bind(&a.email)
        .bind(email_key)
        .bind(&a.password_hash)
        .bind(a.created_at)
        .bind(a.updated_at);
        self.execute(sql).await?;
        Ok(())
    }

    pub async fn account_by_email(&mut self, email_key: &str) -> RepoResult<Option<AccountRow>> {
        let sql = Sql::new(format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email_key = $1")).bind(email_key);
        Ok(self.fetch_optional(sql).await?.map(|r| account(&r)).transpose()?)
    }

    pub async fn account_by_id(&mut self, id: Uuid) -> RepoResult<Option<AccountRow>> {
        let sql = Sql::new(format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1")).bind(id);
        Ok(self.fetch_optional(sql).await?.map(|r| account(&r)).transpose()?)
    }

    pub async fn set_password_hash(&mut self, id: Uuid, password_hash: &str, now: i64) -> RepoResult<bool> {
        let sql = Sql::new("UPDATE accounts SET password_hash = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(password_hash)
            .bind(now);
        Ok(self.execute(sql).await? == 1)
    }

    /// A session, holding its first refresh token's hash.
    pub async fn insert_account_session(&mut self, s: &AccountSessionRow, refresh_hash: &[u8; 32]) -> RepoResult<()> {
        let sql = Sql::new(
            "INSERT INTO account_sessions (id, account_id, user_agent, created_at, last_used_at, refresh_expires_at,
                 refresh_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(s.id)
        .bind(s.account_id)
        .bind(&s.user_agent)
        .bind(s.created_at)
        .bind(s.last_used_at)
        .bind(s.refresh_expires_at)
        .bind(&refresh_hash[..]);
        self.execute(sql).await?;
        Ok(())
    }

    pub async fn account_session(&mut self, id: Uuid) -> RepoResult<Option<AccountSessionRow>> {
        let sql = Sql::new(
            "SELECT id, account_id, user_agent, created_at, last_used_at, refresh_expires_at, revoked_at
             FROM account_sessions WHERE id = $1",
        )
        .bind(id);
        Ok(self.fetch_optional(sql).await?.map(|r| session(&r)).transpose()?)
    }

    pub async fn account_session_live(&mut self, session_id: Uuid, account_id: Uuid) -> RepoResult<bool> {
        let sql = Sql::new("SELECT id FROM account_sessions WHERE id = $1 AND account_id = $2 AND revoked_at IS NULL")
            .bind(session_id)
            .bind(account_id);
        Ok(self.fetch_optional(sql).await?.is_some())
    }

    /// Counts a failure in a fixed window outside any store (login).
    pub async fn hit_account_rate_limit(&mut self, bucket: &str, window_start: i64) -> RepoResult<()> {
        let sql = Sql::new(
            "INSERT INTO account_rate_limits (bucket, window_start, hits) VALUES ($1, $2, 1)
             ON CONFLICT (bucket, window_start) DO UPDATE SET hits = account_rate_limits.hits + 1",
        )
        .bind(bucket)
        .bind(window_start);
        self.execute(sql).await?;
        Ok(())
    }

    pub async fn account_rate_limit(&mut self, bucket: &str, window_start: i64) -> RepoResult<i64> {
        let sql = Sql::new("SELECT hits FROM account_rate_limits WHERE bucket = $1 AND window_start = $2")
            .bind(bucket)
            .bind(window_start);
        Ok(self.fetch_optional(sql).await?.map(|r| r.int("hits")).transpose()?.unwrap_or(0))
    }
}
