use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::types::Json;
use uuid::Uuid;

use super::profiles::refresh_search_text;
use super::row::RowExt;
use super::sql::{Param, SqlBuilder, bind_params};
use super::{BeginWrite, RepoError, RepoResult, SqlRepo, TaxonomyRepo, TaxonomyRow, on_db};
use crate::domain::taxonomy::FieldDef;

const COLUMNS: &str = "store_id, id, key, parent_id, schema, status, created_at, updated_at";

fn taxonomy(r: &impl RowExt) -> sqlx::Result<TaxonomyRow> {
    Ok(TaxonomyRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        key: r.text("key")?,
        parent_id: r.opt_uuid("parent_id")?,
        schema: r.json("schema")?,
        status: r.text("status")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

#[async_trait]
impl TaxonomyRepo for SqlRepo {
    async fn insert_taxonomy(&self, t: &TaxonomyRow) -> RepoResult<()> {
        on_db!(self, p => {
            sqlx::query(
                "INSERT INTO taxonomies (store_id, id, key, parent_id, schema, status, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(t.store_id)
            .bind(t.id)
            .bind(&t.key)
            .bind(t.parent_id)
            .bind(Json(&t.schema))
            .bind(&t.status)
            .bind(t.created_at)
            .bind(t.updated_at)
            .execute(p)
            .await
            .map_err(RepoError::from_write)?;
        });
        Ok(())
    }

    async fn taxonomy(&self, store_id: Uuid, id: Option<Uuid>, key: &str) -> RepoResult<Option<TaxonomyRow>> {
        let sql = format!("SELECT {COLUMNS} FROM taxonomies WHERE store_id = $1 AND (id = $2 OR key = $3)");
        on_db!(self, p => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(store_id).bind(id).bind(key).fetch_optional(p).await?;
            Ok(row.map(|r| taxonomy(&r)).transpose()?)
        })
    }

    async fn taxonomies(&self, store_id: Uuid, after: Option<Uuid>, limit: u32) -> RepoResult<Vec<TaxonomyRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM taxonomies WHERE store_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        );
        on_db!(self, p => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(store_id)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(p)
                .await?;
            Ok(rows.iter().map(taxonomy).collect::<sqlx::Result<_>>()?)
        })
    }

    async fn schemas(
        &self,
        store_id: Uuid,
        ids: &[Uuid],
        only_active: bool,
    ) -> RepoResult<HashMap<Uuid, Vec<FieldDef>>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut b = SqlBuilder::new("SELECT id, schema FROM taxonomies WHERE store_id = ");
        b.bind(Param::Uuid(store_id)).push(if only_active {
            " AND status = 'active' AND id IN "
        } else {
            " AND id IN "
        });
        b.list(ids.iter().map(|id| Param::Uuid(*id)));
        on_db!(self, p => {
            let rows = bind_params!(sqlx::query(sqlx::AssertSqlSafe(b.sql.clone())), &b.params).fetch_all(p).await?;
            Ok(rows
                .iter()
                .map(|r| Ok((r.uuid("id")?, r.json::<Vec<FieldDef>>("schema")?)))
                .collect::<sqlx::Result<_>>()?)
        })
    }

    async fn update_taxonomy(&self, t: &TaxonomyRow, dropped_fields: &[String]) -> RepoResult<()> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "UPDATE taxonomies SET key = $3, parent_id = $4, schema = $5, status = $6, updated_at = $7
                 WHERE store_id = $1 AND id = $2",
            )
            .bind(t.store_id)
            .bind(t.id)
            .bind(&t.key)
            .bind(t.parent_id)
            .bind(Json(&t.schema))
            .bind(&t.status)
            .bind(t.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(RepoError::from_write)?;
            if !dropped_fields.is_empty() {
                let mut b = SqlBuilder::new("SELECT DISTINCT profile_id FROM profile_taxonomy_values WHERE store_id = ");
                b.bind(Param::Uuid(t.store_id)).push(" AND taxonomy_id = ").bind(Param::Uuid(t.id));
                b.push(" AND field_key IN ").list(dropped_fields.iter().map(|f| Param::Text(f.clone())));
                let affected: Vec<Uuid> =
                    bind_params!(sqlx::query_scalar(sqlx::AssertSqlSafe(b.sql.clone())), &b.params).fetch_all(&mut *tx).await?;
                let delete = b.sql.replacen("SELECT DISTINCT profile_id FROM", "DELETE FROM", 1);
                bind_params!(sqlx::query(sqlx::AssertSqlSafe(delete)), &b.params).execute(&mut *tx).await?;
                refresh_search_text!(tx, t.store_id, &affected);
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn delete_taxonomy(&self, store_id: Uuid, id: Uuid) -> RepoResult<bool> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let affected: Vec<Uuid> = sqlx::query_scalar(
                "SELECT DISTINCT profile_id FROM profile_taxonomy_values WHERE store_id = $1 AND taxonomy_id = $2",
            )
            .bind(store_id)
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            let deleted = sqlx::query("DELETE FROM taxonomies WHERE store_id = $1 AND id = $2")
                .bind(store_id)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
            // Children lose their parent rather than dangle.
            sqlx::query("UPDATE taxonomies SET parent_id = NULL WHERE store_id = $1 AND parent_id = $2")
                .bind(store_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            refresh_search_text!(tx, store_id, &affected);
            tx.commit().await?;
            Ok(deleted)
        })
    }
}
