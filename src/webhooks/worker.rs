//! The webhook worker, on the outbox's machinery: each round it fans new events out into
//! deliveries (one per matching endpoint, in one transaction with marking the events dispatched),
//! then claims due deliveries under a lease and sends them. Any number of workers in any number of
//! instances share the tables: a leased delivery is invisible to the others, and a worker that dies
//! mid-attempt leaves a lease that runs out, so the delivery is tried again, never lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

use super::{SendOutcome, WebhookClient, sign};
use crate::crypto::Keys;
use crate::domain::DeliveryStatus;
use crate::repo::{AttemptRow, Database, DueDelivery, EndpointRow, RepoResult};
use crate::services::events::wants;

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// How often to look for new events and due deliveries when nobody wakes the worker.
    pub poll_interval: Duration,
    /// How long a claimed delivery is reserved for this worker; longer than two timeouts.
    pub lease: Duration,
    /// Waits after the 1st, 2nd, ... failed attempt; after the last the delivery is `failed`.
    pub schedule: Vec<Duration>,
    /// An endpoint failing this long without a success is disabled.
    pub disable_after: Duration,
    /// Deliveries claimed, and sent concurrently, per round.
    pub batch_size: u32,
    /// Events fanned out per round.
    pub dispatch_batch: u32,
}

/// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 20 h: ten attempts over about three days.
pub const DEFAULT_SCHEDULE_SECS: [u64; 9] = [5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 72_000];

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(1000),
            lease: Duration::from_secs(60),
            schedule: DEFAULT_SCHEDULE_SECS.iter().copied().map(Duration::from_secs).collect(),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            batch_size: 32,
            dispatch_batch: 500,
        }
    }
}

pub struct WebhookWorker {
    db: Database,
    keys: Keys,
    client: WebhookClient,
    settings: WebhookSettings,
    wake: Arc<Notify>,
}

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub dispatched: usize,
    pub attempted: usize,
}

impl WebhookWorker {
    pub fn new(db: Database, keys: Keys, client: WebhookClient, settings: WebhookSettings, wake: Arc<Notify>) -> Self {
        Self { db, keys, client, settings, wake }
    }

    /// One round: fan out, then deliver what is due.
    pub async fn run_once(&self) -> RepoResult<Round> {
        let dispatched = self.dispatch().await?;
        let attempted = self.deliver().await?;
        Ok(Round { dispatched, attempted })
    }

    /// New events become deliveries to the endpoints active when they happened whose filter
    /// matches. Two workers never fan out the same event (Postgres: rows locked and skipped; the
    /// delivery's unique key would refuse a second one anyway).
    async fn dispatch(&self) -> RepoResult<usize> {
        let mut tx = self.db.begin().await?;
        let events = tx.undispatched_events(self.settings.dispatch_batch.max(1)).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let now = crate::now();
        let mut by_store: BTreeMap<Uuid, Vec<_>> = BTreeMap::new();
        for e in events.iter() {
            by_store.entry(e.store_id).or_default().push(e);
        }
        for (store_id, events) in by_store {
            let endpoints: Vec<EndpointRow> = tx.active_endpoints(store_id).await?;
            let pairs: Vec<(Uuid, Uuid)> = events
                .iter()
                .flat_map(|e| {
                    endpoints
                        .iter()
                        .filter(|ep| ep.created_at <= e.created_at && wants(&ep.events, e.kind))
                        .map(|ep| (ep.id, e.id))
                })
                .collect();
            tx.insert_deliveries(store_id, &pairs, now).await?;
            let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
            tx.mark_dispatched(store_id, &ids, now).await?;
        }
        tx.commit().await?;
        Ok(events.len())
    }

    async fn deliver(&self) -> RepoResult<usize> {
        let lease_secs = self.settings.lease.as_secs().max(1) as i64;
        let mut tx = self.db.atomic().await?;
        let claimed = tx.claim_due_deliveries(crate::now(), lease_secs, self.settings.batch_size.max(1)).await?;
        tx.commit().await?;
        let count = claimed.len();
        let mut sends = JoinSet::new();
        for d in claimed {
            let client = self.client.clone();
            let (url, headers, body) = self.request(&d);
            sends.spawn(async move {
                let header_refs: Vec<(&str, String)> = headers.iter().map(|(k, v)| (*k, v.clone())).collect();
                let outcome = client.send(&url, &header_refs, body).await;
                (d, outcome)
            });
        }
        while let Some(joined) = sends.join_next().await {
            match joined {
                Ok((d, outcome)) => {
                    if let Err(e) = self.record(&d, &outcome).await {
                        tracing::error!(delivery_id = %d.id, error = %e, "cannot record a webhook attempt; it is retried when the lease ends");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "webhook send task died; its delivery is retried when the lease ends")
                }
            }
        }
        Ok(count)
    }

