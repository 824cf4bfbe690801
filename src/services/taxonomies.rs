//! Taxonomy definitions: typed schemas that profile entries are validated against.

use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::taxonomy::{FieldDef, valid_key, validate_schema};
use crate::domain::{Status, double_option};
use crate::error::{AppError, AppResult, FieldError};
use crate::repo::{Database, TaxonomyRow, Tx};
use crate::services::retrying;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaxonomy {
    /// 1–64 of `[A-Za-z0-9_-]`, unique per store.
    pub key: String,
    #[serde(alias = "parentId")]
    pub parent_id: Option<Uuid>,
    pub schema: Vec<FieldDef>,
    pub status: Option<Status>,
}

/// Absent fields stay. Fields removed from `schema`, or whose type changes, lose their stored values.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTaxonomy {
    pub key: Option<String>,
    #[serde(default, alias = "parentId", deserialize_with = "double_option")]
    #[schema(value_type = Option<Uuid>)]
    pub parent_id: Option<Option<Uuid>>,
    pub schema: Option<Vec<FieldDef>>,
    pub status: Option<Status>,
}

pub struct Taxonomies {
    db: Database,
}

/// By id, or by key when the path segment is not a UUID (or no taxonomy has it as id); locked
/// inside a transaction.
async fn find(tx: &mut Tx, store_id: Uuid, id_or_key: &str) -> AppResult<TaxonomyRow> {
    let id = Uuid::parse_str(id_or_key).ok();
    tx.taxonomy(store_id, id, id_or_key).await?.ok_or(AppError::NotFound("taxonomy"))
}

async fn check_parent(tx: &mut Tx, store_id: Uuid, id: Option<Uuid>, parent: Option<Uuid>) -> AppResult<()> {
    if let Some(parent) = parent {
        let found = tx.taxonomy(store_id, Some(parent), "").await?;
        if found.is_none() || Some(parent) == id {
            return Err(AppError::invalid("parent_id", "unknown_taxonomy"));
        }
    }
    Ok(())
}

impl Taxonomies {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub async fn create(&self, store_id: Uuid, input: CreateTaxonomy) -> AppResult<TaxonomyRow> {
        let mut errors = validate_schema(&input.schema);
        if !valid_key(&input.key) {
            errors.insert(0, FieldError::new("key", "invalid_key"));
        }
        if !errors.is_empty() {
            return Err(AppError::validation(errors));
        }
        let now = crate::now();
        let row = TaxonomyRow {
            store_id,
            id: Uuid::now_v7(),
            key: input.key,
            parent_id: input.parent_id,
            schema: input.schema,
            status: input.status.unwrap_or(Status::Active),
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.db.begin().await?;
        check_parent(&mut tx, store_id, None, row.parent_id).await?;
        tx.insert_taxonomy(&row).await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn get(&self, store_id: Uuid, id_or_key: &str) -> AppResult<TaxonomyRow> {
        find(&mut self.db.auto(), store_id, id_or_key).await
    }

    pub async fn list(&self, store_id: Uuid, after: Option<Uuid>, limit: u32) -> AppResult<Vec<TaxonomyRow>> {
        Ok(self.db.auto().taxonomies(store_id, after, limit).await?)
    }

    pub async fn update(&self, store_id: Uuid, id_or_key: &str, patch: UpdateTaxonomy) -> AppResult<TaxonomyRow> {
        let mut errors = patch.schema.as_deref().map(validate_schema).unwrap_or_default();
        if patch.key.as_deref().is_some_and(|k| !valid_key(k)) {
            errors.insert(0, FieldError::new("key", "invalid_key"));
        }
        if !errors.is_empty() {
            return Err(AppError::validation(errors));
        }
        retrying(|| self.update_once(store_id, id_or_key, &patch)).await
    }

    async fn update_once(&self, store_id: Uuid, id_or_key: &str, patch: &UpdateTaxonomy) -> AppResult<TaxonomyRow> {
        let mut tx = self.db.begin().await?;
        let mut row = find(&mut tx, store_id, id_or_key).await?;
        if let Some(parent) = patch.parent_id {
            check_parent(&mut tx, store_id, Some(row.id), parent).await?;
            row.parent_id = parent;
        }
        // Stored values of fields that are removed or change type no longer fit: they go.
        let mut dropped = vec![];
        if let Some(schema) = &patch.schema {
            for old in &row.schema {
                if !schema.iter().any(|f| f.key == old.key && f.ty == old.ty) {
                    dropped.push(old.key.clone());
                }
            }
            row.schema = schema.clone();
        }
        if let Some(key) = &patch.key {
            row.key = key.clone();
        }
        if let Some(status) = patch.status {
            row.status = status;
        }
        row.updated_at = crate::now();
        tx.update_taxonomy(&row).await?;
        if !dropped.is_empty() {
            let affected = tx.delete_taxonomy_values(store_id, row.id, Some(&dropped)).await?;
            tx.refresh_search_text(store_id, &affected).await?;
            crate::services::events::profiles_updated(&mut tx, store_id, &affected).await?;
        }
        tx.commit().await?;
        Ok(row)
    }

    /// Deletes the definition and every value stored under it.
    pub async fn delete(&self, store_id: Uuid, id_or_key: &str) -> AppResult<()> {
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            let row = find(&mut tx, store_id, id_or_key).await?;
            let affected = tx.delete_taxonomy_values(store_id, row.id, None).await?;
            tx.delete_taxonomy(store_id, row.id).await?;
            tx.refresh_search_text(store_id, &affected).await?;
            crate::services::events::profiles_updated(&mut tx, store_id, &affected).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }
}
