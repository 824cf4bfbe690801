//! Events (CONTRACT §9.1): recorded by the other services inside the transaction of the change
//! they describe (so a rolled-back change has none), listed by the feed, and sent to the store's
//! webhook endpoints by `webhooks::WebhookWorker`. This service also keeps the endpoints.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::crypto::Keys;
use crate::domain::trimmed_within;
use crate::domain::{EndpointStatus, EventType, Keyset, double_option};
use crate::error::{AppError, AppResult, FieldError};
use crate::repo::{
    AttemptRow, Database, DeliveryRow, EndpointRow, EventRow, NewEvent, RECORDING_EVENTS as RECORDING, SubscriptionRow,
    Tx,
};
use crate::services::consents::{self, Consent};
use crate::views;
use crate::webhooks::{check_url, secret_text};

/// The new secret's predecessor keeps signing this long after a rotation.
pub const ROTATION_OVERLAP_SECS: i64 = 24 * 3600;
/// Endpoints per store.
const MAX_ENDPOINTS: usize = 20;

/// An event's `data`.
#[derive(Serialize)]
struct Data<T> {
    object: T,
}

/// An event of `kind` about `object`, for the transaction at hand.
pub fn new_event(store_id: Uuid, kind: EventType, subject: Option<Uuid>, object: impl Serialize) -> NewEvent {
    NewEvent {
        store_id,
        id: Uuid::now_v7(),
        kind,
        subject_id: subject,
        data: serde_json::value::to_raw_value(&Data { object }).expect("views serialize"),
        created_at: crate::now(),
    }
}

/// Records an event in `tx`: it exists exactly when the change it describes commits.
pub async fn record(
    tx: &mut Tx,
    store_id: Uuid,
    kind: EventType,
    subject: Option<Uuid>,
    object: impl Serialize,
) -> AppResult<()> {
    tx.insert_event(&new_event(store_id, kind, subject, object)).await?;
    Ok(())
}

/// A `profile.*` event carrying the profile as it is now in `tx`.
pub async fn profile(tx: &mut Tx, store_id: Uuid, kind: EventType, id: Uuid) -> AppResult<()> {
    if !RECORDING {
        return Ok(());
    }
    let details = tx.profile(store_id, id).await?.ok_or(AppError::NotFound("profile"))?;
    record(tx, store_id, kind, Some(id), views::Profile::from(details)).await
}

/// Several `profile.*` events carrying the profile as it is now, read once.
pub async fn profile_events(tx: &mut Tx, store_id: Uuid, id: Uuid, kinds: &[EventType]) -> AppResult<()> {
    if !RECORDING {
        return Ok(());
    }
    if kinds.is_empty() {
        return Ok(());
    }
    let details = tx.profile(store_id, id).await?.ok_or(AppError::NotFound("profile"))?;
    let object = views::object(views::Profile::from(details));
    let events: Vec<NewEvent> = kinds.iter().map(|k| new_event(store_id, *k, Some(id), &object)).collect();
    tx.insert_events(&events).await?;
    Ok(())
}

/// `profile.updated` of many profiles (a taxonomy change dropped their values), read in batches.
pub async fn profiles_updated(tx: &mut Tx, store_id: Uuid, ids: &[Uuid]) -> AppResult<()> {
    if !RECORDING {
        return Ok(());
    }
    for chunk in ids.chunks(500) {
        let events: Vec<NewEvent> = tx
            .profiles(store_id, chunk)
            .await?
            .into_iter()
            .map(|d| {
                let id = d.profile.id;
                new_event(store_id, EventType::ProfileUpdated, Some(id), views::Profile::from(d))
            })
            .collect();
        tx.insert_events(&events).await?;
    }
    Ok(())
}

/// `profile.merged`: ids only (the source is gone), then `profile.updated` of the target.
pub async fn merged(tx: &mut Tx, store_id: Uuid, target: Uuid, source: Uuid) -> AppResult<()> {
    let ids = json!({ "target_id": target, "source_id": source });
    record(tx, store_id, EventType::ProfileMerged, None, ids).await?;
    profile(tx, store_id, EventType::ProfileUpdated, target).await
}

