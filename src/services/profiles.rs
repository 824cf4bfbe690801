//! Profiles as the admin sees them: create, find, update, §3.1 merge, erasure, export, order links.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::taxonomy::{TaxonomyEntry, TaxonomyQuery, TaxonomyValue, parse_query, validate_entries};
use crate::domain::{Email, EventType, Keyset, SortDirection, SortField, Status, double_option};
use crate::error::{AppError, AppResult, FieldError};
use crate::repo::{
    ConsentRow, Database, NewProfile, OrderRow, ProfileDetails, ProfileSearch, SortValue, SubscriptionRow, Tx,
};
use crate::services::consents::{self, Consent, ConsentAction};
use crate::services::{events, retrying};
use crate::views;

/// `find`'s query, as the request gives it.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindProfiles {
    /// Case-insensitive substring of the email or a text taxonomy value, or an exact profile id.
    pub query: Option<String>,
    /// JSON-encoded `TaxonomyQuery[]`; all filters and fields are AND-ed.
    pub taxonomy_query: Option<String>,
    /// Only profiles of this status; profiles of every status when absent.
    pub status: Option<Status>,
    /// 1–200, default 50.
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// `created_at` (default), `updated_at` or `email`.
    pub sort_field: Option<SortField>,
    /// `asc` (default) or `desc`.
    pub sort_direction: Option<SortDirection>,
}

