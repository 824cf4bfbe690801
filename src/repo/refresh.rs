//! Refresh-token rotation, one algorithm for account sessions and profile sessions (§4).
//!
//! The successor of a token is derived from it (by the service, with a server key), so a token
//! presented again inside the grace window is answered with the same successor: a session never
//! has two live refresh chains. After the window, a second use is taken as theft and revokes the
//! session.

use uuid::Uuid;

use super::row::RowExt;
use super::{
    AccountSessionRow, BeginWrite, ProfileSessionRow, RefreshRotation, RepoResult, RotateOutcome, SqlRepo, on_db,
};

/// A session table whose rows a rotation returns.
pub(super) trait RefreshSession: Sized + Send {
    /// Columns of `sessions` read back after the rotation.
    const COLUMNS: &'static str;
    const SESSIONS: &'static str;
    const TOKENS: &'static str;
    fn from_row(r: &impl RowExt) -> sqlx::Result<Self>;
}

impl RefreshSession for AccountSessionRow {
    const COLUMNS: &'static str =
        "id, account_id, user_agent, created_at, last_used_at, refresh_expires_at, revoked_at";
    const SESSIONS: &'static str = "account_sessions";
    const TOKENS: &'static str = "account_refresh_tokens";
    fn from_row(r: &impl RowExt) -> sqlx::Result<Self> {
        super::accounts::session(r)
    }
}

impl RefreshSession for ProfileSessionRow {
    const COLUMNS: &'static str =
        "store_id, id, profile_id, verified, user_agent, created_at, last_used_at, refresh_expires_at";
    const SESSIONS: &'static str = "profile_sessions";
    const TOKENS: &'static str = "profile_refresh_tokens";
    fn from_row(r: &impl RowExt) -> sqlx::Result<Self> {
        super::sessions::session(r)
    }
}

/// `AND store_id = $n` for profile tables (a store's token is no token elsewhere), nothing for accounts.
fn scope(store: Option<Uuid>, alias: &str, n: u8) -> String {
    match store {
        Some(_) => format!(" AND {alias}store_id = ${n}"),
        None => String::new(),
    }
}

impl SqlRepo {
    /// Rotates `rot.presented` to `rot.replacement` in one transaction. `store` is the profile
    /// sessions' store, `None` for account sessions.
    pub(super) async fn rotate_refresh<S: RefreshSession>(
        &self,
        store: Option<Uuid>,
        rot: &RefreshRotation,
    ) -> RepoResult<RotateOutcome<S>> {
        let (sessions, tokens) = (S::SESSIONS, S::TOKENS);
        let find = format!(
            "SELECT s.id, s.revoked_at, s.refresh_expires_at, t.rotated_at FROM {tokens} t
             JOIN {sessions} s ON s.id = t.session_id{join} WHERE t.token_hash = $1{where_}",
            join = if store.is_some() { " AND s.store_id = t.store_id" } else { "" },
            where_ = scope(store, "t.", 2),
        );
        let claim = format!(
            "UPDATE {tokens} SET rotated_at = $2 WHERE token_hash = $1 AND rotated_at IS NULL{}",
            scope(store, "", 3)
        );
        let rotated_at = format!("SELECT rotated_at FROM {tokens} WHERE token_hash = $1{}", scope(store, "", 2));
        let revoke = format!("UPDATE {sessions} SET revoked_at = $2 WHERE id = $1{}", scope(store, "", 3));
        let successor = match store {
            Some(_) => format!(
                "INSERT INTO {tokens} (token_hash, session_id, created_at, store_id) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING"
            ),
            None => format!(
                "INSERT INTO {tokens} (token_hash, session_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            ),
        };
        let slide = format!(
            "UPDATE {sessions} SET last_used_at = $2, refresh_expires_at = $3 WHERE id = $1{} RETURNING {}",
            scope(store, "", 4),
            S::COLUMNS
        );
        macro_rules! scoped {
            ($q:expr) => {
                match store {
                    Some(s) => $q.bind(s),
                    None => $q,
                }
            };
        }
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let found = scoped!(sqlx::query(sqlx::AssertSqlSafe(find)).bind(&rot.presented[..]))
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = found else { return Ok(RotateOutcome::Invalid) };
            let session_id = row.uuid("id")?;
            if row.opt_int("revoked_at")?.is_some() || row.int("refresh_expires_at")? <= rot.now {
                return Ok(RotateOutcome::Invalid);
            }
            // One conditional UPDATE claims the token: of two concurrent refreshes exactly one wins.
            let claimed = scoped!(sqlx::query(sqlx::AssertSqlSafe(claim)).bind(&rot.presented[..]).bind(rot.now))
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if !claimed {
                let rotated_at: Option<i64> =
                    scoped!(sqlx::query_scalar(sqlx::AssertSqlSafe(rotated_at)).bind(&rot.presented[..]))
                        .fetch_one(&mut *tx)
                        .await?;
                if rot.now - rotated_at.unwrap_or(rot.now) > rot.grace_secs {
                    scoped!(sqlx::query(sqlx::AssertSqlSafe(revoke)).bind(session_id).bind(rot.now))
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    return Ok(RotateOutcome::Reused);
                }
            }
            // Inside the grace window the successor exists already: the same one is answered.
            scoped!(sqlx::query(sqlx::AssertSqlSafe(successor))
                .bind(&rot.replacement[..])
                .bind(session_id)
                .bind(rot.now))
            .execute(&mut *tx)
            .await?;
            let row = scoped!(sqlx::query(sqlx::AssertSqlSafe(slide))
                .bind(session_id)
                .bind(rot.now)
                .bind(rot.refresh_expires_at))
            .fetch_one(&mut *tx)
            .await?;
            let session = S::from_row(&row)?;
            tx.commit().await?;
            Ok(RotateOutcome::Rotated(session))
        })
    }
}