/// `profile.erased` with the id only, and the profile's earlier events keep nothing but ids.
pub async fn erased(tx: &mut Tx, store_id: Uuid, id: Uuid) -> AppResult<()> {
    tx.scrub_events(store_id, &[id]).await?;
    record(tx, store_id, EventType::ProfileErased, Some(id), json!({ "id": id })).await
}

/// The events of a subscription written over `before`: `subscription.created` when there was
/// none or it had ended (a new subscribe starts over), then the event of its new status when the
/// status changed (`activated`, `cancellation_scheduled`, `cancelled`, `expired`).
///
/// Every call is also a record of the consent ledger (`consent`: what changed it, and on whose word).
pub async fn subscription_written(
    tx: &mut Tx,
    store_id: Uuid,
    before: Option<&SubscriptionRow>,
    after: &SubscriptionRow,
    consent: &Consent,
) -> AppResult<()> {
    let record = consents::record(tx, after, consent).await?;
    let starts_over = before.is_none_or(|b| b.status.is_ended());
    let mut kinds = vec![];
    if starts_over {
        kinds.push(EventType::SubscriptionCreated);
    }
    if starts_over || before.is_some_and(|b| b.status != after.status) {
        kinds.extend(EventType::of_subscription_status(after.status));
    }
    let object = views::object(views::Subscription::from(after.clone()));
    let events: Vec<NewEvent> =
        kinds.iter().map(|k| new_event(store_id, *k, Some(after.profile_id), &object)).collect();
    // The ledger's record and the events in one statement (Postgres).
    tx.insert_consent_with_events(&record, &events).await?;
    Ok(())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// https (http to private addresses only with `WEBHOOKS_ALLOW_PRIVATE=true`).
    #[schema(min_length = 1, max_length = 2000, pattern = "^[hH][tT][tT][pP][sS]?://")]
    pub url: String,
    /// Event types, or `"*"` for every type.
    #[schema(min_items = 1)]
    pub events: Vec<String>,
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// `active` (default) or `disabled`.
    pub status: Option<EndpointStatus>,
}

/// Absent fields stay; `description: null` clears it; `status: active` re-enables an endpoint
/// the worker disabled after days of failures.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    #[schema(min_length = 1, max_length = 2000, pattern = "^[hH][tT][tT][pP][sS]?://")]
    pub url: Option<String>,
    #[schema(min_items = 1)]
    pub events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 500)]
    pub description: Option<Option<String>>,
    pub status: Option<EndpointStatus>,
}

/// A delivery with its attempts, oldest attempt first.
pub type DeliveryLog = (DeliveryRow, Vec<AttemptRow>);

pub struct Events {
    db: Database,
    keys: Keys,
    allow_private: bool,
    /// The feed shows events this old or older: a transaction that commits late cannot slip an
    /// event in behind a consumer's cursor.
    feed_delay_secs: i64,
    /// Wakes the webhook worker (a manual retry).
    wake: Arc<Notify>,
}

impl Events {
    pub fn new(db: Database, keys: Keys, allow_private: bool, feed_delay_secs: i64, wake: Arc<Notify>) -> Self {
        Self { db, keys, allow_private, feed_delay_secs, wake }
    }

    /// The store's events, oldest first, of the given types (all when none are given).
    pub async fn feed(&self, store_id: Uuid, types: Option<&str>, keyset: &Keyset) -> AppResult<Vec<EventRow>> {
        let types = parse_types(types).map_err(|e| AppError::validation(vec![e]))?;
        let after = keyset.after_id().map_err(|e| AppError::validation(vec![e]))?;
        let until = crate::now() - self.feed_delay_secs;
        Ok(self.db.auto().events(store_id, &types, after, until, keyset.fetch()).await?)
    }

