//! Imports (issue 16): profiles with their taxonomy values and audience subscriptions, from CSV
//! (a header row; columns mapped to `email`, `status`, `<taxonomy>.<field>`, `audience:<key>`,
//! `consent_at`, `consent_source`) or NDJSON (the API's profile shape, as exports write it).
//!
//! Rows are read and written in batches of [`BATCH`], each in one transaction, so memory stays
//! one batch whatever the file's size, and a crash loses at most the batch under way. Profiles
//! are matched by email: a known address is updated (the fields the row carries replace those
//! fields; others stay) or skipped, as the caller chose, so running an import again is correct.
//! Subscriptions are created active with `source: "import"` and the consent evidence the row
//! carries, only where the profile has no subscription to the audience: an import never
//! re-subscribes someone who unsubscribed. A dry run validates everything and counts what would
//! be written, writing nothing. Row errors name the row (the file's line), the column and a code.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::table::{PROFILE_COLUMNS, parse_cell, parse_field_column};
use crate::domain::taxonomy::{
    EntryField, FieldDef, FieldType, TaxonomyEntry, TaxonomyValue, entries_from_values, validate_entries,
};
use crate::domain::{AudienceKind, Email, EventType, Status, SubscriptionSource, SubscriptionStatus};
use crate::error::{AppError, AppResult, FieldError};
use crate::repo::{AudienceRow, AudienceSearch, Database, NewProfile, ProfileRewrite, SubscriptionRow, TaxonomyRow};
use crate::services::consents::{Consent, ConsentAction};
use crate::services::events;

/// Rows per transaction.
pub const BATCH: usize = 1000;
/// Row errors kept in a summary (all are kept in a job's error list, up to [`MAX_STORED_ERRORS`]).
pub const SUMMARY_ERRORS: usize = 100;
pub const MAX_STORED_ERRORS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImportFormat {
    Csv,
    Ndjson,
}

impl ImportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportFormat::Csv => "csv",
            ImportFormat::Ndjson => "ndjson",
        }
    }
}

/// What to do with a row whose email is a profile already.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnExisting {
    /// The row's fields replace the profile's values of those fields; its other values stay.
    #[default]
    Update,
    /// The profile is left as it is (its subscriptions too).
    Skip,
}

impl OnExisting {
    pub fn as_str(self) -> &'static str {
        match self {
            OnExisting::Update => "update",
            OnExisting::Skip => "skip",
        }
    }
}

/// CSV headers mapped to what they hold, for files whose headers are not already `email`,
/// `status`, `<taxonomy>.<field>`, `audience:<key>`, `consent_at` or `consent_source`:
/// `{"columns": {"E-Mail": "email", "Tags": "traits.tags", "Newsletter": "audience:news",
/// "Signed up": "consent_at", "Notes": "ignore"}}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub on_existing: OnExisting,
    pub dry_run: bool,
    pub mapping: Mapping,
}

/// One row the import refused: the file's line, the column (CSV header or NDJSON field path).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RowError {
    pub row: u64,
    pub column: Option<String>,
    pub error: String,
}

/// What an import did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ImportSummary {
    pub dry_run: bool,
    /// Data rows read (the header not counted).
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub skipped: u64,
    /// Rows refused (see `errors`); nothing of them was written.
    pub failed: u64,
    /// Subscriptions created.
    pub subscribed: u64,
    /// CSV headers that map to nothing, so were not read.
    pub ignored_columns: Vec<String>,
    /// The first row errors.
    pub errors: Vec<RowError>,
}

/// What a CSV column holds.
#[derive(Debug, Clone)]
enum Target {
    Email,
    Status,
    Field { taxonomy_id: Uuid, key: String, ty: FieldType },
    Audience(Uuid),
    ConsentAt,
    ConsentSource,
    Ignore,
}

/// A row, validated.
#[derive(Debug, Clone)]
struct ImportRow {
    row: u64,
    email: Email,
    status: Option<Status>,
    entries: Vec<TaxonomyEntry>,
    values: Vec<TaxonomyValue>,
    audiences: Vec<Uuid>,
    consent_at: Option<i64>,
    consent_source: Option<String>,
}

/// A subscription as an NDJSON row names it.
#[derive(Deserialize)]
struct NdjsonSubscription {
    audience: String,
    consented_at: Option<Value>,
    source: Option<String>,
}

/// An NDJSON row: the API's profile (other fields, like `id` or `created_at`, are ignored).
#[derive(Deserialize)]
struct NdjsonProfile {
    email: String,
    status: Option<Status>,
    #[serde(default)]
    taxonomies: Vec<TaxonomyEntry>,
    #[serde(default)]
    subscriptions: Vec<NdjsonSubscription>,
}

