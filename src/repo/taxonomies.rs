//! Taxonomy definitions. Their values on profiles are in `profiles.rs`.

use std::collections::HashMap;

use uuid::Uuid;

use super::{Arg, RepoResult, Row, Sql, TaxonomyRow, Tx};
use crate::domain::taxonomy::FieldDef;

const COLUMNS: &str = "store_id, id, key, parent_id, schema, status, created_at, updated_at";

fn taxonomy(r: &Row) -> sqlx::Result<TaxonomyRow> {
    Ok(TaxonomyRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        key: r.text("key")?,
        parent_id: r.opt_uuid("parent_id")?,
        schema: r.json("schema")?,
        status: r.parsed("status")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

impl Tx {
    /// `Unique("taxonomies_key_unique")` when the key is taken.
    pub async fn insert_taxonomy(&mut self, t: &TaxonomyRow) -> RepoResult<()> {
        let sql = Sql::new(
            "INSERT INTO taxonomies (store_id, id, key, parent_id, schema, status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(t.store_id)
        .bind(t.id)
        .bind(&t.key)
        .bind(t.parent_id)
        .bind(Arg::json(&t.schema))
        .bind(t.status.as_str())
        .bind(t.created_at)
        .bind(t.updated_at);
        self.execute(sql).await?;
        Ok(())
    }

    /// By id, or by key; locked inside a transaction.
    pub async fn taxonomy(&mut self, store_id: Uuid, id: Option<Uuid>, key: &str) -> RepoResult<Option<TaxonomyRow>> {
        let sql = Sql::new(format!(
            "SELECT {COLUMNS} FROM taxonomies WHERE store_id = $1 AND (id = $2 OR key = $3){}",
            self.for_update()
        ))
        .bind(store_id)
        .bind(id)
        .bind(key);
        Ok(self.fetch_optional(sql).await?.map(|r| taxonomy(&r)).transpose()?)
    }

    /// Every taxonomy of the store, in id order (a store has a handful: definitions, not data).
    pub async fn all_taxonomies(&mut self, store_id: Uuid) -> RepoResult<Vec<TaxonomyRow>> {
        let sql = Sql::new(format!("SELECT {COLUMNS} FROM taxonomies WHERE store_id = $1 ORDER BY id")).bind(store_id);
        Ok(self.fetch_all(sql).await?.iter().map(taxonomy).collect::<sqlx::Result<_>>()?)
    }

    pub async fn taxonomies(
        &mut self,
        store_id: Uuid,
        after: Option<Uuid>,
        limit: u32,
    ) -> RepoResult<Vec<TaxonomyRow>> {
        let sql = Sql::new(format!(
            "SELECT {COLUMNS} FROM taxonomies WHERE store_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(store_id)
        .bind(after)
        .bind(limit);
        Ok(self.fetch_all(sql).await?.iter().map(taxonomy).collect::<sqlx::Result<_>>()?)
    }

    /// Schemas of the store's taxonomies among `ids` (active ones only, if `only_active`). Inside
    /// a transaction they are share-locked: values written against them cannot lose their
    /// definition before the transaction ends.
    pub async fn schemas(
        &mut self,
        store_id: Uuid,
        ids: &[Uuid],
        only_active: bool,
    ) -> RepoResult<HashMap<Uuid, Vec<FieldDef>>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut sql = Sql::new("SELECT id, schema FROM taxonomies WHERE store_id = ");
        sql.push_bind(store_id);
        if only_active {
            sql.push(" AND status = ").push_bind(crate::domain::Status::Active.as_str());
        }
        sql.push(" AND id IN ").push_list(ids.iter().copied()).push(" ORDER BY id").push(self.for_share());
        let rows = self.fetch_all(sql).await?;
        Ok(rows.iter().map(|r| Ok((r.uuid("id")?, r.json::<Vec<FieldDef>>("schema")?))).collect::<sqlx::Result<_>>()?)
    }

    pub async fn update_taxonomy(&mut self, t: &TaxonomyRow) -> RepoResult<()> {
        let sql = Sql::new(
            "UPDATE taxonomies SET key = $3, parent_id = $4, schema = $5, status = $6, updated_at = $7
             WHERE store_id = $1 AND id = $2",
        )
        .bind(t.store_id)
        .bind(t.id)
        .bind(&t.key)
        .bind(t.parent_id)
        .bind(Arg::json(&t.schema))
        .bind(t.status.as_str())
        .bind(t.updated_at);
        self.execute(sql).await?;
        Ok(())
    }

    /// Deletes the stored values of some fields of a taxonomy (all fields when `fields` is
    /// `None`); returns the profiles that had any.
    pub async fn delete_taxonomy_values(
        &mut self,
        store_id: Uuid,
        taxonomy_id: Uuid,
        fields: Option<&[String]>,
    ) -> RepoResult<Vec<Uuid>> {
        let build = |head: &str| {
            let mut sql = Sql::new(format!("{head} FROM profile_taxonomy_values WHERE store_id = "));
            sql.push_bind(store_id).push(" AND taxonomy_id = ").push_bind(taxonomy_id);
            if let Some(fields) = fields {
                sql.push(" AND field_key IN ").push_list(fields.iter().map(String::as_str));
            }
            sql
        };
        let (select, delete) = (build("SELECT DISTINCT profile_id"), build("DELETE"));
        let affected =
            self.fetch_all(select).await?.iter().map(|r| r.uuid("profile_id")).collect::<sqlx::Result<_>>()?;
        self.execute(delete).await?;
        Ok(affected)
    }

    /// Deletes the definition; its children lose their parent rather than dangle.
    pub async fn delete_taxonomy(&mut self, store_id: Uuid, id: Uuid) -> RepoResult<bool> {
        let sql = Sql::new("DELETE FROM taxonomies WHERE store_id = $1 AND id = $2").bind(store_id).bind(id);
        let deleted = self.execute(sql).await? > 0;
        let sql = Sql::new("UPDATE taxonomies SET parent_id = NULL WHERE store_id = $1 AND parent_id = $2")
            .bind(store_id)
            .bind(id);
        self.execute(sql).await?;
        Ok(deleted)
    }
}