    /// The Standard Webhooks request: the event as JSON, its id as `webhook-id` (the same on every
    /// attempt, for the receiver to dedupe), and one signature per live secret.
    fn request(&self, d: &DueDelivery) -> (String, Vec<(&'static str, String)>, Bytes) {
        let body =
            Bytes::from(serde_json::to_vec(&crate::views::Event::from(d.event.clone())).expect("events serialize"));
        let id = d.event.id.to_string();
        let timestamp = crate::now();
        let ep = &d.endpoint;
        let mut signatures =
            vec![sign(&self.keys.webhook_secret(ep.store_id, ep.id, ep.secret_version), &id, timestamp, &body)];
        if ep.previous_until.is_some_and(|until| until > timestamp) && ep.secret_version > 1 {
            let previous = self.keys.webhook_secret(ep.store_id, ep.id, ep.secret_version - 1);
            signatures.push(sign(&previous, &id, timestamp, &body));
        }
        let headers = vec![
            ("content-type", "application/json".to_string()),
            ("user-agent", concat!("storecrm-webhooks/", env!("CARGO_PKG_VERSION")).to_string()),
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signatures.join(" ")),
        ];
        (ep.url.clone(), headers, body)
    }

    /// The attempt's log line, the delivery's next state, and the endpoint's failure streak.
    async fn record(&self, d: &DueDelivery, outcome: &SendOutcome) -> RepoResult<()> {
        let now = crate::now();
        let attempt = d.attempts.saturating_add(1);
        let mut tx = self.db.begin().await?;
        let row = AttemptRow {
            attempt: i64::from(attempt),
            at: now,
            status_code: outcome.status.map(i64::from),
            duration_ms: outcome.duration.as_millis().min(i64::MAX as u128) as i64,
            error: outcome.error.clone(),
        };
        tx.insert_attempt(d.store_id, d.id, &row).await?;
        let (store_id, endpoint_id) = (d.store_id, d.endpoint.id);
        if outcome.delivered() {
            tracing::info!(delivery_id = %d.id, event_id = %d.event.id, endpoint_id = %endpoint_id, attempt, "webhook delivered");
            tx.settle_delivery(store_id, d.id, attempt, DeliveryStatus::Delivered, now, now).await?;
            tx.set_endpoint_failing(store_id, endpoint_id, None).await?;
        } else {
            let wait = self.settings.schedule.get(attempt.saturating_sub(1) as usize);
            let (status, next) = match wait {
                Some(wait) => (DeliveryStatus::Pending, now + wait.as_secs().max(1) as i64),
                None => (DeliveryStatus::Failed, now),
            };
            tracing::warn!(delivery_id = %d.id, endpoint_id = %endpoint_id, attempt, status = status.as_str(),
                error = outcome.error.as_deref().unwrap_or_default(), "webhook not delivered");
            tx.settle_delivery(store_id, d.id, attempt, status, next, now).await?;
            tx.set_endpoint_failing(store_id, endpoint_id, Some(now)).await?;
            let cutoff = now - self.settings.disable_after.as_secs() as i64;
            if tx.disable_failing_endpoint(store_id, endpoint_id, cutoff, now).await? {
                tracing::warn!(endpoint_id = %endpoint_id, store_id = %store_id, "webhook endpoint disabled after failing too long");
            }
        }
        tx.commit().await
    }

    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut db_failures: u32 = 0;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let pause = match self.run_once().await {
                Ok(round)
                    if round.attempted >= self.settings.batch_size as usize
                        || round.dispatched >= self.settings.dispatch_batch as usize =>
                {
                    db_failures = 0;
                    continue;
                }
                // Fanned out: deliver at once.
                Ok(round) if round.dispatched > 0 => {
                    db_failures = 0;
                    continue;
                }
                Ok(_) => {
                    db_failures = 0;
                    self.settings.poll_interval
                }
                Err(e) => {
                    db_failures = db_failures.saturating_add(1);
                    tracing::error!(error = %e, "webhook worker cannot reach the database");
                    (self.settings.poll_interval * 2u32.saturating_pow(db_failures.min(6))).min(Duration::from_secs(30))
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified() => {}
                changed = shutdown.changed() => if changed.is_err() { break },
            }
        }
        tracing::debug!("webhook worker stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_spans_about_three_days_inside_the_lease() {
        let s = WebhookSettings::default();
        let total: u64 = s.schedule.iter().map(Duration::as_secs).sum();
        assert!((2 * 24 * 3600..4 * 24 * 3600).contains(&total), "{total}");
        assert!(s.lease > Duration::from_secs(20), "a 10 s attempt must fit in half a lease");
        assert!(s.disable_after > Duration::from_secs(total));
    }
}