/// An import under way: the store's definitions, the CSV plan, the counts so far.
pub struct Importer {
    db: Database,
    store_id: Uuid,
    options: ImportOptions,
    defs: Arc<HashMap<Uuid, Vec<FieldDef>>>,
    taxonomy_keys: HashMap<String, Uuid>,
    /// Audiences by id and by key.
    audiences: HashMap<String, AudienceRow>,
    plan: Vec<(String, Target)>,
    pending: Vec<ImportRow>,
    /// Batches being written: their addresses, and the write.
    in_flight: VecDeque<(HashSet<String>, tokio::task::JoinHandle<AppResult<Counts>>)>,
    pub summary: ImportSummary,
    /// Row errors not yet handed to the caller ([`Importer::take_errors`]).
    new_errors: Vec<RowError>,
}

fn truthy(raw: &str) -> Result<bool, &'static str> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "" | "false" | "no" | "n" | "0" => Ok(false),
        "true" | "yes" | "y" | "1" | "x" | "subscribed" => Ok(true),
        _ => Err("invalid_boolean"),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A consent date: unix seconds, `YYYY-MM-DD`, or `YYYY-MM-DDTHH:MM:SS` with `Z` or `±HH:MM`.
pub fn parse_when(raw: &str) -> Result<i64, &'static str> {
    let raw = raw.trim();
    if let Ok(n) = raw.parse::<i64>() {
        return Ok(n);
    }
    let bad = "invalid_date";
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad);
    let (date, time) = match raw.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (raw, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts[..] else { return Err(bad) };
    let (y, m, d) = (num(y)?, num(m)?, num(d)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y.to_string().len() != 4 {
        return Err(bad);
    }
    let mut seconds = days_from_civil(y, m, d) * 86_400;
    if let Some(t) = time {
        let (clock, offset) = if let Some(c) = t.strip_suffix('Z') {
            (c, 0)
        } else if let Some(i) = t.rfind(['+', '-']) {
            let (c, o) = t.split_at(i);
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (oh, om) = o[1..].split_once(':').ok_or(bad)?;
            (c, sign * (num(oh)? * 3600 + num(om)? * 60))
        } else {
            (t, 0)
        };
        let hms: Vec<&str> = clock.split(':').collect();
        let (h, mi, s) = match hms[..] {
            [h, mi] => (num(h)?, num(mi)?, 0),
            [h, mi, s] => (num(h)?, num(mi)?, num(s.split('.').next().unwrap_or(s))?),
            _ => return Err(bad),
        };
        if h > 23 || mi > 59 || s > 60 {
            return Err(bad);
        }
        seconds += h * 3600 + mi * 60 + s - offset;
    }
    Ok(seconds)
}

impl Importer {
    /// Reads the store's active taxonomies and audiences.
    pub async fn new(db: Database, store_id: Uuid, options: ImportOptions) -> AppResult<Self> {
        let mut conn = db.auto();
        let taxonomies: Vec<TaxonomyRow> =
            conn.all_taxonomies(store_id).await?.into_iter().filter(|t| t.status == Status::Active).collect();
        let mut audiences = HashMap::new();
        let mut after = None;
        loop {
            let search = AudienceSearch { store_id, after, limit: 200, ..Default::default() };
            let page = conn.find_audiences(&search).await?;
            let done = page.len() < 200;
            after = page.last().map(|a| a.id);
            for a in page.into_iter().filter(|a| a.status == Status::Active) {
                audiences.insert(a.id.to_string(), a.clone());
                audiences.insert(a.key.clone(), a);
            }
            if done {
                break;
            }
        }
        Ok(Self {
            db,
            store_id,
            summary: ImportSummary { dry_run: options.dry_run, ..Default::default() },
            options,
            defs: Arc::new(taxonomies.iter().map(|t| (t.id, t.schema.clone())).collect()),
            taxonomy_keys: taxonomies.iter().map(|t| (t.key.clone(), t.id)).collect(),
            audiences,
            plan: vec![],
            pending: vec![],
            in_flight: VecDeque::new(),
            new_errors: vec![],
        })
    }

    /// An audience a row may subscribe to: a standard, active audience of the store.
    fn audience(&self, id_or_key: &str) -> Result<Uuid, &'static str> {
        match self.audiences.get(id_or_key) {
            None => Err("unknown_audience"),
            Some(a) if a.kind == AudienceKind::Paid => Err("paid_audience"),
            Some(a) => Ok(a.id),
        }
    }

    /// What one header names, by the mapping or by its own name.
    fn target(&self, header: &str) -> Result<Option<Target>, &'static str> {
        let named = self.options.mapping.columns.get(header).map(String::as_str).unwrap_or(header).trim();
        Ok(Some(match named {
            "email" => Target::Email,
            "status" => Target::Status,
            "consent_at" => Target::ConsentAt,
            "consent_source" => Target::ConsentSource,
            "ignore" => Target::Ignore,
            n if PROFILE_COLUMNS.contains(&n) => Target::Ignore,
            n => {
                if let Some(audience) = n.strip_prefix("audience:") {
                    Target::Audience(self.audience(audience)?)
                } else if let Some((taxonomy, field)) = parse_field_column(n) {
                    let taxonomy_id = *self.taxonomy_keys.get(taxonomy).ok_or("unknown_taxonomy")?;
                    let def = self.defs[&taxonomy_id].iter().find(|d| d.key == field).ok_or("unknown_field")?;
                    Target::Field { taxonomy_id, key: def.key.clone(), ty: def.ty }
                } else if self.options.mapping.columns.contains_key(header) {
                    return Err("unknown_target");
                } else {
                    return Ok(None);
                }
            }
        }))
    }

    /// Plans a CSV file's columns from its header. Errors (422) name the header.
    pub fn csv_header(&mut self, header: &[String]) -> AppResult<()> {
        let mut errors = vec![];
        let mut plan = vec![];
        for name in self.options.mapping.columns.keys() {
            if !header.iter().any(|h| h == name) {
                errors.push(FieldError::new(format!("mapping.columns.{name}"), "unknown_column"));
            }
        }
        for h in header {
            match self.target(h) {
                Ok(Some(t)) => plan.push((h.clone(), t)),
                Ok(None) => {
                    self.summary.ignored_columns.push(h.clone());
                    plan.push((h.clone(), Target::Ignore));
                }
                Err(e) => errors.push(FieldError::new(format!("columns.{h}"), e)),
            }
        }
        if !plan.iter().any(|(_, t)| matches!(t, Target::Email)) {
            errors.push(FieldError::new("columns", "email_column_required"));
        }
        let mut seen = HashSet::new();
        for (h, t) in &plan {
            let key = match t {
                Target::Field { taxonomy_id, key, .. } => format!("{taxonomy_id}.{key}"),
                Target::Ignore => continue,
                other => format!("{other:?}"),
            };
            if !seen.insert(key) {
                errors.push(FieldError::new(format!("columns.{h}"), "duplicate_column"));
            }
        }
        if !errors.is_empty() {
            return Err(AppError::validation(errors));
        }
        self.plan = plan;
        Ok(())
    }

    fn refuse(&mut self, row: u64, errors: Vec<(Option<String>, String)>) {
        self.summary.failed += 1;
        for (column, error) in errors {
            let e = RowError { row, column, error };
            if self.summary.errors.len() < SUMMARY_ERRORS {
                self.summary.errors.push(e.clone());
            }
            self.new_errors.push(e);
        }
    }

    /// Takes the row errors found since the last call (a job stores them).
    pub fn take_errors(&mut self) -> Vec<RowError> {
        std::mem::take(&mut self.new_errors)
    }

    /// Reads one CSV record (`row`: its line in the file); full batches are written.
    pub async fn csv_row(&mut self, row: u64, record: &csv::StringRecord) -> AppResult<()> {
        self.summary.rows += 1;
        let mut errors = vec![];
        let (mut email, mut status, mut consent_at, mut consent_source) = (None, None, None, None);
        let mut entries: Vec<TaxonomyEntry> = vec![];
        let mut columns: Vec<Vec<String>> = vec![];
        let mut audiences = vec![];
        for (i, (header, target)) in self.plan.iter().enumerate() {
            let raw = record.get(i).unwrap_or("").trim();
            let col = || Some(header.clone());
            match target {
                Target::Ignore => {}
                Target::Email => email = Some(raw.to_string()),
                Target::Status if raw.is_empty() => {}
                Target::Status => match raw.to_ascii_lowercase().parse::<Status>() {
                    Ok(s) => status = Some(s),
                    Err(_) => errors.push((col(), "invalid_status".to_string())),
                },
                Target::ConsentAt if raw.is_empty() => {}
                Target::ConsentAt => match parse_when(raw) {
                    Ok(at) => consent_at = Some(at),
                    Err(e) => errors.push((col(), e.to_string())),
                },
                Target::ConsentSource => consent_source = Some(raw.to_string()).filter(|s| !s.is_empty()),
                Target::Audience(id) => match truthy(raw) {
                    Ok(true) => audiences.push(*id),
                    Ok(false) => {}
                    Err(e) => errors.push((col(), e.to_string())),
                },
                Target::Field { taxonomy_id, key, ty } => match parse_cell(*ty, raw) {
                    Ok(None) => {}
                    Ok(Some(value)) => {
                        let field = EntryField { key: key.clone(), ty: *ty, value };
                        match entries.iter().position(|e| e.taxonomy_id == *taxonomy_id) {
                            Some(at) => {
                                entries[at].fields.push(field);
                                columns[at].push(header.clone());
                            }
                            None => {
                                entries.push(TaxonomyEntry { taxonomy_id: *taxonomy_id, fields: vec![field] });
                                columns.push(vec![header.clone()]);
                            }
                        }
                    }
                    Err(e) => errors.push((col(), e.to_string())),
                },
            }
        }
        let email_column = self.plan.iter().find(|(_, t)| matches!(t, Target::Email)).map(|(h, _)| h.clone());
        let parsed = match Email::parse(email.as_deref().unwrap_or("")) {
            Ok(e) => Some(e),
            Err(e) => {
                errors.push((
                    email_column,
                    if email.as_deref().unwrap_or("").is_empty() { "required" } else { e }.into(),
                ));
                None
            }
        };
        let values = match validate_entries(&entries, &self.defs) {
            Ok(values) => values,
            Err(field_errors) => {
                for e in field_errors {
                    errors.push((column_of(&e.field, &columns), e.error.to_string()));
                }
                vec![]
            }
        };
        match parsed {
            Some(email) if errors.is_empty() => {
                let consent_source = consent_source;
                self.accept(ImportRow { row, email, status, entries, values, audiences, consent_at, consent_source })
                    .await
            }
            _ => {
                self.refuse(row, errors);
                Ok(())
            }
        }
    }

    /// Reads one NDJSON line (`row`: its line in the file); full batches are written.
    pub async fn ndjson_row(&mut self, row: u64, line: &str) -> AppResult<()> {
        if line.trim().is_empty() {
            return Ok(());
        }
        self.summary.rows += 1;
        let p: NdjsonProfile = match serde_json::from_str(line) {
            Ok(p) => p,
            Err(e) => {
                let error = if e.is_data() { "invalid_profile" } else { "invalid_json" };
                self.refuse(row, vec![(None, error.into())]);
                return Ok(());
            }
        };
        let mut errors = vec![];
        let email = Email::parse(&p.email).map_err(|e| errors.push((Some("email".to_string()), e.to_string()))).ok();
        let values = validate_entries(&p.taxonomies, &self.defs)
            .map_err(|es| errors.extend(es.into_iter().map(|e| (Some(e.field), e.error.to_string()))))
            .unwrap_or_default();
        let (mut audiences, mut consent_at, mut consent_source) = (vec![], None, None);
        for (i, s) in p.subscriptions.iter().enumerate() {
            match self.audience(&s.audience) {
                Ok(id) => audiences.push(id),
                Err(e) => errors.push((Some(format!("subscriptions[{i}].audience")), e.to_string())),
            }
            match &s.consented_at {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) if n.as_i64().is_some() => consent_at = n.as_i64(),
                Some(Value::String(t)) => match parse_when(t) {
                    Ok(at) => consent_at = Some(at),
                    Err(e) => errors.push((Some(format!("subscriptions[{i}].consented_at")), e.to_string())),
                },
                Some(_) => errors.push((Some(format!("subscriptions[{i}].consented_at")), "invalid_date".into())),
            }
            if s.source.is_some() {
                consent_source = s.source.clone();
            }
        }
        match email {
            Some(email) if errors.is_empty() => {
                let entries = p.taxonomies;
                self.accept(ImportRow {
                    row,
                    email,
                    status: p.status,
                    entries,
                    values,
                    audiences,
                    consent_at,
                    consent_source,
                })
                .await
            }
            _ => {
                self.refuse(row, errors);
                Ok(())
            }
        }
    }

    async fn accept(&mut self, row: ImportRow) -> AppResult<()> {
        // One address twice in a batch: the second is refused (across batches it updates).
        if self.pending.iter().any(|p| p.email.key() == row.email.key()) {
            self.refuse(row.row, vec![(None, "duplicate_email".into())]);
            return Ok(());
        }
        self.pending.push(row);
        if self.pending.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes (or, in a dry run, counts) the rows read so far. On Postgres up to two batches are
    /// written at once, each in its own transaction (parsing goes on meanwhile); a batch that
    /// shares an address with one under way waits for it, so a later row still updates an
    /// earlier one. SQLite takes one writer at a time. Counts include a batch once it committed.
    pub async fn flush(&mut self) -> AppResult<()> {
        let batch = std::mem::take(&mut self.pending);
        if batch.is_empty() {
            return Ok(());
        }
        if self.options.dry_run {
            return self.count(batch).await;
        }
        let keys: HashSet<String> = batch.iter().map(|r| r.email.key()).collect();
        let most = if self.db.backend() == crate::repo::Backend::Postgres { 2 } else { 1 };
        while self.in_flight.len() >= most || self.in_flight.iter().any(|(k, _)| !k.is_disjoint(&keys)) {
            self.settle_one().await?;
        }
        let (db, store_id, on_existing, defs) =
            (self.db.clone(), self.store_id, self.options.on_existing, self.defs.clone());
        let write = tokio::spawn(async move { write_batch(db, store_id, on_existing, defs, batch).await });
        self.in_flight.push_back((keys, write));
        Ok(())
    }

    /// Waits for the oldest batch under way and adds its counts.
    async fn settle_one(&mut self) -> AppResult<()> {
        let Some((_, write)) = self.in_flight.pop_front() else { return Ok(()) };
        let counts = write.await.map_err(AppError::internal)??;
        self.summary.created += counts.created;
        self.summary.updated += counts.updated;
        self.summary.skipped += counts.skipped;
        self.summary.subscribed += counts.subscribed;
        Ok(())
    }

    /// Writes what was read and waits until every batch committed.
    pub async fn settle(&mut self) -> AppResult<()> {
        self.flush().await?;
        while !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        Ok(())
    }

    /// A dry run's batch: what would be created, updated or skipped, and subscribed.
    async fn count(&mut self, batch: Vec<ImportRow>) -> AppResult<()> {
        let mut db = self.db.auto();
        let keys: Vec<String> = batch.iter().map(|r| r.email.key()).collect();
        let existing = db.profile_ids_by_email_keys(self.store_id, &keys).await?;
        for row in &batch {
            match existing.get(&row.email.key()) {
                None => {
                    self.summary.created += 1;
                    self.summary.subscribed += row.audiences.len() as u64;
                }
                Some(_) if self.options.on_existing == OnExisting::Skip => self.summary.skipped += 1,
                Some(id) => {
                    self.summary.updated += 1;
                    for audience_id in &row.audiences {
                        if db.subscription(self.store_id, *audience_id, *id).await?.is_none() {
                            self.summary.subscribed += 1;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes what is left and answers the summary.
    pub async fn finish(mut self) -> AppResult<ImportSummary> {
        self.settle().await?;
        if self.summary.created + self.summary.updated >= BULK_LOAD_ROWS {
            self.db.analyze_after_bulk_load().await?;
        }
        Ok(self.summary)
    }
}

/// Rows written by an import past which the planner's statistics are refreshed at its end.
const BULK_LOAD_ROWS: u64 = 10_000;

/// What one written batch did.
#[derive(Default)]
struct Counts {
    created: u64,
    updated: u64,
    skipped: u64,
    subscribed: u64,
}

/// Writes one batch in one transaction.
async fn write_batch(
    db: Database,
    store_id: Uuid,
    on_existing: OnExisting,
    defs: Arc<HashMap<Uuid, Vec<FieldDef>>>,
    batch: Vec<ImportRow>,
) -> AppResult<Counts> {
    let mut counts = Counts::default();
    let now = crate::now();
    let mut tx = db.begin().await?;
    let keys: Vec<String> = batch.iter().map(|r| r.email.key()).collect();
    let existing = tx.profile_ids_by_email_keys(store_id, &keys).await?;
    let mut fresh = vec![];
    let mut updates = vec![];
    let mut subscribe: Vec<(Uuid, &ImportRow)> = vec![];
    for row in &batch {
        match existing.get(&row.email.key()) {
            None => {
                let id = Uuid::now_v7();
                fresh.push(NewProfile {
                    store_id,
                    id,
                    email: Some(row.email.clone()),
                    verified: false,
                    status: row.status.unwrap_or(Status::Active),
                    values: row.values.clone(),
                    created_at: now,
                });
                subscribe.push((id, row));
            }
            Some(_) if on_existing == OnExisting::Skip => counts.skipped += 1,
            Some(id) => {
                updates.push((*id, row));
                subscribe.push((*id, row));
            }
        }
    }
    let inserted: HashSet<Uuid> = tx.bulk_insert_profiles(&fresh).await?.into_iter().collect();
    counts.created += inserted.len() as u64;
    // Taken meanwhile by another writer: left alone, counted as skipped.
    counts.skipped += (fresh.len() - inserted.len()) as u64;
    let created: Vec<_> = fresh
        .into_iter()
        .filter(|p| inserted.contains(&p.id))
        .map(|p| {
            let id = p.id;
            events::new_event(store_id, EventType::ProfileCreated, Some(id), crate::views::Profile::new_profile(p))
        })
        .collect();
    tx.insert_events(&created).await?;

    let ids: Vec<Uuid> = updates.iter().map(|(id, _)| *id).collect();
    // Values only: the profiles' full details are read once, after the rewrite, for the events.
    let current = tx.taxonomy_values(store_id, &ids).await?;
    let rewrites: Vec<ProfileRewrite> = updates
        .iter()
        .map(|(id, row)| {
            let current = current.get(id).cloned().unwrap_or_default();
            let values = if row.entries.is_empty() { current } else { merged_values(current, row, &defs) };
            ProfileRewrite { id: *id, email_key: row.email.key(), values, status: row.status }
        })
        .collect();
    tx.bulk_rewrite_profiles(store_id, &rewrites, now).await?;
    if !ids.is_empty() {
        events::profiles_updated(&mut tx, store_id, &ids).await?;
    }
    counts.updated += updates.len() as u64;

    let updated: HashSet<Uuid> = ids.iter().copied().collect();
    for (profile_id, row) in subscribe {
        if !inserted.contains(&profile_id) && !updated.contains(&profile_id) {
            continue;
        }
        for audience_id in &row.audiences {
            if tx.subscription(store_id, *audience_id, profile_id).await?.is_some() {
                continue;
            }
            let at = row.consent_at.unwrap_or(now);
            let sub = SubscriptionRow {
                store_id,
                id: Uuid::now_v7(),
                audience_id: *audience_id,
                profile_id,
                status: SubscriptionStatus::Active,
                source: SubscriptionSource::Import,
                price_id: None,
                payment: None,
                start_date: Some(at),
                end_date: None,
                confirmed_at: Some(at),
                cancelled_at: None,
                created_at: now,
                updated_at: now,
            };
            let stored = tx.upsert_subscription(&sub).await?;
            let mut consent =
                Consent::new(ConsentAction::Import).source(row.consent_source.clone().unwrap_or("import".into()));
            consent.at = row.consent_at;
            events::subscription_written(&mut tx, store_id, None, &stored, &consent).await?;
            counts.subscribed += 1;
        }
    }
    tx.commit().await?;
    Ok(counts)
}

/// The column of a `validate_entries` error (`taxonomies[i].fields[j]...`).
fn column_of(field: &str, columns: &[Vec<String>]) -> Option<String> {
    let index = |after: &str| -> Option<usize> {
        let rest = field.split(after).nth(1)?;
        rest.split(']').next()?.parse().ok()
    };
    let (i, j) = (index("taxonomies[")?, index("fields[")?);
    columns.get(i)?.get(j).cloned()
}

/// A profile's values after an update by `row`: the row's fields replace those fields of their
/// taxonomies, every other value stays.
fn merged_values(
    current: Vec<TaxonomyValue>,
    row: &ImportRow,
    defs: &HashMap<Uuid, Vec<FieldDef>>,
) -> Vec<TaxonomyValue> {
    let touched: HashSet<Uuid> = row.entries.iter().map(|e| e.taxonomy_id).collect();
    let (kept, changed): (Vec<_>, Vec<_>) = current.into_iter().partition(|v| !touched.contains(&v.taxonomy_id));
    let mut entries = entries_from_values(changed);
    for new in &row.entries {
        match entries.iter_mut().find(|e| e.taxonomy_id == new.taxonomy_id) {
            Some(entry) => {
                for field in &new.fields {
                    entry.fields.retain(|f| f.key != field.key);
                    entry.fields.push(field.clone());
                }
            }
            None => entries.push(new.clone()),
        }
    }
    // The row's fields were valid alone; with the kept ones they are still (one per key).
    let mut values = kept;
    values.extend(validate_entries(&entries, defs).unwrap_or_else(|_| row.values.clone()));
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_dates_in_the_forms_files_carry() {
        assert_eq!(parse_when("1700000000"), Ok(1_700_000_000));
        assert_eq!(parse_when("1970-01-01"), Ok(0));
        assert_eq!(parse_when("2024-02-29"), Ok(1_709_164_800));
        assert_eq!(parse_when("2024-02-29T12:30:00Z"), Ok(1_709_164_800 + 45_000));
        assert_eq!(parse_when("2024-02-29 12:30"), Ok(1_709_164_800 + 45_000));
        assert_eq!(parse_when("2024-02-29T14:30:00+02:00"), Ok(1_709_164_800 + 45_000));
        assert_eq!(parse_when("2024-02-29T12:30:00.250Z"), Ok(1_709_164_800 + 45_000));
        for bad in ["yesterday", "2024-13-01", "24-01-01", "2024-01-01T25:00:00Z", ""] {
            assert_eq!(parse_when(bad), Err("invalid_date"), "{bad}");
        }
    }

    #[test]
    fn audience_cells() {
        assert_eq!(truthy("Yes"), Ok(true));
        assert_eq!(truthy(" x "), Ok(true));
        assert_eq!(truthy(""), Ok(false));
        assert_eq!(truthy("no"), Ok(false));
        assert_eq!(truthy("maybe"), Err("invalid_boolean"));
    }

    #[test]
    fn entry_errors_name_their_column() {
        let columns = vec![vec!["t.a".to_string(), "t.b".to_string()]];
        assert_eq!(column_of("taxonomies[0].fields[1].value", &columns).as_deref(), Some("t.b"));
        assert_eq!(column_of("taxonomies[1].taxonomy_id", &columns), None);
    }
}

/// Told after every [`BATCH`] rows read, with the bytes read so far (a job saves its counts, the
/// CLI draws its progress).
#[async_trait::async_trait]
pub trait Progress: Send {
    async fn batch(&mut self, importer: &mut Importer, bytes: u64) -> AppResult<()>;
}

/// Feeds a whole file to `importer`, telling `progress` after every [`BATCH`] rows; the caller
/// then calls [`Importer::finish`].
pub async fn drive<R: std::io::Read + Send>(
    importer: &mut Importer,
    format: ImportFormat,
    reader: R,
    progress: &mut dyn Progress,
) -> AppResult<()> {
    match format {
        ImportFormat::Csv => {
            let mut csv = csv_reader(reader);
            let header = csv_header(&mut csv)?;
            if importer.plan.is_empty() {
                importer.csv_header(&header)?;
            }
            let mut record = csv::StringRecord::new();
            let mut n = 0u64;
            loop {
                match csv.read_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {
                        let line = record.position().map(|p| p.line()).unwrap_or(n + 2);
                        importer.csv_row(line, &record).await?;
                    }
                    Err(e) => {
                        let line = e.position().map(|p| p.line()).unwrap_or(n + 2);
                        importer.summary.rows += 1;
                        importer.refuse(line, vec![(None, csv_code(&e).into())]);
                        if !matches!(e.kind(), csv::ErrorKind::Utf8 { .. } | csv::ErrorKind::UnequalLengths { .. }) {
                            break;
                        }
                    }
                }
                n += 1;
                if n.is_multiple_of(BATCH as u64) {
                    progress.batch(importer, csv.position().byte()).await?;
                }
            }
            let bytes = csv.position().byte();
            progress.batch(importer, bytes).await
        }
        ImportFormat::Ndjson => {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(reader);
            let (mut line, mut n, mut bytes) = (String::new(), 0u64, 0u64);
            loop {
                line.clear();
                match lines.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(read) => {
                        bytes += read as u64;
                        n += 1;
                        importer.ndjson_row(n, &line).await?;
                    }
                    Err(_) => {
                        n += 1;
                        importer.summary.rows += 1;
                        importer.refuse(n, vec![(None, "invalid_utf8".into())]);
                        break;
                    }
                }
                if n.is_multiple_of(BATCH as u64) {
                    progress.batch(importer, bytes).await?;
                }
            }
            progress.batch(importer, bytes).await
        }
    }
}

/// A CSV reader that tolerates rows of another length (each is refused with its row number).
fn csv_reader<R: std::io::Read>(reader: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new().flexible(true).from_reader(reader)
}

/// The header row, trimmed, without a byte-order mark.
fn csv_header<R: std::io::Read>(csv: &mut csv::Reader<R>) -> AppResult<Vec<String>> {
    Ok(csv
        .headers()
        .map_err(|e| AppError::invalid("file", csv_code(&e)))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect())
}

fn csv_code(e: &csv::Error) -> &'static str {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "invalid_utf8",
        csv::ErrorKind::UnequalLengths { .. } => "wrong_column_count",
        _ => "invalid_csv",
    }
}

/// Where an import job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImportStatus {
    Running,
    Completed,
    Failed,
    /// The server running it stopped (its heartbeat is a minute old): run the same file again.
    Interrupted,
}

/// An import job's view: counts so far and where it stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportJob {
    pub id: Uuid,
    pub store_id: Uuid,
    /// `interrupted`: the server running it stopped; run the same file again (rows already
    /// imported are matched by email).
    pub status: ImportStatus,
    pub format: ImportFormat,
    pub dry_run: bool,
    pub on_existing: OnExisting,
    pub bytes_total: i64,
    pub bytes_read: i64,
    /// 0–100, by bytes read.
    pub progress_percent: f64,
    pub rows: i64,
    pub created: i64,
    pub updated: i64,
    pub skipped: i64,
    pub failed: i64,
    pub subscribed: i64,
    /// Why a failed job stopped.
    pub error: Option<String>,
    /// The first row errors; all of them at `errors_url`.
    pub errors: Vec<RowError>,
    pub errors_url: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// A job whose heartbeat is older than this is reported `interrupted`.
const STALE_SECS: i64 = 60;

pub struct Imports {
    db: Database,
}

impl Imports {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Starts an import of the file at `path` (which the job deletes when done) and answers the
    /// job. A CSV header or mapping that cannot be read is answered here (422), before the job.
    pub async fn start(
        &self,
        store_id: Uuid,
        format: ImportFormat,
        options: ImportOptions,
        path: std::path::PathBuf,
    ) -> AppResult<ImportJob> {
        let result = self.start_inner(store_id, format, options, &path).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&path).await;
        }
        result
    }

    async fn start_inner(
        &self,
        store_id: Uuid,
        format: ImportFormat,
        options: ImportOptions,
        path: &std::path::Path,
    ) -> AppResult<ImportJob> {
        let bytes_total = tokio::fs::metadata(path).await.map_err(AppError::internal)?.len() as i64;
        let mut importer = Importer::new(self.db.clone(), store_id, options.clone()).await?;
        if format == ImportFormat::Csv {
            let file = std::fs::File::open(path).map_err(AppError::internal)?;
            importer.csv_header(&csv_header(&mut csv_reader(file))?)?;
        }
        let now = crate::now();
        let mut job = crate::repo::ImportJobRow {
            store_id,
            id: Uuid::now_v7(),
            status: "running".into(),
            format: format.as_str().into(),
            dry_run: options.dry_run,
            on_existing: options.on_existing.as_str().into(),
            bytes_total,
            bytes_read: 0,
            rows_read: 0,
            created: 0,
            updated: 0,
            skipped: 0,
            failed: 0,
            subscribed: 0,
            error: None,
            created_at: now,
            heartbeat_at: now,
            finished_at: None,
        };
        self.db.auto().insert_import(&job).await?;
        let answer = view(job.clone(), vec![]);
        let db = self.db.clone();
        let path = path.to_path_buf();
        tokio::spawn(async move {
            let outcome = run_job(&db, &mut importer, format, &path, &mut job).await;
            let outcome = match outcome {
                Ok(()) => importer.finish().await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(summary) => {
                    copy_counts(&mut job, &summary);
                    job.status = "completed".into();
                }
                Err(e) => {
                    tracing::warn!(import_id = %job.id, error = %e, "import failed");
                    job.status = "failed".into();
                    job.error = Some(e.to_string());
                }
            }
            job.finished_at = Some(crate::now());
            job.heartbeat_at = crate::now();
            if let Err(e) = db.auto().save_import(&job).await {
                tracing::error!(import_id = %job.id, error = %e, "import status not saved");
            }
            let _ = tokio::fs::remove_file(&path).await;
        });
        Ok(answer)
    }

    pub async fn get(&self, store_id: Uuid, id: Uuid) -> AppResult<ImportJob> {
        let mut db = self.db.auto();
        let job = db.import_job(store_id, id).await?.ok_or(AppError::NotFound("import"))?;
        let errors = db.import_errors(store_id, id, None, 20).await?;
        Ok(view(job, errors.into_iter().map(row_error).collect()))
    }

    /// The job's row errors in row order, after (row, error) `after`.
    pub async fn errors(
        &self,
        store_id: Uuid,
        id: Uuid,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> AppResult<Vec<RowError>> {
        let mut db = self.db.auto();
        db.import_job(store_id, id).await?.ok_or(AppError::NotFound("import"))?;
        Ok(db.import_errors(store_id, id, after, limit).await?.into_iter().map(row_error).collect())
    }
}