/// Absent fields stay. `taxonomies` replaces all entries. A changed email is no longer verified;
/// `email: null` removes it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfile {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    pub taxonomies: Option<Vec<TaxonomyEntry>>,
    pub status: Option<Status>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkOrder {
    #[serde(alias = "orderId")]
    pub order_id: String,
    #[serde(default, deserialize_with = "crate::domain::opt_whole_i64")]
    pub total: Option<i64>,
    /// ISO 4217, e.g. `EUR`.
    pub currency: Option<String>,
    pub status: Option<String>,
    #[serde(alias = "placedAt")]
    #[serde(default, deserialize_with = "crate::domain::opt_whole_i64")]
    pub placed_at: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// Everything held about a profile.
pub struct ProfileExport {
    pub profile: ProfileDetails,
    pub orders: Vec<OrderRow>,
    pub consents: Vec<ConsentRow>,
}

pub struct Profiles {
    db: Database,
}

/// Validates entries against the store's active taxonomies (share-locked inside a transaction,
/// so a definition cannot go before the values written against it); errors name the field.
async fn values(tx: &mut Tx, store_id: Uuid, entries: &[TaxonomyEntry]) -> AppResult<Vec<TaxonomyValue>> {
    let ids: Vec<Uuid> = entries.iter().map(|e| e.taxonomy_id).collect();
    let defs = tx.schemas(store_id, &ids, true).await?;
    validate_entries(entries, &defs).map_err(AppError::validation)
}

/// §3.1, inside the caller's transaction: `source` is merged into `target` and deleted. False
/// (nothing changed) when either is not a profile of the store. Shared by the merge route and by
/// connect / verify, where a guest carries its cart into the profile it signs in to.
pub(crate) async fn merge_into(tx: &mut Tx, store_id: Uuid, target: Uuid, source: Uuid, now: i64) -> AppResult<bool> {
    // Both rows locked in id order, then the audiences whose counts change, also in id order: two
    // merges, erasures or subscribes over the same rows take their locks in one order.
    let rows = tx.lock_profiles(store_id, &[target, source]).await?;
    let (Some(t), Some(s)) = (rows.iter().find(|r| r.row.id == target), rows.iter().find(|r| r.row.id == source))
    else {
        return Ok(false);
    };
    let (t, s) = (t.clone(), s.clone());
    tx.lock_audiences_of(store_id, &[target, source]).await?;

    // Taxonomies: the target wins per field; the source's other fields move over.
    tx.delete_shadowed_values(store_id, target, source).await?;
    tx.move_values(store_id, source, target).await?;
    // Promo usage is summed; order links move.
    tx.add_promo_usage(store_id, source, target).await?;
    tx.move_orders(store_id, source, target).await?;
    // Subscriptions: where both have one to an audience, the stronger survives (ties keep the
    // target's): active > cancellation_scheduled > pending > cancelled/expired.
    let kept: HashMap<Uuid, _> =
        tx.subscriptions_of_profile(store_id, target).await?.into_iter().map(|s| (s.audience_id, s)).collect();
    let mut moved = vec![];
    for sub in tx.subscriptions_of_profile(store_id, source).await? {
        match kept.get(&sub.audience_id) {
            Some(theirs) if sub.status.strength() <= theirs.status.strength() => {
                tx.delete_subscription_by_id(store_id, sub.id).await?;
            }
            Some(theirs) => {
                tx.delete_subscription_by_id(store_id, theirs.id).await?;
                tx.move_subscription(store_id, sub.id, target).await?;
                moved.push(sub);
            }
            None => {
                tx.move_subscription(store_id, sub.id, target).await?;
                moved.push(sub);
            }
        }
    }
    // The consent ledger goes with the person: the source's records move to the target, and
    // each moved subscription records the merge.
    tx.move_consents(store_id, source, target).await?;
    for sub in moved {
        let after = SubscriptionRow { profile_id: target, ..sub };
        let consent = Consent::new(ConsentAction::Merge).source(format!("merged from profile {source}"));
        consents::append(tx, &after, &consent).await?;
    }
    // The source goes (its sessions and remaining rows with it). Its email passes to a target
    // that has none; otherwise its sign-in codes go too.
    tx.delete_profile(store_id, source).await?;
    match (&t.email_key, &s.row.email) {
        (None, Some(email)) => {
            let email = Email::parse(email).map_err(|e| AppError::internal(anyhow::anyhow!("stored email: {e}")))?;
            tx.set_email(store_id, target, Some(&email)).await?;
        }
        _ => {
            if let Some(key) = &s.email_key {
                tx.delete_codes(store_id, key).await?;
            }
        }
    }
    // Verified is OR-ed; a moved email keeps the source's verification.
    if t.row.verified || s.row.verified {
        tx.set_verified(store_id, target, now).await?;
    }
    tx.touch_profile(store_id, target, now).await?;
    tx.refresh_search_text(store_id, &[target]).await?;
    Ok(true)
}

/// `find`'s filters (`query`, `taxonomy_query`, `status`), validated against the store's
/// taxonomies: a search in `created_at` order without keyset, for `find`, segments and exports.
/// The inner error lists what is wrong with the filters.
pub(crate) async fn search_filters(
    db: &mut Tx,
    store_id: Uuid,
    query: Option<&str>,
    taxonomy_query: Option<&str>,
    status: Option<Status>,
) -> AppResult<Result<ProfileSearch, Vec<FieldError>>> {
    let text = query.map(str::trim).filter(|q| !q.is_empty()).map(str::to_lowercase);
    let filters = match taxonomy_query.filter(|q| !q.trim().is_empty()) {
        None => vec![],
        Some(raw) => {
            let ids: Vec<Uuid> = serde_json::from_str::<Vec<TaxonomyQuery>>(raw)
                .map(|qs| qs.iter().map(|q| q.taxonomy_id).collect())
                .unwrap_or_default();
            let defs = db.schemas(store_id, &ids, false).await?;
            match parse_query(raw, &defs) {
                Ok(filters) => filters,
                Err(e) => return Ok(Err(e)),
            }
        }
    };
    Ok(Ok(ProfileSearch {
        store_id,
        status,
        id: text.as_deref().and_then(|t| Uuid::parse_str(t).ok()),
        text,
        filters,
        sort: SortField::CreatedAt,
        descending: false,
        after: None,
        limit: 0,
    }))
}

impl Profiles {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Idempotent on email: the existing profile is returned with `false`.
    pub async fn create(
        &self,
        store_id: Uuid,
        email: &str,
        taxonomies: &[TaxonomyEntry],
    ) -> AppResult<(ProfileDetails, bool)> {
        let email = Email::parse(email).map_err(|e| AppError::invalid("email", e))?;
        let mut tx = self.db.begin().await?;
        let values = values(&mut tx, store_id, taxonomies).await?;
        let now = crate::now();
        let new = NewProfile {
            store_id,
            id: Uuid::now_v7(),
            email: Some(email.clone()),
            verified: false,
            status: Status::Active,
            values,
            created_at: now,
        };
        let created = tx.insert_profile(&new).await?;
        let id = match created {
            true => new.id,
            false => tx.profile_id_by_email(store_id, &email.key()).await?.ok_or(AppError::NotFound("profile"))?,
        };
        let details = tx.profile(store_id, id).await?.ok_or(AppError::NotFound("profile"))?;
        if created {
            events::record(
                &mut tx,
                store_id,
                EventType::ProfileCreated,
                Some(id),
                views::Profile::from(details.clone()),
            )
            .await?;
        }
        tx.commit().await?;
        Ok((details, created))
    }

    pub async fn get(&self, store_id: Uuid, id: Uuid) -> AppResult<ProfileDetails> {
        self.db.auto().profile(store_id, id).await?.ok_or(AppError::NotFound("profile"))
    }

    pub async fn find(&self, store_id: Uuid, q: FindProfiles) -> AppResult<(Vec<ProfileDetails>, Option<String>)> {
        let sort = q.sort_field.unwrap_or_default();
        let descending = q.sort_direction == Some(SortDirection::Desc);
        let text = q.query.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(str::to_lowercase);
        let scope = format!(
            "profiles\n{store_id}\n{}\n{}\n{}\n{sort:?}\n{descending}",
            text.as_deref().unwrap_or_default(),
            q.taxonomy_query.as_deref().unwrap_or_default(),
            q.status.map(|s| s.as_str()).unwrap_or_default()
        );
        let mut errors = vec![];
        let keyset = Keyset::parse(q.limit, q.cursor.as_deref(), scope).map_err(|e| errors.extend(e)).ok();
        let mut db = self.db.auto();
        let filters = search_filters(&mut db, store_id, q.query.as_deref(), q.taxonomy_query.as_deref(), q.status)
            .await?
            .map_err(|e| errors.extend(e))
            .ok();
        let after = match keyset.as_ref().and_then(|k| k.after.as_ref()) {
            None => None,
            Some(key) => {
                let value = match (sort, key.first()) {
                    (SortField::Email, Some(Value::String(s))) => Some(SortValue::Text(s.clone())),
                    (SortField::CreatedAt | SortField::UpdatedAt, Some(Value::Number(n))) => {
                        n.as_i64().map(SortValue::Int)
                    }
                    _ => None,
                };
                let id = key.get(1).and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok());
                match (value, id) {
                    (Some(v), Some(id)) => Some((v, id)),
                    _ => {
                        errors.push(FieldError::new("cursor", "invalid_cursor"));
                        None
                    }
                }
            }
        };
        let (Some(keyset), Some(filters)) = (keyset, filters) else {
            return Err(AppError::validation(errors));
        };
        if !errors.is_empty() {
            return Err(AppError::validation(errors));
        }
        let search = ProfileSearch { sort, descending, after, limit: keyset.fetch(), ..filters };
        let rows = db.find_profiles(&search).await?;
        Ok(keyset.page(rows, |d| {
            let key = match sort {
                SortField::CreatedAt => Value::from(d.profile.created_at),
                SortField::UpdatedAt => Value::from(d.profile.updated_at),
                SortField::Email => Value::from(d.profile.email.as_deref().unwrap_or_default().to_lowercase()),
            };
            vec![key, Value::from(d.profile.id.to_string())]
        }))
    }

    pub async fn update(&self, store_id: Uuid, id: Uuid, u: UpdateProfile) -> AppResult<ProfileDetails> {
        let email = match &u.email {
            None => None,
            Some(None) => Some(None),
            Some(Some(e)) => Some(Some(Email::parse(e).map_err(|err| AppError::invalid("email", err))?)),
        };
        retrying(|| self.update_once(store_id, id, email.as_ref(), &u)).await
    }

    async fn update_once(
        &self,
        store_id: Uuid,
        id: Uuid,
        email: Option<&Option<Email>>,
        u: &UpdateProfile,
    ) -> AppResult<ProfileDetails> {
        let mut tx = self.db.begin().await?;
        let values = match &u.taxonomies {
            None => None,
            Some(entries) => Some(values(&mut tx, store_id, entries).await?),
        };
        let current = tx.lock_profile(store_id, id).await?.ok_or(AppError::NotFound("profile"))?;
        if let Some(email) = email {
            if email.as_ref().map(Email::key) != current.email_key {
                tx.set_email(store_id, id, email.as_ref()).await?;
            } else if let Some(e) = email {
                // The same address in another letter case: kept as written.
                tx.respell_email(store_id, id, e).await?;
            }
        }
        if let Some(values) = &values {
            tx.delete_values(store_id, id).await?;
            tx.insert_values(store_id, id, values).await?;
        }
        if let Some(status) = u.status {
            tx.set_profile_status(store_id, id, status).await?;
        }
        tx.touch_profile(store_id, id, crate::now()).await?;
        tx.refresh_search_text(store_id, &[id]).await?;
        let details = tx.profile(store_id, id).await?.ok_or(AppError::NotFound("profile"))?;
        events::record(&mut tx, store_id, EventType::ProfileUpdated, Some(id), views::Profile::from(details.clone()))
            .await?;
        tx.commit().await?;
        Ok(details)
    }

    pub async fn merge(&self, store_id: Uuid, target: Uuid, source: Uuid) -> AppResult<ProfileDetails> {
        if target == source {
            return Err(AppError::invalid("source_id", "same_as_target"));
        }
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            if !merge_into(&mut tx, store_id, target, source, crate::now()).await? {
                return Err(AppError::NotFound("profile"));
            }
            events::merged(&mut tx, store_id, target, source).await?;
            let merged = tx.profile(store_id, target).await?.ok_or(AppError::NotFound("profile"))?;
            tx.commit().await?;
            Ok(merged)
        })
        .await
    }

    /// GDPR erasure: the profile and every row holding its personal data, the address's sign-in
    /// codes and its queued mail. The profile is locked first, so a subscribe that is queuing mail
    /// to it finishes before (and its mail is deleted here) or finds the profile gone.
    pub async fn erase(&self, store_id: Uuid, id: Uuid) -> AppResult<()> {
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            let profile = tx.lock_profile(store_id, id).await?.ok_or(AppError::NotFound("profile"))?;
            tx.lock_audiences_of(store_id, &[id]).await?;
            if let Some(key) = &profile.email_key {
                tx.delete_codes(store_id, key).await?;
                tx.delete_mail_to(store_id, key).await?;
            }
            tx.delete_profile(store_id, id).await?;
            events::erased(&mut tx, store_id, id).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub async fn export(&self, store_id: Uuid, id: Uuid) -> AppResult<ProfileExport> {
        let mut db = self.db.auto();
        let profile = db.profile(store_id, id).await?.ok_or(AppError::NotFound("profile"))?;
        let mut orders = vec![];
        let mut after = None;
        loop {
            let page = db.orders(store_id, id, after, 200).await?;
            let done = page.len() < 200;
            after = page.last().map(|o| (o.created_at, o.order_id.clone()));
            orders.extend(page);
            if done {
                break;
            }
        }
        let consents = crate::services::consents::Consents::new(self.db.clone()).all(store_id, id).await?;
        Ok(ProfileExport { profile, orders, consents })
    }

    /// Links an order; the same link again is answered with the existing one (`false`).
    pub async fn link_order(&self, store_id: Uuid, profile_id: Uuid, o: LinkOrder) -> AppResult<(OrderRow, bool)> {
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
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            // Locked: a merge or erasure of this profile finishes first, or waits for the link.
            tx.lock_profile(store_id, profile_id).await?.ok_or(AppError::NotFound("profile"))?;
            if tx.insert_order(&row).await? {
                events::record(
                    &mut tx,
                    store_id,
                    EventType::OrderLinked,
                    Some(profile_id),
                    views::Order::from(row.clone()),
                )
                .await?;
                tx.commit().await?;
                return Ok((row.clone(), true));
            }
            let existing = tx.order(store_id, &row.order_id).await?.ok_or(AppError::NotFound("order"))?;
            if existing.profile_id != profile_id {
                return Err(AppError::Conflict {
                    code: "order_linked_elsewhere",
                    message: "this order is linked to another profile".into(),
                });
            }
            Ok((existing, false))
        })
        .await
    }

    pub async fn orders(&self, store_id: Uuid, profile_id: Uuid, keyset: &Keyset) -> AppResult<Vec<OrderRow>> {
        let after = match &keyset.after {
            None => None,
            Some(key) => match (key.first().and_then(Value::as_i64), key.get(1).and_then(Value::as_str)) {
                (Some(at), Some(id)) => Some((at, id.to_string())),
                _ => return Err(AppError::invalid("cursor", "invalid_cursor")),
            },
        };
        let mut db = self.db.auto();
        db.profile(store_id, profile_id).await?.ok_or(AppError::NotFound("profile"))?;
        Ok(db.orders(store_id, profile_id, after, keyset.fetch()).await?)
    }
}
