//! Profiles as the admin sees them: create, find, update, merge, erase, export, order links.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use crate::domain::taxonomy::{TaxonomyEntry, TaxonomyQuery, parse_query, validate_entries};
use crate::domain::{Cursor, Email, Page};
use crate::error::{AppError, AppResult, FieldError};
use crate::repo::{
    LinkOutcome, MergeOutcome, NewProfile, OrderRow, ProfileChange, ProfileDetails, ProfileSearch, Repo, RepoError,
    SortField, SortValue,
};
use crate::services::taxonomies::check_status;

/// `find`'s parameters as received.
#[derive(Debug, Default)]
pub struct FindParams {
    pub query: Option<String>,
    pub taxonomy_query: Option<String>,
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub sort_field: Option<String>,
    pub sort_direction: Option<String>,
}

#[derive(Debug, Default)]
pub struct ProfileUpdate {
    pub email: Option<Option<String>>,
    pub taxonomies: Option<Vec<TaxonomyEntry>>,
    pub status: Option<String>,
}

#[derive(Debug)]
pub struct OrderInput {
    pub order_id: String,
    pub total: Option<i64>,
    pub currency: Option<String>,
    pub status: Option<String>,
    pub placed_at: Option<i64>,
    pub metadata: Option<Value>,
}

/// Everything held about a profile.
pub struct ProfileExport {
    pub profile: ProfileDetails,
    pub orders: Vec<OrderRow>,
}

pub struct Profiles {
    repo: Arc<dyn Repo>,
}

fn email_taken() -> AppError {
    AppError::Conflict { code: "email_taken", message: "another profile of this store has this email".into() }
}

impl Profiles {
    pub fn new(repo: Arc<dyn Repo>) -> Self {
        Self { repo }
    }

    /// Validates entries against the store's active taxonomies; errors name the field.
    async fn values(
        &self,
        store_id: Uuid,
        entries: &[TaxonomyEntry],
    ) -> Result<Vec<crate::domain::taxonomy::TaxonomyValue>, AppError> {
        let ids: Vec<Uuid> = entries.iter().map(|e| e.taxonomy_id).collect();
        let defs = self.repo.schemas(store_id, &ids, true).await?;
        validate_entries(entries, &defs).map_err(AppError::validation)
    }

    /// Idempotent on email: the existing profile is returned with `false`.
    pub async fn create(
        &self,
        store_id: Uuid,
        email: &str,
        taxonomies: &[TaxonomyEntry],
    ) -> AppResult<(ProfileDetails, bool)> {
        let email = Email::parse(email).map_err(|e| AppError::invalid("email", e))?;
        let values = self.values(store_id, taxonomies).await?;
        let now = crate::now();
        let new = NewProfile {
            store_id,
            id: Uuid::now_v7(),
            email: Some(email),
            verified: false,
            status: "active".into(),
            values,
            created_at: now,
        };
        Ok(self.repo.create_profile(&new).await?)
    }

    pub async fn get(&self, store_id: Uuid, id: Uuid) -> AppResult<ProfileDetails> {
        self.repo.profile(store_id, id).await?.ok_or(AppError::NotFound("profile"))
    }