fn row_error(e: crate::repo::ImportErrorRow) -> RowError {
    RowError { row: e.row as u64, column: e.column, error: e.error }
}

fn copy_counts(job: &mut crate::repo::ImportJobRow, s: &ImportSummary) {
    job.rows_read = s.rows as i64;
    job.created = s.created as i64;
    job.updated = s.updated as i64;
    job.skipped = s.skipped as i64;
    job.failed = s.failed as i64;
    job.subscribed = s.subscribed as i64;
}

/// A job's progress: counts, new row errors and a heartbeat saved after every batch.
struct JobProgress<'a> {
    db: &'a Database,
    job: &'a mut crate::repo::ImportJobRow,
    stored: usize,
}

#[async_trait::async_trait]
impl Progress for JobProgress<'_> {
    async fn batch(&mut self, importer: &mut Importer, bytes: u64) -> AppResult<()> {
        // Full batches go to be written; the counts are those of the batches committed so far.
        importer.flush().await?;
        let errors: Vec<crate::repo::ImportErrorRow> = importer
            .take_errors()
            .into_iter()
            .take(MAX_STORED_ERRORS.saturating_sub(self.stored))
            .map(|e| crate::repo::ImportErrorRow { row: e.row as i64, column: e.column, error: e.error })
            .collect();
        self.stored += errors.len();
        copy_counts(self.job, &importer.summary);
        self.job.bytes_read = bytes as i64;
        self.job.heartbeat_at = crate::now();
        let mut tx = self.db.begin().await?;
        tx.insert_import_errors(self.job.store_id, self.job.id, &errors).await?;
        tx.save_import(self.job).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn run_job(
    db: &Database,
    importer: &mut Importer,
    format: ImportFormat,
    path: &std::path::Path,
    job: &mut crate::repo::ImportJobRow,
) -> AppResult<()> {
    let file = std::fs::File::open(path).map_err(AppError::internal)?;
    drive(importer, format, file, &mut JobProgress { db, job, stored: 0 }).await
}

fn view(job: crate::repo::ImportJobRow, errors: Vec<RowError>) -> ImportJob {
    let stale = job.status == "running" && crate::now() - job.heartbeat_at > STALE_SECS;
    let progress = if job.bytes_total > 0 {
        (job.bytes_read as f64 * 100.0 / job.bytes_total as f64).clamp(0.0, 100.0)
    } else {
        100.0
    };
    ImportJob {
        errors_url: format!("/v1/stores/{}/imports/{}/errors", job.store_id, job.id),
        id: job.id,
        store_id: job.store_id,
        status: match job.status.as_str() {
            _ if stale => ImportStatus::Interrupted,
            "completed" => ImportStatus::Completed,
            "failed" => ImportStatus::Failed,
            _ => ImportStatus::Running,
        },
        format: if job.format == "csv" { ImportFormat::Csv } else { ImportFormat::Ndjson },
        dry_run: job.dry_run,
        on_existing: if job.on_existing == "skip" { OnExisting::Skip } else { OnExisting::Update },
        bytes_total: job.bytes_total,
        bytes_read: job.bytes_read,
        progress_percent: (progress * 10.0).round() / 10.0,
        rows: job.rows_read,
        created: job.created,
        updated: job.updated,
        skipped: job.skipped,
        failed: job.failed,
        subscribed: job.subscribed,
        error: job.error,
        errors,
        created_at: job.created_at,
        finished_at: job.finished_at,
    }
}