    /// A new endpoint and its signing secret (shown this once).
    pub async fn create(&self, store_id: Uuid, c: CreateWebhook) -> AppResult<(EndpointRow, String)> {
        let mut errors = vec![];
        let url = self.url(&c.url, &mut errors).await;
        let events = event_filter(&c.events, &mut errors);
        let description = description(c.description, &mut errors);
        if !errors.is_empty() {
            return Err(AppError::validation(errors));
        }
        let now = crate::now();
        let row = EndpointRow {
            store_id,
            id: Uuid::now_v7(),
            url: url.unwrap_or_default(),
            description,
            events,
            status: c.status.unwrap_or(EndpointStatus::Active),
            secret_version: 1,
            previous_until: None,
            failing_since: None,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.db.begin().await?;
        tx.lock_store(store_id).await?.ok_or(AppError::NotFound("store"))?;
        if tx.endpoints(store_id, None, MAX_ENDPOINTS as u32).await?.len() >= MAX_ENDPOINTS {
            return Err(AppError::Conflict {
                code: "too_many_webhooks",
                message: format!("a store has at most {MAX_ENDPOINTS} webhook endpoints"),
            });
        }
        tx.insert_endpoint(&row).await?;
        tx.commit().await?;
        let secret = self.secret(&row, row.secret_version);
        Ok((row, secret))
    }

    pub async fn get(&self, store_id: Uuid, id: Uuid) -> AppResult<EndpointRow> {
        self.db.auto().endpoint(store_id, id).await?.ok_or(AppError::NotFound("webhook"))
    }

    pub async fn list(&self, store_id: Uuid, keyset: &Keyset) -> AppResult<Vec<EndpointRow>> {
        let after = keyset.after_id().map_err(|e| AppError::validation(vec![e]))?;
        Ok(self.db.auto().endpoints(store_id, after, keyset.fetch()).await?)
    }

    pub async fn update(&self, store_id: Uuid, id: Uuid, u: UpdateWebhook) -> AppResult<EndpointRow> {
        let mut errors = vec![];
        let url = match &u.url {
            Some(raw) => self.url(raw, &mut errors).await,
            None => None,
        };
        let events = u.events.as_deref().map(|e| event_filter(e, &mut errors));
        let description = u.description.map(|d| description(d, &mut errors));
        if !errors.is_empty() {
            return Err(AppError::validation(errors));
        }
        let mut tx = self.db.begin().await?;
        let mut row = tx.endpoint(store_id, id).await?.ok_or(AppError::NotFound("webhook"))?;
        if let Some(url) = url {
            row.url = url;
        }
        if let Some(events) = events {
            row.events = events;
        }
        if let Some(description) = description {
            row.description = description;
        }
        if let Some(status) = u.status {
            if status == EndpointStatus::Active && row.status == EndpointStatus::Disabled {
                // Re-enabled: its failure streak starts afresh.
                row.failing_since = None;
            }
            row.status = status;
        }
        row.updated_at = crate::now();
        tx.update_endpoint(&row).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// The endpoint goes, with its deliveries and their log.
    pub async fn delete(&self, store_id: Uuid, id: Uuid) -> AppResult<()> {
        match self.db.auto().delete_endpoint(store_id, id).await? {
            true => Ok(()),
            false => Err(AppError::NotFound("webhook")),
        }
    }

    /// A new signing secret; the previous one keeps signing (a second signature in
    /// `webhook-signature`) for [`ROTATION_OVERLAP_SECS`], so receivers can switch without loss.
    pub async fn rotate_secret(&self, store_id: Uuid, id: Uuid) -> AppResult<(EndpointRow, String)> {
        let mut tx = self.db.begin().await?;
        let mut row = tx.endpoint(store_id, id).await?.ok_or(AppError::NotFound("webhook"))?;
        let now = crate::now();
        row.secret_version += 1;
        row.previous_until = Some(now + ROTATION_OVERLAP_SECS);
        row.updated_at = now;
        tx.update_endpoint(&row).await?;
        tx.commit().await?;
        let secret = self.secret(&row, row.secret_version);
        Ok((row, secret))
    }

    /// The endpoint's deliveries, newest first, each with its attempts.
    pub async fn deliveries(&self, store_id: Uuid, endpoint_id: Uuid, keyset: &Keyset) -> AppResult<Vec<DeliveryLog>> {
        let before = keyset.after_id().map_err(|e| AppError::validation(vec![e]))?;
        // One snapshot: deliveries and their attempts read at the same moment, so an attempt
        // finishing in between cannot show a delivery next to attempts it does not count.
        let mut db = self.db.snapshot().await?;
        db.endpoint(store_id, endpoint_id).await?.ok_or(AppError::NotFound("webhook"))?;
        let rows = db.deliveries(store_id, endpoint_id, before, keyset.fetch()).await?;
        let ids: Vec<Uuid> = rows.iter().map(|d| d.id).collect();
        let mut attempts = db.attempts(store_id, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|d| {
                let mine = attempts.iter().filter(|(id, _)| *id == d.id).map(|(_, a)| a.clone()).collect();
                attempts.retain(|(id, _)| *id != d.id);
                (d, mine)
            })
            .collect())
    }

    /// Sends a delivery again now, whatever its status; 409 while an attempt is in flight.
    pub async fn retry(&self, store_id: Uuid, endpoint_id: Uuid, id: Uuid) -> AppResult<DeliveryLog> {
        let now = crate::now();
        let mut db = self.db.auto();
        if !db.retry_delivery(store_id, endpoint_id, id, now).await? {
            return match db.delivery(store_id, endpoint_id, id).await? {
                None => Err(AppError::NotFound("delivery")),
                Some(_) => Err(AppError::Conflict {
                    code: "delivery_in_progress",
                    message: "an attempt of this delivery is under way".into(),
                }),
            };
        }
        self.wake.notify_one();
        let mut db = self.db.snapshot().await?;
        let row = db.delivery(store_id, endpoint_id, id).await?.ok_or(AppError::NotFound("delivery"))?;
        let attempts = db.attempts(store_id, &[id]).await?.into_iter().map(|(_, a)| a).collect();
        Ok((row, attempts))
    }

    fn secret(&self, row: &EndpointRow, version: i32) -> String {
        secret_text(&self.keys.webhook_secret(row.store_id, row.id, version))
    }

    async fn url(&self, raw: &str, errors: &mut Vec<FieldError>) -> Option<String> {
        match check_url(raw, self.allow_private).await {
            Ok(url) => Some(url.to_string()),
            Err(problem) => {
                errors.push(FieldError::new("url", problem.code()));
                None
            }
        }
    }
}

/// Known event types or `*`, without repeats; at least one.
fn event_filter(raw: &[String], errors: &mut Vec<FieldError>) -> Vec<String> {
    if raw.is_empty() {
        errors.push(FieldError::new("events", "required"));
        return vec![];
    }
    let mut out: Vec<String> = vec![];
    for (i, t) in raw.iter().enumerate() {
        let t = t.trim();
        if t != "*" && t.parse::<EventType>().is_err() {
            errors.push(FieldError::new(format!("events[{i}]"), "invalid_value"));
        } else if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    out
}

fn description(raw: Option<String>, errors: &mut Vec<FieldError>) -> Option<String> {
    match raw.filter(|d| !d.trim().is_empty()).as_deref().map(|d| trimmed_within(d, 500)) {
        Some(Err(e)) => {
            errors.push(FieldError::new("description", e));
            None
        }
        Some(Ok(d)) => Some(d.to_string()),
        None => None,
    }
}

/// `types`: a JSON array or a comma-separated list of event types.
fn parse_types(raw: Option<&str>) -> Result<Vec<EventType>, FieldError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else { return Ok(vec![]) };
    let parts: Option<Vec<String>> = if raw.starts_with('[') {
        serde_json::from_str::<Vec<String>>(raw).ok()
    } else {
        Some(raw.split(',').map(|s| s.trim().to_string()).collect())
    };
    parts
        .and_then(|p| p.iter().map(|t| t.parse::<EventType>().ok()).collect::<Option<Vec<_>>>())
        .filter(|t| t.len() <= 20)
        .ok_or_else(|| FieldError::new("types", "invalid_types"))
}

/// Whether an endpoint with this filter gets events of `kind`.
pub fn wants(filter: &[String], kind: EventType) -> bool {
    filter.iter().any(|t| t == "*" || t == kind.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_types_parse() {
        let mut errors = vec![];
        let f = event_filter(&["*".into(), "profile.created".into(), "profile.created".into()], &mut errors);
        assert!(errors.is_empty());
        assert_eq!(f, ["*", "profile.created"]);
        event_filter(&["profile.nope".into()], &mut errors);
        assert_eq!(errors[0].field, "events[0]");
        assert!(wants(&["*".into()], EventType::OrderLinked));
        assert!(!wants(&["profile.created".into()], EventType::OrderLinked));
        assert_eq!(parse_types(Some("profile.created, order.linked")).unwrap().len(), 2);
        assert_eq!(parse_types(Some(r#"["profile.erased"]"#)).unwrap(), [EventType::ProfileErased]);
        assert!(parse_types(Some("profile.nope")).is_err());
        assert!(parse_types(None).unwrap().is_empty());
    }
}
