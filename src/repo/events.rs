//! Events (CONTRACT §9.1), webhook endpoints, deliveries and their attempts. Which events an
//! endpoint gets, the retry schedule and the signature are in `services::events` and `webhooks`.

use serde_json::Value;
use uuid::Uuid;

use super::sessions::SWEEP_BATCH;
use super::{Arg, Backend, ConsentRow, RepoResult, Row, Sql, Tx};
use crate::domain::{DeliveryStatus, EndpointStatus, EventType};

/// Whether events are written: always, except in a build with the `bench-without-events`
/// feature, which exists only so that `scripts/bench-events.sh` can measure what recording
/// costs the writes that record them. Never ship such a build: its feed and webhooks stay empty.
pub const RECORDING: bool = !cfg!(feature = "bench-without-events");

/// SQL: the `dispatched_at` of a new event of store `store` at time `at`: already dispatched
/// (at its own time) when the store has no active webhook endpoint, so the dispatcher has
/// nothing to fan out and no row to update; NULL, to be fanned out, otherwise. An endpoint thus
/// receives the events of changes written after it was created.
pub(super) fn dispatched_at(store: &str, at: &str) -> String {
    format!(
        "CASE WHEN EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.store_id = {store} AND w.status = 'active') \
         THEN NULL ELSE {at} END"
    )
}

/// Postgres: inserts events given as six arrays, `$1` to `$6` ([`bind_events`] binds them).
fn events_unnest() -> String {
    format!(
        "INSERT INTO events (store_id, id, type, subject_id, data, created_at, dispatched_at)
         SELECT t.store_id, t.id, t.type, t.subject_id::uuid, t.data::json, t.created_at, {}
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int8[])
              AS t (store_id, id, type, subject_id, data, created_at)",
        dispatched_at("t.store_id", "t.created_at")
    )
}

/// Stores the retention sweep reads at a time.
const STORES_PAGE: u32 = 500;

/// Batches up to this size are written as a multi-row `VALUES`: one text per size, which
/// Postgres plans once and keeps. With `UNNEST` of array parameters it would plan every execution
/// (the custom plan counts the rows of the actual arrays, the generic plan cannot, so the generic
/// one never looks as cheap), which costs a small insert more than the insert itself.
const SMALL_BATCH: usize = 16;

/// Appends an insert of `events` as a multi-row `VALUES`, its placeholders after those already in
/// `sql`.
fn push_event_values(sql: &mut Sql, backend: Backend, events: &[NewEvent]) {
    sql.push("INSERT INTO events (store_id, id, type, subject_id, data, created_at, dispatched_at) ");
    sql.push("SELECT v.column1, v.column2, v.column3, v.column4, ");
    sql.push(match backend {
        Backend::Postgres => "v.column5::json, ",
        Backend::Sqlite => "v.column5, ",
    });
    sql.push("v.column6, ");
    sql.push(&dispatched_at("v.column1", "v.column6")).push(" FROM (VALUES ");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push_list([
            Arg::from(e.store_id),
            Arg::from(e.id),
            Arg::from(e.kind.as_str()),
            Arg::from(e.subject_id),
            data_text(e),
            Arg::from(e.created_at),
        ]);
    }
    sql.push(") AS v");
}

/// An event's `data` as a text parameter: Postgres stores it as `json` (`$n::json` checks it and
/// keeps the text), where a `jsonb` parameter would be parsed into `jsonb` and printed back.
pub(super) fn data_text(e: &NewEvent) -> Arg {
    Arg::Text(Some(e.data.get().to_owned()))
}

fn bind_events(sql: Sql, events: &[NewEvent]) -> Sql {
    let kinds: Vec<Option<String>> = events.iter().map(|e| Some(e.kind.as_str().to_string())).collect();
    let subjects: Vec<Option<String>> = events.iter().map(|e| e.subject_id.map(|s| s.to_string())).collect();
    let data: Vec<Option<String>> = events.iter().map(|e| Some(e.data.get().to_string())).collect();
    sql.bind(events.iter().map(|e| e.store_id).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.id).collect::<Vec<_>>())
        .bind(kinds)
        .bind(subjects)
        .bind(data)
        .bind(events.iter().map(|e| e.created_at).collect::<Vec<_>>())
}

