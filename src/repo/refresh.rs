//! Refresh tokens of account and profile sessions: one set of statements for both tables.
//! The rotation rule itself (one successor, a grace window, reuse revokes) is
//! `services::sessions::rotate`.

use uuid::Uuid;

use super::{RepoResult, Sql, Tx};

/// Whose refresh tokens: the platform's accounts, or one store's profile sessions (a token of
/// another store is no token here).
#[derive(Debug, Clone, Copy)]
pub enum RefreshTable {
    Accounts,
    Profiles { store_id: Uuid },
}

impl RefreshTable {
    fn tables(self) -> (&'static str, &'static str) {
        match self {
            Self::Accounts => ("account_sessions", "account_refresh_tokens"),
            Self::Profiles { .. } => ("profile_sessions", "profile_refresh_tokens"),
        }
    }

    /// ` AND {alias}store_id = $n` for profiles; nothing for accounts.
    fn scope(self, alias: &str, n: usize) -> String {
        match self {
            Self::Accounts => String::new(),
            Self::Profiles { .. } => format!(" AND {alias}store_id = ${n}"),
        }
    }

    fn bind_scope(self, sql: Sql) -> Sql {
        match self {
            Self::Accounts => sql,
            Self::Profiles { store_id } => sql.bind(store_id),
        }
    }
}

/// A presented refresh token, found with its session locked.
#[derive(Debug, Clone)]
pub struct PresentedToken {
    pub session_id: Uuid,
    pub session_live: bool,
    /// When it was exchanged for its successor; `None` while it is the current one.
    pub rotated_at: Option<i64>,
}

impl Tx {
    /// The token and its session, the session locked first (then the token), in the order every
    /// other writer of these rows takes them.
    pub async fn presented_refresh_token(
        &mut self,
        table: RefreshTable,
        token_hash: &[u8; 32],
        now: i64,
    ) -> RepoResult<Option<PresentedToken>> {
        let (sessions, tokens) = table.tables();
        let lock = match self.backend() {
            super::Backend::Postgres => " FOR UPDATE OF s",
            super::Backend::Sqlite => "",
        };
        let join = if matches!(table, RefreshTable::Profiles { .. }) { " AND s.store_id = t.store_id" } else { "" };
        let sql = Sql::new(format!(
            "SELECT s.id, s.revoked_at IS NULL AND s.refresh_expires_at > $2 AS live, t.rotated_at
             FROM {tokens} t JOIN {sessions} s ON s.id = t.session_id{join}
             WHERE t.token_hash = $1{}{lock}",
            table.scope("t.", 3)
        ))
        .bind(&token_hash[..])
        .bind(now);
        let Some(row) = self.fetch_optional(table.bind_scope(sql)).await? else { return Ok(None) };
        Ok(Some(PresentedToken {
            session_id: row.uuid("id")?,
            session_live: row.boolean("live")?,
            rotated_at: row.opt_int("rotated_at")?,
        }))
    }

    /// Marks the token exchanged; false when another request did so first.
    pub async fn claim_refresh_token(
        &mut self,
        table: RefreshTable,
        token_hash: &[u8; 32],
        now: i64,
    ) -> RepoResult<bool> {
        let (_, tokens) = table.tables();
        let sql = Sql::new(format!(
            "UPDATE {tokens} SET rotated_at = $2 WHERE token_hash = $1 AND rotated_at IS NULL{}",
            table.scope("", 3)
        ))
        .bind(&token_hash[..])
        .bind(now);
        Ok(self.execute(table.bind_scope(sql)).await? == 1)
    }

    /// Stores a token of the session; a token already stored (the same successor, derived again
    /// inside the grace window) is left as it is.
    pub async fn insert_refresh_token(
        &mut self,
        table: RefreshTable,
        session_id: Uuid,
        token_hash: &[u8; 32],
        now: i64,
    ) -> RepoResult<()> {
        let sql = match table {
            RefreshTable::Accounts => Sql::new(
                "INSERT INTO account_refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            ),
            RefreshTable::Profiles { .. } => Sql::new(
                "INSERT INTO profile_refresh_tokens (token_hash, session_id, created_at, store_id) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
            ),
        };
        let sql = sql.bind(&token_hash[..]).bind(session_id).bind(now);
        self.execute(table.bind_scope(sql)).await?;
        Ok(())
    }

    /// A used session stays alive for another refresh lifetime.
    pub async fn slide_session(
        &mut self,
        table: RefreshTable,
        session_id: Uuid,
        now: i64,
        refresh_expires_at: i64,
    ) -> RepoResult<()> {
        let (sessions, _) = table.tables();
        let sql = Sql::new(format!(
            "UPDATE {sessions} SET last_used_at = $2, refresh_expires_at = $3 WHERE id = $1{}",
            table.scope("", 4)
        ))
        .bind(session_id)
        .bind(now)
        .bind(refresh_expires_at);
        self.execute(table.bind_scope(sql)).await?;
        Ok(())
    }

    pub async fn revoke_session(&mut self, table: RefreshTable, session_id: Uuid, now: i64) -> RepoResult<()> {
        let (sessions, _) = table.tables();
        let sql = Sql::new(format!(
            "UPDATE {sessions} SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL{}",
            table.scope("", 3)
        ))
        .bind(session_id)
        .bind(now);
        self.execute(table.bind_scope(sql)).await?;
        Ok(())
    }
}
