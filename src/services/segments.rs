//! Saved segments (issue 16): `find`'s filters stored under a key, to list, count and export the
//! profiles they match at the time of asking (a segment stores no members).

use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::taxonomy::valid_key;
use crate::domain::{Keyset, Status, double_option};
use crate::error::{AppError, AppResult, FieldError};
use crate::repo::{Database, ProfileSearch, SegmentRow, Tx};
use crate::services::profiles::search_filters;

const MAX_NAME: usize = 200;
const MAX_QUERY: usize = 200;
const MAX_TAXONOMY_QUERY: usize = 20_000;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSegment {
    /// 1–64 of `[A-Za-z0-9_-]`, unique per store.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub key: String,
    #[schema(max_length = 200)]
    pub name: Option<String>,
    /// As `find`'s `query`: a substring of the email or a text taxonomy value, or a profile id.
    #[schema(max_length = 200)]
    pub query: Option<String>,
    /// As `find`'s `taxonomy_query`: a JSON-encoded `TaxonomyQuery[]`.
    pub taxonomy_query: Option<String>,
    /// The profiles' status; absent: any.
    pub status: Option<Status>,
}

/// Absent fields stay; `null` clears a filter.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSegment {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub key: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 200)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 200)]
    pub query: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub taxonomy_query: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Status>)]
    pub status: Option<Option<Status>>,
}

pub struct Segments {
    db: Database,
}

/// A segment's filters as a search (`created_at` order, no keyset), validated against the
/// store's taxonomies as they are now: a segment whose taxonomy went answers 422.
pub(crate) async fn segment_search(tx: &mut Tx, segment: &SegmentRow) -> AppResult<ProfileSearch> {
    let search = search_filters(
        tx,
        segment.store_id,
        segment.query.as_deref(),
        segment.taxonomy_query.as_deref(),
        segment.status,
    )
    .await?;
    search.map_err(AppError::validation)
}

/// Checks a segment's fields; the filters are checked like `find`'s.
async fn validate(tx: &mut Tx, s: &SegmentRow) -> AppResult<()> {
    let mut errors = vec![];
    if !valid_key(&s.key) {
        errors.push(FieldError::new("key", "invalid_key"));
    }
    if s.name.as_ref().is_some_and(|n| n.chars().count() > MAX_NAME) {
        errors.push(FieldError::new("name", "too_long"));
    }
    if s.query.as_ref().is_some_and(|q| q.chars().count() > MAX_QUERY) {
        errors.push(FieldError::new("query", "too_long"));
    }
    if s.taxonomy_query.as_ref().is_some_and(|q| q.len() > MAX_TAXONOMY_QUERY) {
        errors.push(FieldError::new("taxonomy_query", "too_long"));
    } else if let Err(e) =
        search_filters(tx, s.store_id, s.query.as_deref(), s.taxonomy_query.as_deref(), s.status).await?
    {
        errors.extend(e);
    }
    if errors.is_empty() { Ok(()) } else { Err(AppError::validation(errors)) }
}

fn blank_is_none(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl Segments {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub async fn create(&self, store_id: Uuid, input: CreateSegment) -> AppResult<SegmentRow> {
        let now = crate::now();
        let row = SegmentRow {
            store_id,
            id: Uuid::now_v7(),
            key: input.key,
            name: input.name,
            query: blank_is_none(input.query),
            taxonomy_query: blank_is_none(input.taxonomy_query),
            status: input.status,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.db.begin().await?;
        validate(&mut tx, &row).await?;
        tx.insert_segment(&row).await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn get(&self, store_id: Uuid, id_or_key: &str) -> AppResult<SegmentRow> {
        self.db.auto().segment(store_id, id_or_key).await?.ok_or(AppError::NotFound("segment"))
    }

    pub async fn list(&self, store_id: Uuid, keyset: &Keyset) -> AppResult<Vec<SegmentRow>> {
        let after = keyset.after_id().map_err(|e| AppError::validation(vec![e]))?;
        Ok(self.db.auto().segments(store_id, after, keyset.fetch()).await?)
    }

    pub async fn update(&self, store_id: Uuid, id_or_key: &str, patch: UpdateSegment) -> AppResult<SegmentRow> {
        let mut tx = self.db.begin().await?;
        let mut row = tx.segment(store_id, id_or_key).await?.ok_or(AppError::NotFound("segment"))?;
        if let Some(key) = patch.key {
            row.key = key;
        }
        if let Some(name) = patch.name {
            row.name = name;
        }
        if let Some(query) = patch.query {
            row.query = blank_is_none(query);
        }
        if let Some(q) = patch.taxonomy_query {
            row.taxonomy_query = blank_is_none(q);
        }
        if let Some(status) = patch.status {
            row.status = status;
        }
        row.updated_at = crate::now();
        validate(&mut tx, &row).await?;
        tx.update_segment(&row).await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn delete(&self, store_id: Uuid, id_or_key: &str) -> AppResult<()> {
        let mut tx = self.db.begin().await?;
        let row = tx.segment(store_id, id_or_key).await?.ok_or(AppError::NotFound("segment"))?;
        tx.delete_segment(store_id, row.id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// How many profiles the segment matches now.
    pub async fn count(&self, store_id: Uuid, id_or_key: &str) -> AppResult<(SegmentRow, i64)> {
        let mut db = self.db.auto();
        let row = db.segment(store_id, id_or_key).await?.ok_or(AppError::NotFound("segment"))?;
        let search = segment_search(&mut db, &row).await?;
        let count = db.count_profiles(&search).await?;
        Ok((row, count))
    }
}
