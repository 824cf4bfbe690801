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
    /// The token and its session, the session locked (the first row every other writer of these
    /// rows takes too): a session's current token is in the session's own row, exchanged ones in
    /// the token table.
    pub async fn presented_refresh_token(
        &mut self,
        table: RefreshTable,
        token_hash: &[u8; 32],
        now: i64,
    ) -> RepoResult<Option<PresentedToken>> {
        let (sessions, tokens) = table.tables();
        let postgres = self.backend() == super::Backend::Postgres;
        let current = Sql::new(format!(
            "SELECT id, revoked_at IS NULL AND refresh_expires_at > $2 AS live FROM {sessions}
             WHERE refresh_hash = $1{}{}",
            table.scope("", 3),
            if postgres { " FOR UPDATE" } else { "" }
        ))
        .bind(&token_hash[..])
        .bind(now);
        if let Some(row) = self.fetch_optional(table.bind_scope(current)).await? {
            return Ok(Some(PresentedToken {
                session_id: row.uuid("id")?,
                session_live: row.boolean("live")?,
                rotated_at: None,
            }));
        }
        let join = if matches!(table, RefreshTable::Profiles { .. }) { " AND s.store_id = t.store_id" } else { "" };
        let exchanged = Sql::new(format!(
            "SELECT s.id, s.revoked_at IS NULL AND s.refresh_expires_at > $2 AS live, t.rotated_at
             FROM {tokens} t JOIN {sessions} s ON s.id = t.session_id{join}
             WHERE t.token_hash = $1{}{}",
            table.scope("t.", 3),
            if postgres { " FOR UPDATE OF s" } else { "" }
        ))
        .bind(&token_hash[..])
        .bind(now);
        let Some(row) = self.fetch_optional(table.bind_scope(exchanged)).await? else { return Ok(None) };
        Ok(Some(PresentedToken {
            session_id: row.uuid("id")?,
            session_live: row.boolean("live")?,
            // Every row of the token table was exchanged; one written otherwise counts as such.
            rotated_at: Some(row.opt_int("rotated_at")?.unwrap_or(0)),
        }))
    }

    /// Exchanges the session's current token for its successor: the session holds the
    /// successor's hash and lives another refresh lifetime, and the presented token is kept as
    /// exchanged. False, with nothing written, when the presented token is not the session's
    /// current one (another request exchanged it first).
    pub async fn exchange_refresh_token(
        &mut self,
        table: RefreshTable,
        session_id: Uuid,
        presented: &[u8; 32],
        successor: &[u8; 32],
        now: i64,
        refresh_expires_at: i64,
    ) -> RepoResult<bool> {
        let (sessions, _) = table.tables();
        let sql = Sql::new(format!(
            "UPDATE {sessions} SET refresh_hash = $3, last_used_at = $4, refresh_expires_at = $5
             WHERE id = $1 AND refresh_hash = $2{}",
            table.scope("", 6)
        ))
        .bind(session_id)
        .bind(&presented[..])
        .bind(&successor[..])
        .bind(now)
        .bind(refresh_expires_at);
        if self.execute(table.bind_scope(sql)).await? != 1 {
            return Ok(false);
        }
        let sql = match table {
            RefreshTable::Accounts => Sql::new(
                "INSERT INTO account_refresh_tokens (token_hash, session_id, created_at, rotated_at)
                 VALUES ($1, $2, $3, $3) ON CONFLICT DO NOTHING",
            ),
            RefreshTable::Profiles { .. } => Sql::new(
                "INSERT INTO profile_refresh_tokens (token_hash, session_id, created_at, rotated_at, store_id)
                 VALUES ($1, $2, $3, $3, $4) ON CONFLICT DO NOTHING",
            ),
        };
        let sql = sql.bind(&presented[..]).bind(session_id).bind(now);
        self.execute(table.bind_scope(sql)).await?;
        Ok(true)
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