/// An event to record in the transaction of the change that causes it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub store_id: Uuid,
    pub id: Uuid,
    pub kind: EventType,
    /// The profile the event concerns: its erasure scrubs the event.
    pub subject_id: Option<Uuid>,
    /// `{"object": ...}`, as JSON text: serialized once, from the view, when the event is made.
    pub data: Box<serde_json::value::RawValue>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub store_id: Uuid,
    pub id: Uuid,
    pub kind: EventType,
    pub data: Value,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointRow {
    pub store_id: Uuid,
    pub id: Uuid,
    pub url: String,
    pub description: Option<String>,
    /// Event types, or `*`.
    pub events: Vec<String>,
    pub status: EndpointStatus,
    pub secret_version: i32,
    /// The previous secret still signs until then (a rotation's grace).
    pub previous_until: Option<i64>,
    pub failing_since: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub store_id: Uuid,
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: EventType,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub attempt: i64,
    pub at: i64,
    pub status_code: Option<i64>,
    pub duration_ms: i64,
    pub error: Option<String>,
}

/// A delivery leased to one worker, with what it needs to send.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub store_id: Uuid,
    pub id: Uuid,
    pub attempts: i32,
    pub endpoint: EndpointRow,
    pub event: EventRow,
}

const EVENT_COLUMNS: &str = "e.store_id, e.id, e.type, e.data, e.created_at";
const ENDPOINT_COLUMNS: &str = "w.store_id, w.id, w.url, w.description, w.events, w.status, \
     CAST(w.secret_version AS BIGINT) AS secret_version, w.previous_until, w.failing_since, w.created_at, w.updated_at";
const DELIVERY_COLUMNS: &str = "d.store_id, d.id, d.endpoint_id, d.event_id, e.type, d.status, \
     CAST(d.attempts AS BIGINT) AS attempts, d.next_attempt_at, d.created_at, d.delivered_at";

fn event(r: &Row) -> sqlx::Result<EventRow> {
    Ok(EventRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        kind: r.parsed("type")?,
        data: r.json("data")?,
        created_at: r.int("created_at")?,
    })
}