    pub async fn find(&self, store_id: Uuid, p: FindParams) -> AppResult<(Vec<ProfileDetails>, Option<String>)> {
        let mut errors = vec![];
        let page = Page::parse(p.limit).map_err(|e| errors.push(FieldError::new("limit", e))).ok();
        let sort = match p.sort_field.as_deref() {
            None | Some("created_at" | "createdAt") => SortField::CreatedAt,
            Some("updated_at" | "updatedAt") => SortField::UpdatedAt,
            Some("email") => SortField::Email,
            Some(_) => {
                errors.push(FieldError::new("sort_field", "invalid_value"));
                SortField::CreatedAt
            }
        };
        let descending = match p.sort_direction.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(_) => {
                errors.push(FieldError::new("sort_direction", "invalid_value"));
                false
            }
        };
        if let Some(status) = &p.status {
            check_status(status, &mut errors);
        }
        let filters = match p.taxonomy_query.as_deref().filter(|q| !q.trim().is_empty()) {
            None => vec![],
            Some(raw) => {
                let ids: Vec<Uuid> = serde_json::from_str::<Vec<TaxonomyQuery>>(raw)
                    .map(|qs| qs.iter().map(|q| q.taxonomy_id).collect())
                    .unwrap_or_default();
                let defs: HashMap<_, _> = self.repo.schemas(store_id, &ids, false).await?;
                parse_query(raw, &defs).unwrap_or_else(|e| {
                    errors.extend(e);
                    vec![]
                })
            }
        };
        let text = p.query.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(str::to_lowercase);
        let scope = format!(
            "profiles\n{store_id}\n{}\n{}\n{}\n{sort:?}\n{descending}",
            text.as_deref().unwrap_or_default(),
            p.taxonomy_query.as_deref().unwrap_or_default(),
            p.status.as_deref().unwrap_or_default()
        );
        let after = match p.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => match Cursor::decode(c, &scope) {
                Err(e) => {
                    errors.push(FieldError::new("cursor", e));
                    None
                }
                Ok(cursor) => {
                    let key = match (sort, cursor.after.first()) {
                        (SortField::Email, Some(Value::String(s))) => Some(SortValue::Text(s.clone())),
                        (SortField::CreatedAt | SortField::UpdatedAt, Some(Value::Number(n))) => {
                            n.as_i64().map(SortValue::Int)
                        }
                        _ => None,
                    };
                    let id = cursor.after.get(1).and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok());
                    match (key, id) {
                        (Some(k), Some(id)) => Some((k, id)),
                        _ => {
                            errors.push(FieldError::new("cursor", "invalid_cursor"));
                            None
                        }
                    }
                }
            },
        };
        if !errors.is_empty() {
            return Err(AppError::validation(errors));
        }
        let limit = page.map(|p| p.limit).unwrap_or(Page::DEFAULT);
        let search = ProfileSearch {
            store_id,
            status: p.status,
            id: text.as_deref().and_then(|t| Uuid::parse_str(t).ok()),
            text,
            filters,
            sort,
            descending,
            after,
            limit: limit + 1,
        };
        let mut rows = self.repo.find_profiles(&search).await?;
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|d| {
                let key = match sort {
                    SortField::CreatedAt => Value::from(d.profile.created_at),
                    SortField::UpdatedAt => Value::from(d.profile.updated_at),
                    SortField::Email => Value::from(d.profile.email.as_deref().unwrap_or_default().to_lowercase()),
                };
                Cursor { after: vec![key, Value::from(d.profile.id.to_string())] }.encode(&scope)
            })
        } else {
            None
        };
        Ok((rows, next))
    }

    pub async fn update(&self, store_id: Uuid, id: Uuid, u: ProfileUpdate) -> AppResult<ProfileDetails> {
        let mut errors = vec![];
        let email = match u.email {
            None => None,
            Some(None) => Some(None),
            Some(Some(e)) => match Email::parse(&e) {
                Ok(e) => Some(Some(e)),
                Err(err) => {
                    errors.push(FieldError::new("email", err));
                    None
                }
            },
        };
        if let Some(status) = &u.status {
            check_status(status, &mut errors);
        }
        let values = match &u.taxonomies {
            None => None,
            Some(entries) => match self.values(store_id, entries).await {
                Ok(v) => Some(v),
                Err(AppError::Validation { errors: e, .. }) => {
                    errors.extend(e);
                    None
                }
                Err(other) => return Err(other),
            },
        };
        if !errors.is_empty() {
            return Err(AppError::validation(errors));
        }
        let change = ProfileChange { email, values, status: u.status, now: crate::now() };
        match self.repo.update_profile(store_id, id, &change).await {
            Err(RepoError::Conflict) => Err(email_taken()),
            Ok(None) => Err(AppError::NotFound("profile")),
            Ok(Some(d)) => Ok(d),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn merge(&self, store_id: Uuid, target: Uuid, source: Uuid) -> AppResult<ProfileDetails> {
        if target == source {
            return Err(AppError::invalid("source_id", "same_as_target"));
        }
        match self.repo.merge_profiles(store_id, target, source, crate::now()).await? {
            MergeOutcome::NotFound => Err(AppError::NotFound("profile")),
            MergeOutcome::Merged => self.get(store_id, target).await,
        }
    }

    pub async fn erase(&self, store_id: Uuid, id: Uuid) -> AppResult<()> {
        if self.repo.erase_profile(store_id, id).await? { Ok(()) } else { Err(AppError::NotFound("profile")) }
    }

    pub async fn export(&self, store_id: Uuid, id: Uuid) -> AppResult<ProfileExport> {
        let profile = self.get(store_id, id).await?;
        let mut orders = vec![];
        let mut after = None;
        loop {
            let page = self.repo.orders(store_id, id, after, 200).await?;
            let done = page.len() < 200;
            after = page.last().map(|o| (o.created_at, o.order_id.clone()));
            orders.extend(page);
            if done {
                break;
            }
        }
        Ok(ProfileExport { profile, orders })
    }

    /// Links an order; the same link again is answered with the existing one (`false`).
    pub async fn link_order(&self, store_id: Uuid, profile_id: Uuid, o: OrderInput) -> AppResult<(OrderRow, bool)> {
        let mut errors = vec![];
        let order_id = o.order_id.trim().to_string();
        if order_id.is_empty() || order_id.chars().count() > 200 {
            errors.push(FieldError::new("order_id", if order_id.is_empty() { "required" } else { "too_long" }));
        }
        let currency = o.currency.map(|c| c.trim().to_ascii_uppercase());
        if currency.as_deref().is_some_and(|c| c.len() != 3 || !c.bytes().all(|b| b.is_ascii_alphabetic())) {
            errors.push(FieldError::new("currency", "invalid_currency"));
        }
        if o.metadata.as_ref().is_some_and(|m| !m.is_object()) {
            errors.push(FieldError::new("metadata", "invalid_type"));
        }
        if !errors.is_empty() {
            return Err(AppError::validation(errors));
        }
        self.get(store_id, profile_id).await?;
        let row = OrderRow {
            store_id,
            order_id,
            profile_id,
            total: o.total,
            currency,
            status: o.status.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
            placed_at: o.placed_at,
            metadata: o.metadata.unwrap_or_else(|| Value::Object(Default::default())),
            created_at: crate::now(),
        };
        match self.repo.link_order(&row).await? {
            LinkOutcome::Linked(o) => Ok((o, true)),
            LinkOutcome::Existing(o) => Ok((o, false)),
            LinkOutcome::Elsewhere => Err(AppError::Conflict {
                code: "order_linked_elsewhere",
                message: "this order is linked to another profile".into(),
            }),
        }
    }

    pub async fn orders(
        &self,
        store_id: Uuid,
        profile_id: Uuid,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> AppResult<Vec<OrderRow>> {
        self.get(store_id, profile_id).await?;
        Ok(self.repo.orders(store_id, profile_id, after, limit).await?)
    }
}
