//! Synthetic profiles for benchmarks and load tests: `storecrm seed`.

use std::time::Instant;

use rand::Rng;
use rand::seq::IndexedRandom;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::domain::taxonomy::{FieldDef, StoredValue, TaxonomyValue};
use crate::domain::{Email, EventType, Status};
use crate::error::{AppError, AppResult};
use crate::repo::{Database, NewProfile, TaxonomyRow};

pub const SEED_TAXONOMY: &str = "seed";
const TAGS: &[&str] = &["newsletter", "vip", "wholesale", "returning", "churn-risk", "b2b", "gift", "mobile"];
const TIERS: &[&str] = &["gold", "silver", "bronze"];
const CITIES: &[(&str, f64, f64)] =
    &[("Berlin", 52.52, 13.40), ("Paris", 48.85, 2.35), ("Madrid", 40.42, -3.70), ("Rome", 41.90, 12.50)];

#[derive(Debug, Serialize)]
pub struct SeedReport {
    pub store_id: Uuid,
    pub taxonomy_id: Uuid,
    pub inserted: u64,
    pub seconds: f64,
    pub profiles_per_second: f64,
}

pub struct Seeder {
    db: Database,
}

impl Seeder {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    async fn taxonomy(&self, store_id: Uuid) -> AppResult<TaxonomyRow> {
        if let Some(t) = self.db.auto().taxonomy(store_id, None, SEED_TAXONOMY).await? {
            return Ok(t);
        }
        let schema: Vec<FieldDef> = serde_json::from_value(json!([
            {"key": "tags", "type": "text"},
            {"key": "tier", "type": "text", "options": TIERS},
            {"key": "orders", "type": "number", "min": 0},
            {"key": "vip", "type": "boolean"},
            {"key": "home", "type": "geo_location"}
        ]))
        .expect("static schema");
        let now = crate::now();
        let row = TaxonomyRow {
            store_id,
            id: Uuid::now_v7(),
            key: SEED_TAXONOMY.into(),
            parent_id: None,
            schema,
            status: Status::Active,
            created_at: now,
            updated_at: now,
        };
        self.db.auto().insert_taxonomy(&row).await?;
        Ok(row)
    }

    /// Inserts `count` profiles with random taxonomy values, `batch` per transaction, with up to
    /// `parallel` transactions in flight: one insert keeps one database core busy.
    pub async fn seed(&self, store_id: Uuid, count: u64, batch: usize, parallel: usize) -> AppResult<SeedReport> {
        let taxonomy = self.taxonomy(store_id).await?;
        let run = Uuid::now_v7().simple().to_string();
        let started = Instant::now();
        let mut inserted = 0;
        let mut made = 0u64;
        let mut in_flight = tokio::task::JoinSet::new();
        while made < count || !in_flight.is_empty() {
            while made < count && in_flight.len() < parallel.max(1) {
                let n = batch.min((count - made) as usize);
                let profiles: Vec<NewProfile> = {
                    let mut rng = rand::rng();
                    (0..n).map(|i| random_profile(&mut rng, store_id, taxonomy.id, &run, made + i as u64)).collect()
                };
                made += n as u64;
                let db = self.db.clone();
                in_flight.spawn(async move {
                    let mut tx = db.begin().await?;
                    let inserted = tx.bulk_insert_profiles(&profiles).await?;
                    let created: Vec<_> = profiles
                        .into_iter()
                        .filter(|p| inserted.contains(&p.id))
                        .map(|p| {
                            let (store_id, id) = (p.store_id, p.id);
                            let view = crate::views::Profile::new_profile(p);
                            crate::services::events::new_event(store_id, EventType::ProfileCreated, Some(id), view)
                        })
                        .collect();
                    tx.insert_events(&created).await?;
                    tx.commit().await?;
                    Ok::<_, crate::repo::RepoError>(inserted.len() as u64)
                });
            }
            match in_flight.join_next().await {
                Some(done) => inserted += done.map_err(AppError::internal)??,
                None => break,
            }
        }
        self.db.analyze_after_bulk_load().await?;
        let seconds = started.elapsed().as_secs_f64();
        Ok(SeedReport {
            store_id,
            taxonomy_id: taxonomy.id,
            inserted,
            seconds,
            profiles_per_second: inserted as f64 / seconds.max(1e-9),
        })
    }
}

fn random_profile(rng: &mut impl Rng, store_id: Uuid, taxonomy_id: Uuid, run: &str, i: u64) -> NewProfile {
    let email = Email::parse(&format!("user{i}.{}@seed{}.example", &run[24..], i % 97)).expect("valid seed email");
    let value = |field_key: &str, field_pos: i32, value_pos: i32, value: StoredValue| TaxonomyValue {
        taxonomy_id,
        field_key: field_key.into(),
        field_pos,
        value_pos,
        value,
    };
    let mut values = vec![];
    let n_tags = rng.random_range(0..3);
    let mut tags: Vec<&str> = TAGS.choose_multiple(rng, n_tags).copied().collect();
    tags.sort();
    for (k, t) in tags.into_iter().enumerate() {
        values.push(value("tags", 0, k as i32, StoredValue::Text(t.into())));
    }
    values.push(value("tier", 1, 0, StoredValue::Text(TIERS.choose(rng).copied().unwrap_or("gold").into())));
    values.push(value("orders", 2, 0, StoredValue::Number(f64::from(rng.random_range(0..200u32)))));
    values.push(value("vip", 3, 0, StoredValue::Boolean(rng.random_bool(0.1))));
    let (city, lat, lon) = CITIES.choose(rng).copied().unwrap_or(CITIES[0]);
    values.push(value(
        "home",
        4,
        0,
        StoredValue::Geo {
            lat: lat + rng.random_range(-0.5..0.5),
            lon: lon + rng.random_range(-0.5..0.5),
            label: Some(city.into()),
        },
    ));
    NewProfile {
        store_id,
        id: Uuid::now_v7(),
        email: Some(email),
        verified: rng.random_bool(0.5),
        status: if rng.random_bool(0.95) { Status::Active } else { Status::Archived },
        values,
        created_at: crate::now() - rng.random_range(0..86_400 * 365),
    }
}