fn endpoint(r: &Row) -> sqlx::Result<EndpointRow> {
    Ok(EndpointRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        url: r.text("url")?,
        description: r.opt_text("description")?,
        events: r.json("events")?,
        status: r.parsed("status")?,
        secret_version: r.int("secret_version")? as i32,
        previous_until: r.opt_int("previous_until")?,
        failing_since: r.opt_int("failing_since")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

fn delivery(r: &Row) -> sqlx::Result<DeliveryRow> {
    let status: DeliveryStatus = r.parsed("status")?;
    Ok(DeliveryRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        endpoint_id: r.uuid("endpoint_id")?,
        event_id: r.uuid("event_id")?,
        event_type: r.parsed("type")?,
        status,
        attempts: r.int("attempts")?,
        next_attempt_at: (status == DeliveryStatus::Pending).then(|| r.int("next_attempt_at")).transpose()?,
        created_at: r.int("created_at")?,
        delivered_at: r.opt_int("delivered_at")?,
    })
}

impl Tx {
    pub async fn insert_event(&mut self, e: &NewEvent) -> RepoResult<()> {
        self.insert_events(std::slice::from_ref(e)).await
    }

    /// Several events in one statement (a seeded batch, a janitor pass).
    pub async fn insert_events(&mut self, events: &[NewEvent]) -> RepoResult<()> {
        if !RECORDING || events.is_empty() {
            return Ok(());
        }
        if self.backend() == Backend::Postgres && events.len() > SMALL_BATCH {
            // One statement with array parameters: planned once per batch, whatever its size
            // (a multi-row VALUES of a thousand rows is a new statement, parsed and planned).
            self.execute(bind_events(Sql::new(events_unnest()), events)).await?;
            return Ok(());
        }
        for chunk in events.chunks(500) {
            let mut sql = Sql::new("");
            push_event_values(&mut sql, self.backend(), chunk);
            self.execute(sql).await?;
        }
        Ok(())
    }

    /// A consent record and the events of the same change: one statement on Postgres.
    pub async fn insert_consent_with_events(&mut self, record: &ConsentRow, events: &[NewEvent]) -> RepoResult<()> {
        if self.backend() != Backend::Postgres || events.is_empty() || events.len() > SMALL_BATCH || !RECORDING {
            self.insert_consents(std::slice::from_ref(record)).await?;
            return self.insert_events(events).await;
        }
        let mut sql = super::segments::bind_consent(
            Sql::new(format!("WITH consent AS ({}) ", super::segments::INSERT_CONSENT)),
            record,
        );
        push_event_values(&mut sql, Backend::Postgres, events);
        self.execute(sql).await?;
        Ok(())
    }

    /// The store's events after `after`, oldest first, of the given types (all when empty).
    pub async fn events(
        &mut self,
        store_id: Uuid,
        types: &[EventType],
        after: Option<Uuid>,
        until: i64,
        limit: u32,
    ) -> RepoResult<Vec<EventRow>> {
        let mut sql = Sql::new(format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.store_id = "));
        sql.push_bind(store_id).push(" AND e.created_at <= ").push_bind(until);
        if !types.is_empty() {
            sql.push(" AND e.type IN ").push_list(types.iter().map(|t| t.as_str()));
        }
        if let Some(after) = after {
            sql.push(" AND e.id > ").push_bind(after);
        }
        sql.push(" ORDER BY e.id LIMIT ").push_bind(limit);
        Ok(self.fetch_all(sql).await?.iter().map(event).collect::<sqlx::Result<_>>()?)
    }

    /// Erasure: the profiles' earlier events keep nothing but ids (`profile.merged` has nothing
    /// else); pending deliveries are built from the event, so they carry the scrubbed version.
    pub async fn scrub_events(&mut self, store_id: Uuid, subject_ids: &[Uuid]) -> RepoResult<u64> {
        let scrubbed = match self.backend() {
            Backend::Postgres => {
                "json_build_object('object', json_build_object('id', data->'object'->'id', 'profile_id', CAST($3 AS TEXT)), 'redacted', true)"
            }
            Backend::Sqlite => {
                "json_object('object', json_object('id', json_extract(data, '$.object.id'), 'profile_id', $3), 'redacted', json('true'))"
            }
        };
        let mut n = 0;
        for subject in subject_ids {
            let sql = Sql::new(format!(
                "UPDATE events SET data = {scrubbed} WHERE store_id = $1 AND subject_id = $2 AND type <> $4"
            ))
            .bind(store_id)
            .bind(*subject)
            .bind(subject.to_string())
            .bind(EventType::ProfileMerged.as_str());
            n += self.execute(sql).await?;
        }
        Ok(n)
    }

    /// Events older than the retention (made before `before`); their deliveries and attempts go
    /// with them. Event ids are UUIDv7, whose first 48 bits are the time in milliseconds, so the
    /// sweep walks each store's part of the primary key below the first id of `before` (no index
    /// on the time, which every event would pay for): one short statement per store and batch.
    pub async fn delete_old_events(&mut self, before: i64) -> RepoResult<u64> {
        let below = Uuid::from_u128((u128::from(before.max(0).unsigned_abs()) * 1000) << 80);
        let delete = "DELETE FROM events WHERE (store_id, id) IN \
             (SELECT store_id, id FROM events WHERE store_id = $1 AND id < $2 LIMIT $3)";
        let (mut total, mut after) = (0, None);
        loop {
            let stores = self.stores(after, STORES_PAGE).await?;
            for store in &stores {
                let batch = || Sql::new(delete).bind(store.id).bind(below).bind(SWEEP_BATCH as i64);
                total += self.delete_until_short(batch).await?;
            }
            match stores.last() {
                Some(last) if stores.len() == STORES_PAGE as usize => after = Some(last.id),
                _ => return Ok(total),
            }
        }
    }

    /// Leases events not fanned out yet (Postgres: rows another dispatcher holds are skipped).
    /// Their `data` is not read (`Null`): fanning out needs the type and time only, and a
    /// delivery reads the stored event when it is sent.
    pub async fn undispatched_events(&mut self, limit: u32) -> RepoResult<Vec<EventRow>> {
        let lock = match self.backend() {
            Backend::Postgres if !self.for_update().is_empty() => " FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        let sql = Sql::new(format!(
            "SELECT e.store_id, e.id, e.type, e.created_at FROM events e WHERE e.dispatched_at IS NULL
             ORDER BY e.created_at, e.id LIMIT $1{lock}"
        ))
        .bind(limit);
        let rows = self.fetch_all(sql).await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok(EventRow {
                    store_id: r.uuid("store_id")?,
                    id: r.uuid("id")?,
                    kind: r.parsed("type")?,
                    data: Value::Null,
                    created_at: r.int("created_at")?,
                })
            })
            .collect::<sqlx::Result<_>>()?)
    }

    /// The store's events `ids` have their deliveries.
    pub async fn mark_dispatched(&mut self, store_id: Uuid, ids: &[Uuid], now: i64) -> RepoResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        if self.backend() == Backend::Postgres {
            let sql = Sql::new("UPDATE events SET dispatched_at = $1 WHERE store_id = $2 AND id = ANY($3::uuid[])")
                .bind(now)
                .bind(store_id)
                .bind(ids.to_vec());
            self.execute(sql).await?;
            return Ok(());
        }
        let mut sql = Sql::new("UPDATE events SET dispatched_at = ");
        sql.push_bind(now).push(" WHERE store_id = ").push_bind(store_id);
        sql.push(" AND id IN ").push_list(ids.iter().copied());
        self.execute(sql.unprepared()).await?;
        Ok(())
    }

    /// Deliveries due now of a store's events to its endpoints, `(endpoint_id, event_id)` pairs;
    /// a pair that has its delivery already is left alone. One statement on Postgres, one per
    /// 200 pairs on SQLite.
    pub async fn insert_deliveries(&mut self, store_id: Uuid, pairs: &[(Uuid, Uuid)], now: i64) -> RepoResult<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let pending = DeliveryStatus::Pending.as_str();
        if self.backend() == Backend::Postgres {
            let sql = Sql::new(
                "INSERT INTO webhook_deliveries (store_id, id, endpoint_id, event_id, status, attempts, next_attempt_at, created_at)
                 SELECT $1, t.id, t.endpoint_id, t.event_id, $2, 0, $3, $3
                 FROM UNNEST($4::uuid[], $5::uuid[], $6::uuid[]) AS t (id, endpoint_id, event_id)
                 ON CONFLICT DO NOTHING",
            )
            .bind(store_id)
            .bind(pending)
            .bind(now)
            .bind(pairs.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
            .bind(pairs.iter().map(|p| p.0).collect::<Vec<_>>())
            .bind(pairs.iter().map(|p| p.1).collect::<Vec<_>>());
            self.execute(sql).await?;
            return Ok(());
        }
        for chunk in pairs.chunks(200) {
            let mut sql = Sql::new(
                "INSERT INTO webhook_deliveries (store_id, id, endpoint_id, event_id, status, attempts, next_attempt_at, created_at) VALUES ",
            );
            for (i, (endpoint_id, event_id)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push_list([
                    Arg::from(store_id),
                    Arg::from(Uuid::now_v7()),
                    Arg::from(*endpoint_id),
                    Arg::from(*event_id),
                    Arg::from(pending),
                    Arg::from(0i64),
                    Arg::from(now),
                    Arg::from(now),
                ]);
            }
            sql.push(" ON CONFLICT DO NOTHING");
            self.execute(sql.unprepared()).await?;
        }
        Ok(())
    }

    pub async fn insert_endpoint(&mut self, e: &EndpointRow) -> RepoResult<()> {
        let sql = Sql::new(
            "INSERT INTO webhook_endpoints (store_id, id, url, description, events, status, secret_version, previous_until,
                 failing_since, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(e.store_id)
        .bind(e.id)
        .bind(&e.url)
        .bind(&e.description)
        .bind(Arg::json(&e.events))
        .bind(e.status.as_str())
        .bind(e.secret_version)
        .bind(e.previous_until)
        .bind(e.failing_since)
        .bind(e.created_at)
        .bind(e.updated_at);
        self.execute(sql).await?;
        Ok(())
    }

    /// The endpoint; locked inside a transaction.
    pub async fn endpoint(&mut self, store_id: Uuid, id: Uuid) -> RepoResult<Option<EndpointRow>> {
        let sql = Sql::new(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints w WHERE w.store_id = $1 AND w.id = $2{}",
            self.for_update()
        ))
        .bind(store_id)
        .bind(id);
        Ok(self.fetch_optional(sql).await?.map(|r| endpoint(&r)).transpose()?)
    }

    pub async fn endpoints(&mut self, store_id: Uuid, after: Option<Uuid>, limit: u32) -> RepoResult<Vec<EndpointRow>> {
        let sql = Sql::new(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints w WHERE w.store_id = $1 AND ($2 IS NULL OR w.id > $2)
             ORDER BY w.id LIMIT $3"
        ))
        .bind(store_id)
        .bind(after)
        .bind(limit);
        Ok(self.fetch_all(sql).await?.iter().map(endpoint).collect::<sqlx::Result<_>>()?)
    }

    /// The store's active endpoints (the dispatcher matches their event filters).
    pub async fn active_endpoints(&mut self, store_id: Uuid) -> RepoResult<Vec<EndpointRow>> {
        let sql = Sql::new(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints w WHERE w.store_id = $1 AND w.status = $2 ORDER BY w.id"
        ))
        .bind(store_id)
        .bind(EndpointStatus::Active.as_str());
        Ok(self.fetch_all(sql).await?.iter().map(endpoint).collect::<sqlx::Result<_>>()?)
    }

    pub async fn update_endpoint(&mut self, e: &EndpointRow) -> RepoResult<()> {
        let sql = Sql::new(
            "UPDATE webhook_endpoints SET url = $3, description = $4, events = $5, status = $6, secret_version = $7,
                 previous_until = $8, failing_since = $9, updated_at = $10
             WHERE store_id = $1 AND id = $2",
        )
        .bind(e.store_id)
        .bind(e.id)
        .bind(&e.url)
        .bind(&e.description)
        .bind(Arg::json(&e.events))
        .bind(e.status.as_str())
        .bind(e.secret_version)
        .bind(e.previous_until)
        .bind(e.failing_since)
        .bind(e.updated_at);
        self.execute(sql).await?;
        Ok(())
    }

    pub async fn delete_endpoint(&mut self, store_id: Uuid, id: Uuid) -> RepoResult<bool> {
        let sql = Sql::new("DELETE FROM webhook_endpoints WHERE store_id = $1 AND id = $2").bind(store_id).bind(id);
        Ok(self.execute(sql).await? > 0)
    }

    /// Leases up to `limit` due deliveries of active endpoints, oldest due first. Run it on
    /// [`Database::atomic`](super::Database::atomic).
    pub async fn claim_due_deliveries(
        &mut self,
        now: i64,
        lease_secs: i64,
        limit: u32,
    ) -> RepoResult<Vec<DueDelivery>> {
        let due = "SELECT d.store_id, d.id FROM webhook_deliveries d
             JOIN webhook_endpoints w ON w.store_id = d.store_id AND w.id = d.endpoint_id
             WHERE d.status = $4 AND d.next_attempt_at <= $1 AND (d.locked_until IS NULL OR d.locked_until <= $1)
               AND w.status = $5
             ORDER BY d.next_attempt_at LIMIT $3";
        let claim = match self.backend() {
            Backend::Postgres => format!(
                "WITH due AS MATERIALIZED ({due} FOR UPDATE OF d SKIP LOCKED)
                 UPDATE webhook_deliveries x SET locked_until = $2 FROM due
                 WHERE x.store_id = due.store_id AND x.id = due.id RETURNING x.store_id, x.id"
            ),
            Backend::Sqlite => format!(
                "UPDATE webhook_deliveries SET locked_until = $2 WHERE (store_id, id) IN ({due}) RETURNING store_id, id"
            ),
        };
        let sql = Sql::new(claim)
            .bind(now)
            .bind(now + lease_secs)
            .bind(limit)
            .bind(DeliveryStatus::Pending.as_str())
            .bind(EndpointStatus::Active.as_str());
        let claimed = self.fetch_all(sql).await?;
        let mut out = Vec::with_capacity(claimed.len());
        for r in claimed {
            let (store_id, id) = (r.uuid("store_id")?, r.uuid("id")?);
            let sql = Sql::new(format!(
                "SELECT CAST(d.attempts AS BIGINT) AS attempts, {ENDPOINT_COLUMNS}, e.type, e.data, e.created_at AS event_created_at,
                        e.id AS event_id
                 FROM webhook_deliveries d
                 JOIN webhook_endpoints w ON w.store_id = d.store_id AND w.id = d.endpoint_id
                 JOIN events e ON e.store_id = d.store_id AND e.id = d.event_id
                 WHERE d.store_id = $1 AND d.id = $2"
            ))
            .bind(store_id)
            .bind(id);
            let Some(row) = self.fetch_optional(sql).await? else { continue };
            out.push(DueDelivery {
                store_id,
                id,
                attempts: i32::try_from(row.int("attempts")?).unwrap_or(i32::MAX),
                endpoint: endpoint(&row)?,
                event: EventRow {
                    store_id,
                    id: row.uuid("event_id")?,
                    kind: row.parsed("type")?,
                    data: row.json("data")?,
                    created_at: row.int("event_created_at")?,
                },
            });
        }
        Ok(out)
    }

    pub async fn insert_attempt(&mut self, store_id: Uuid, delivery_id: Uuid, a: &AttemptRow) -> RepoResult<()> {
        let sql = Sql::new(
            "INSERT INTO webhook_attempts (store_id, delivery_id, attempt, at, status_code, duration_ms, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(store_id)
        .bind(delivery_id)
        .bind(a.attempt)
        .bind(a.at)
        .bind(a.status_code)
        .bind(a.duration_ms)
        .bind(&a.error);
        self.execute(sql).await?;
        Ok(())
    }

    /// The outcome of an attempt: `status`, with the next try at `next_attempt_at` while pending.
    pub async fn settle_delivery(
        &mut self,
        store_id: Uuid,
        id: Uuid,
        attempts: i32,
        status: DeliveryStatus,
        next_attempt_at: i64,
        now: i64,
    ) -> RepoResult<()> {
        let sql = Sql::new(
            "UPDATE webhook_deliveries SET attempts = $3, status = $4, next_attempt_at = $5, locked_until = NULL,
                 delivered_at = CASE WHEN $4 = 'delivered' THEN $6 ELSE delivered_at END
             WHERE store_id = $1 AND id = $2",
        )
        .bind(store_id)
        .bind(id)
        .bind(attempts)
        .bind(status.as_str())
        .bind(next_attempt_at)
        .bind(now);
        self.execute(sql).await?;
        Ok(())
    }

    /// An endpoint's failure streak: started at `now` unless running; ended by `None`.
    pub async fn set_endpoint_failing(
        &mut self,
        store_id: Uuid,
        id: Uuid,
        failing_since: Option<i64>,
    ) -> RepoResult<()> {
        let sql = match failing_since {
            Some(_) => Sql::new(
                "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $3) WHERE store_id = $1 AND id = $2",
            ),
            None => Sql::new(
                "UPDATE webhook_endpoints SET failing_since = $3 WHERE store_id = $1 AND id = $2 AND failing_since IS NOT NULL",
            ),
        };
        self.execute(sql.bind(store_id).bind(id).bind(failing_since)).await?;
        Ok(())
    }

    /// Disables the endpoint when its failure streak began before `cutoff`; true when it did.
    pub async fn disable_failing_endpoint(
        &mut self,
        store_id: Uuid,
        id: Uuid,
        cutoff: i64,
        now: i64,
    ) -> RepoResult<bool> {
        let sql = Sql::new(
            "UPDATE webhook_endpoints SET status = $4, updated_at = $5
             WHERE store_id = $1 AND id = $2 AND failing_since IS NOT NULL AND failing_since < $3 AND status = $6",
        )
        .bind(store_id)
        .bind(id)
        .bind(cutoff)
        .bind(EndpointStatus::Disabled.as_str())
        .bind(now)
        .bind(EndpointStatus::Active.as_str());
        Ok(self.execute(sql).await? == 1)
    }

    /// An endpoint's deliveries, newest first.
    pub async fn deliveries(
        &mut self,
        store_id: Uuid,
        endpoint_id: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> RepoResult<Vec<DeliveryRow>> {
        let sql = Sql::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events e ON e.store_id = d.store_id AND e.id = d.event_id
             WHERE d.store_id = $1 AND d.endpoint_id = $2 AND ($3 IS NULL OR d.id < $3) ORDER BY d.id DESC LIMIT $4"
        ))
        .bind(store_id)
        .bind(endpoint_id)
        .bind(before)
        .bind(limit);
        Ok(self.fetch_all(sql).await?.iter().map(delivery).collect::<sqlx::Result<_>>()?)
    }

    pub async fn attempts(&mut self, store_id: Uuid, delivery_ids: &[Uuid]) -> RepoResult<Vec<(Uuid, AttemptRow)>> {
        if delivery_ids.is_empty() {
            return Ok(vec![]);
        }
        let mut sql = Sql::new(
            "SELECT delivery_id, CAST(attempt AS BIGINT) AS attempt, at, CAST(status_code AS BIGINT) AS status_code,
                    duration_ms, error FROM webhook_attempts WHERE store_id = ",
        );
        sql.push_bind(store_id).push(" AND delivery_id IN ").push_list(delivery_ids.iter().copied());
        sql.push(" ORDER BY delivery_id, attempt");
        let rows = self.fetch_all(sql).await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok((
                    r.uuid("delivery_id")?,
                    AttemptRow {
                        attempt: r.int("attempt")?,
                        at: r.int("at")?,
                        status_code: r.opt_int("status_code")?,
                        duration_ms: r.int("duration_ms")?,
                        error: r.opt_text("error")?,
                    },
                ))
            })
            .collect::<sqlx::Result<_>>()?)
    }

    /// Sends a delivery again, due now (any status): false when the endpoint has no such delivery
    /// or an attempt of it is under way (leased).
    pub async fn retry_delivery(&mut self, store_id: Uuid, endpoint_id: Uuid, id: Uuid, now: i64) -> RepoResult<bool> {
        let sql = Sql::new(
            "UPDATE webhook_deliveries SET status = $4, next_attempt_at = $5, locked_until = NULL
             WHERE store_id = $1 AND endpoint_id = $2 AND id = $3 AND (locked_until IS NULL OR locked_until <= $5)",
        )
        .bind(store_id)
        .bind(endpoint_id)
        .bind(id)
        .bind(DeliveryStatus::Pending.as_str())
        .bind(now);
        Ok(self.execute(sql).await? == 1)
    }

    pub async fn delivery(&mut self, store_id: Uuid, endpoint_id: Uuid, id: Uuid) -> RepoResult<Option<DeliveryRow>> {
        let sql = Sql::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events e ON e.store_id = d.store_id AND e.id = d.event_id
             WHERE d.store_id = $1 AND d.endpoint_id = $2 AND d.id = $3"
        ))
        .bind(store_id)
        .bind(endpoint_id)
        .bind(id);
        Ok(self.fetch_optional(sql).await?.map(|r| delivery(&r)).transpose()?)
    }
}
