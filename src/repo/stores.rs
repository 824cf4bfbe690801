//! Stores, their members and their API keys.

use uuid::Uuid;

use super::{Arg, RepoResult, Row, Sql, StoreRow, TemplateRow, Tx};
use crate::domain::Role;

fn store(r: &Row) -> sqlx::Result<StoreRow> {
    Ok(StoreRow {
        id: r.uuid("id")?,
        name: r.text("name")?,
        from_email: r.opt_text("from_email")?,
        from_name: r.opt_text("from_name")?,
        allowed_origins: r.json("allowed_origins")?,
        consent_full_ip: r.boolean("consent_full_ip")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

const STORE_COLUMNS: &str =
    "s.id, s.name, s.from_email, s.from_name, s.allowed_origins, s.consent_full_ip, s.created_at, s.updated_at";

/// What an account session may do in a store.
#[derive(Debug)]
pub enum SessionMembership {
    /// The session is unknown, revoked, or of another account.
    SessionDead,
    NotMember,
    Member {
        role: Role,
    },
}

impl Tx {
    pub async fn insert_store(&mut self, s: &StoreRow) -> RepoResult<()> {
        let sql = Sql::new(
            "INSERT INTO stores (id, name, from_email, from_name, allowed_origins, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(s.id)
        .bind(&s.name)
        .bind(&s.from_email)
        .bind(&s.from_name)
        .bind(Arg::json(&s.allowed_origins))
        .bind(s.created_at)
        .bind(s.updated_at);
        self.execute(sql).await?;
        Ok(())
    }

    pub async fn insert_member(&mut self, store_id: Uuid, account_id: Uuid, role: Role, now: i64) -> RepoResult<()> {
        let sql =
            Sql::new("INSERT INTO store_members (store_id, account_id, role, created_at) VALUES ($1, $2, $3, $4)")
                .bind(store_id)
                .bind(account_id)
                .bind(role.as_str())
                .bind(now);
        self.execute(sql).await?;
        Ok(())
    }

    pub async fn store(&mut self, id: Uuid) -> RepoResult<Option<StoreRow>> {
        let sql = Sql::new(format!("SELECT {STORE_COLUMNS} FROM stores s WHERE s.id = $1")).bind(id);
        Ok(self.fetch_optional(sql).await?.map(|r| store(&r)).transpose()?)
    }

    /// The store and its template with key `template_key` (any status), in one statement.
    pub async fn store_with_template(
        &mut self,
        id: Uuid,
        template_key: &str,
    ) -> RepoResult<Option<(StoreRow, Option<TemplateRow>)>> {
        static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT {STORE_COLUMNS}, {} FROM stores s
                 LEFT JOIN email_templates t ON t.store_id = s.id AND t.key = $2 WHERE s.id = $1",
                super::templates::prefixed_columns()
            )
        });
        let sql = Sql::new(TEXT.as_str()).bind(id).bind(template_key);
        let Some(r) = self.fetch_optional(sql).await? else { return Ok(None) };
        let template = match r.opt_uuid("t_id")? {
            Some(_) => Some(super::templates::template_at(&r, "t_")?),
            None => None,
        };
        Ok(Some((store(&r)?, template)))
    }

    /// The store, locked against concurrent settings changes.
    pub async fn lock_store(&mut self, id: Uuid) -> RepoResult<Option<StoreRow>> {
        let sql =
            Sql::new(format!("SELECT {STORE_COLUMNS} FROM stores s WHERE s.id = $1{}", self.for_update())).bind(id);
        Ok(self.fetch_optional(sql).await?.map(|r| store(&r)).transpose()?)
    }

    pub async fn update_store(&mut self, s: &StoreRow) -> RepoResult<()> {
        let sql = Sql::new(
            "UPDATE stores SET name = $2, from_email = $3, from_name = $4, allowed_origins = $5, updated_at = $6,
               consent_full_ip = $7 WHERE id = $1",
        )
        .bind(s.id)
        .bind(&s.name)
        .bind(&s.from_email)
        .bind(&s.from_name)
        .bind(Arg::json(&s.allowed_origins))
        .bind(s.updated_at)
        .bind(s.consent_full_ip);
        self.execute(sql).await?;
        Ok(())
    }

    /// Every store, by id, after `after`.
    pub async fn stores(&mut self, after: Option<Uuid>, limit: u32) -> RepoResult<Vec<StoreRow>> {
        let sql = Sql::new(format!(
            "SELECT {STORE_COLUMNS} FROM stores s WHERE ($1 IS NULL OR s.id > $1) ORDER BY s.id LIMIT $2"
        ))
        .bind(after)
        .bind(limit);
        Ok(self.fetch_all(sql).await?.iter().map(store).collect::<sqlx::Result<_>>()?)
    }

    /// Stores the account is a member of, by id, after `after`.
    pub async fn stores_of_account(
        &mut self,
        account_id: Uuid,
        after: Option<Uuid>,
        limit: u32,
    ) -> RepoResult<Vec<(StoreRow, Role)>> {
        let sql = Sql::new(format!(
            "SELECT {STORE_COLUMNS}, m.role FROM store_members m JOIN stores s ON s.id = m.store_id
             WHERE m.account_id = $1 AND ($2 IS NULL OR m.store_id > $2) ORDER BY m.store_id LIMIT $3"
        ))
        .bind(account_id)
        .bind(after)
        .bind(limit);
        let rows = self.fetch_all(sql).await?;
        Ok(rows.iter().map(|r| Ok((store(r)?, r.parsed("role")?))).collect::<sqlx::Result<_>>()?)
    }

    /// Session liveness and store membership in one round trip.
    pub async fn membership_via_session(
        &mut self,
        session_id: Uuid,
        account_id: Uuid,
        store_id: Uuid,
    ) -> RepoResult<SessionMembership> {
        let sql = Sql::new(
            "SELECT m.role AS role FROM account_sessions s
             LEFT JOIN store_members m ON m.account_id = s.account_id AND m.store_id = $3
             WHERE s.id = $1 AND s.account_id = $2 AND s.revoked_at IS NULL",
        )
        .bind(session_id)
        .bind(account_id)
        .bind(store_id);
        Ok(match self.fetch_optional(sql).await? {
            None => SessionMembership::SessionDead,
            Some(r) => match r.opt_text("role")? {
                None => SessionMembership::NotMember,
                Some(_) => SessionMembership::Member { role: r.parsed("role")? },
            },
        })
    }
}
