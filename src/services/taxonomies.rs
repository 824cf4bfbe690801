//! Taxonomy definitions: typed schemas that profile entries are validated against.

use std::sync::Arc;

use uuid::Uuid;

use crate::domain::taxonomy::{FieldDef, valid_key, validate_schema};
use crate::error::{AppError, AppResult, FieldError};
use crate::repo::{Repo, RepoError, TaxonomyRow};

pub struct TaxonomyInput {
    pub key: String,
    pub parent_id: Option<Uuid>,
    pub schema: Vec<FieldDef>,
    pub status: Option<String>,
}

#[derive(Default)]
pub struct TaxonomyPatch {
    pub key: Option<String>,
    pub parent_id: Option<Option<Uuid>>,
    pub schema: Option<Vec<FieldDef>>,
    pub status: Option<String>,
}

pub struct Taxonomies {
    repo: Arc<dyn Repo>,
}

pub(crate) fn check_status(status: &str, errors: &mut Vec<FieldError>) {
    if !matches!(status, "active" | "archived") {
        errors.push(FieldError::new("status", "invalid_value"));
    }
}

fn key_taken() -> AppError {
    AppError::Conflict { code: "key_taken", message: "another taxonomy of this store has this key".into() }
}

impl Taxonomies {
    pub fn new(repo: Arc<dyn Repo>) -> Self {
        Self { repo }
    }

    async fn check_parent(&self, store_id: Uuid, id: Option<Uuid>, parent: Option<Uuid>) -> AppResult<()> {
        if let Some(parent) = parent {
            let found = self.repo.taxonomy(store_id, Some(parent), "").await?;
            if found.is_none() || Some(parent) == id {
                return Err(AppError::invalid("parent_id", "unknown_taxonomy"));
            }
        }
        Ok(())
    }

    pub async fn create(&self, store_id: Uuid, input: TaxonomyInput) -> AppResult<TaxonomyRow> {
        let mut errors = validate_schema(&input.schema);
        if !valid_key(&input.key) {
            errors.insert(0, FieldError::new("key", "invalid_key"));
        }
        let status = input.status.unwrap_or_else(|| "active".into());
        check_status(&status, &mut errors);
        if !errors.is_empty() {
            return Err(AppError::validation(errors));
        }
        self.check_parent(store_id, None, input.parent_id).await?;
        let now = crate::now();
        let row = TaxonomyRow {
            store_id,
            id: Uuid::now_v7(),
            key: input.key,
            parent_id: input.parent_id,
            schema: input.schema,
            status,
            created_at: now,
            updated_at: now,
        };
        match self.repo.insert_taxonomy(&row).await {
            Err(RepoError::Conflict) => Err(key_taken()),
            other => other.map(|_| row).map_err(Into::into),
        }
    }

    /// By id, or by key when the path segment is not a UUID (or no taxonomy has it as id).
    pub async fn get(&self, store_id: Uuid, id_or_key: &str) -> AppResult<TaxonomyRow> {
        let id = Uuid::parse_str(id_or_key).ok();
        self.repo.taxonomy(store_id, id, id_or_key).await?.ok_or(AppError::NotFound("taxonomy"))
    }

    pub async fn list(&self, store_id: Uuid, after: Option<Uuid>, limit: u32) -> AppResult<Vec<TaxonomyRow>> {
        Ok(self.repo.taxonomies(store_id, after, limit).await?)
    }

    pub async fn update(&self, store_id: Uuid, id_or_key: &str, patch: TaxonomyPatch) -> AppResult<TaxonomyRow> {
        let mut errors = patch.schema.as_deref().map(validate_schema).unwrap_or_default();
        if patch.key.as_deref().is_some_and(|k| !valid_key(k)) {
            errors.insert(0, FieldError::new("key", "invalid_key"));
        }
        if let Some(status) = &patch.status {
            check_status(status, &mut errors);
        }
        if !errors.is_empty() {
            return Err(AppError::validation(errors));
        }
        let mut row = self.get(store_id, id_or_key).await?;
        if let Some(parent) = patch.parent_id {
            self.check_parent(store_id, Some(row.id), parent).await?;
            row.parent_id = parent;
        }
        // Stored values of fields that are removed or change type no longer fit: they go.
        let mut dropped = vec![];
        if let Some(schema) = patch.schema {
            for old in &row.schema {
                if !schema.iter().any(|f| f.key == old.key && f.ty == old.ty) {
                    dropped.push(old.key.clone());
                }
            }
            row.schema = schema;
        }
        if let Some(key) = patch.key {
            row.key = key;
        }
        if let Some(status) = patch.status {
            row.status = status;
        }
        row.updated_at = crate::now();
        match self.repo.update_taxonomy(&row, &dropped).await {
            Err(RepoError::Conflict) => Err(key_taken()),
            other => other.map(|_| row).map_err(Into::into),
        }
    }

    pub async fn delete(&self, store_id: Uuid, id_or_key: &str) -> AppResult<()> {
        let row = self.get(store_id, id_or_key).await?;
        self.repo.delete_taxonomy(store_id, row.id).await?;
        Ok(())
    }
}
