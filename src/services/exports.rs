//! Streaming exports (issue 16): the profiles `find`'s filters (or a saved segment) match, and an
//! audience's subscribers, as NDJSON or CSV.
//!
//! An export reads one snapshot of the database ([`Database::snapshot`]) in pages of
//! [`PAGE`] rows in keyset order, and hands each page, already written out, to a channel of
//! [`BUFFERED_PAGES`]: the reader (an HTTP body, the CLI's stdout) pulls as fast as it can take,
//! and the export waits for it, so memory stays a few pages whatever the row count. Errors in
//! the filters are answered before the first byte (422); an error later ends the stream early
//! (the HTTP response is then cut off, never completed with partial data as if whole).

use std::io;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::table::{PROFILE_COLUMNS, cell, field_column};
use crate::domain::taxonomy::{FieldType, TaxonomyEntry, entries_from_values};
use crate::domain::{Status, SubscriptionSource, SubscriptionStatus};
use crate::error::{AppError, AppResult, FieldError};
use crate::repo::{Database, ProfileRow, ProfileSearch, SortValue, SubscriberRow, TaxonomyRow, Tx};
use crate::services::profiles::search_filters;
use crate::services::segments::segment_search;

/// Rows read per statement.
pub const PAGE: u32 = 1000;
/// Pages written out ahead of the reader.
const BUFFERED_PAGES: usize = 2;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One JSON object per line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// A header row, then one row per profile (`text/csv`); see `docs/data.md` for the columns.
    Csv,
}

impl ExportFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Csv => "csv",
        }
    }
}

/// Which profiles: `find`'s filters, or a saved segment's (not both).
#[derive(Debug, Default, Clone)]
pub struct ProfileFilter {
    pub query: Option<String>,
    pub taxonomy_query: Option<String>,
    pub status: Option<Status>,
    /// A segment's id or key.
    pub segment: Option<String>,
}

/// An export under way: its chunks, in order. An `Err` chunk is the last.
pub struct ExportStream {
    pub chunks: mpsc::Receiver<io::Result<Bytes>>,
}

/// A profile as an NDJSON export line: the API's profile without sessions and codes.
#[derive(Serialize)]
struct ExportedProfile<'a> {
    id: Uuid,
    email: Option<&'a str>,
    status: Status,
    verified: bool,
    taxonomies: Vec<TaxonomyEntry>,
    created_at: i64,
    updated_at: i64,
}

/// A subscriber as an export row (both formats have these columns, in this order).
#[derive(Serialize)]
struct ExportedSubscriber<'a> {
    profile_id: Uuid,
    email: Option<&'a str>,
    subscription_id: Uuid,
    status: SubscriptionStatus,
    source: SubscriptionSource,
    price_id: Option<&'a str>,
    start_date: Option<i64>,
    end_date: Option<i64>,
    confirmed_at: Option<i64>,
    cancelled_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

const SUBSCRIBER_COLUMNS: [&str; 12] = [
    "profile_id",
    "email",
    "subscription_id",
    "status",
    "source",
    "price_id",
    "start_date",
    "end_date",
    "confirmed_at",
    "cancelled_at",
    "created_at",
    "updated_at",
];

pub struct Exports {
    db: Database,
}

fn csv_error(e: csv::Error) -> io::Error {
    io::Error::other(e)
}

/// A CSV record written out into bytes.
fn csv_line<I, T>(record: I) -> io::Result<Vec<u8>>
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    let mut w = csv::Writer::from_writer(vec![]);
    w.write_record(record).map_err(csv_error)?;
    w.into_inner().map_err(|e| io::Error::other(e.to_string()))
}

fn opt(v: Option<i64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_default()
}

/// The CSV columns of the store's taxonomy fields, in key then field order.
fn field_columns(taxonomies: &[TaxonomyRow]) -> Vec<(Uuid, String, FieldType, String)> {
    let mut sorted: Vec<&TaxonomyRow> = taxonomies.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    sorted
        .into_iter()
        .flat_map(|t| t.schema.iter().map(move |f| (t.id, f.key.clone(), f.ty, field_column(&t.key, &f.key))))
        .collect()
}

impl Exports {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Starts an export of profiles; filter errors are answered here, before any row.
    pub async fn profiles(
        &self,
        store_id: Uuid,
        filter: ProfileFilter,
        format: ExportFormat,
    ) -> AppResult<ExportStream> {
        let mut tx = self.db.snapshot().await?;
        let search = match &filter.segment {
            Some(segment) => {
                if filter.query.is_some() || filter.taxonomy_query.is_some() || filter.status.is_some() {
                    return Err(AppError::invalid("segment", "conflicts_with_filters"));
                }
                let row = tx.segment(store_id, segment).await?.ok_or(AppError::NotFound("segment"))?;
                segment_search(&mut tx, &row).await?
            }
            None => search_filters(
                &mut tx,
                store_id,
                filter.query.as_deref(),
                filter.taxonomy_query.as_deref(),
                filter.status,
            )
            .await?
            .map_err(AppError::validation)?,
        };
        let taxonomies = tx.all_taxonomies(store_id).await?;
        let (send, chunks) = mpsc::channel(BUFFERED_PAGES);
        tokio::spawn(async move {
            if let Err(e) = stream_profiles(tx, search, taxonomies, format, &send).await {
                tracing::warn!(error = %e, "profile export ended early");
                let _ = send.send(Err(e)).await;
            }
        });
        Ok(ExportStream { chunks })
    }

    /// Starts an export of an audience's subscribers (all, or those of one status).
    pub async fn subscribers(
        &self,
        store_id: Uuid,
        audience: &str,
        status: Option<SubscriptionStatus>,
        format: ExportFormat,
    ) -> AppResult<ExportStream> {
        let mut tx = self.db.snapshot().await?;
        let id = Uuid::parse_str(audience).ok();
        let audience = tx.audience(store_id, id, audience).await?.ok_or(AppError::NotFound("audience"))?;
        let (send, chunks) = mpsc::channel(BUFFERED_PAGES);
        tokio::spawn(async move {
            if let Err(e) = stream_subscribers(tx, store_id, audience.id, status, format, &send).await {
                tracing::warn!(error = %e, "subscriber export ended early");
                let _ = send.send(Err(e)).await;
            }
        });
        Ok(ExportStream { chunks })
    }
}

/// Sends a chunk; `false` when the reader went away (the export stops).
async fn send(to: &mpsc::Sender<io::Result<Bytes>>, chunk: Vec<u8>) -> bool {
    chunk.is_empty() || to.send(Ok(Bytes::from(chunk))).await.is_ok()
}

fn io_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

async fn stream_profiles(
    mut tx: Tx,
    mut search: ProfileSearch,
    taxonomies: Vec<TaxonomyRow>,
    format: ExportFormat,
    to: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let columns = field_columns(&taxonomies);
    if format == ExportFormat::Csv {
        let header = PROFILE_COLUMNS.iter().map(|c| c.to_string()).chain(columns.iter().map(|c| c.3.clone()));
        if !send(to, csv_line(header)?).await {
            return Ok(());
        }
    }
    search.limit = PAGE;
    search.after = None;
    loop {
        let page = tx.find_profiles_with_values(&search).await.map_err(io_error)?;
        let done = page.len() < PAGE as usize;
        search.after = page.last().map(|(p, _)| (SortValue::Int(p.created_at), p.id));
        let mut out = Vec::with_capacity(page.len() * 200);
        for (profile, values) in page {
            let entries = entries_from_values(values);
            match format {
                ExportFormat::Ndjson => ndjson_profile(&mut out, &profile, entries)?,
                ExportFormat::Csv => out.extend(csv_profile(&profile, &entries, &columns)?),
            }
        }
        if !send(to, out).await {
            return Ok(());
        }
        if done {
            let _ = tx.commit().await;
            return Ok(());
        }
    }
}

fn ndjson_profile(out: &mut Vec<u8>, p: &ProfileRow, taxonomies: Vec<TaxonomyEntry>) -> io::Result<()> {
    let line = ExportedProfile {
        id: p.id,
        email: p.email.as_deref(),
        status: p.status,
        verified: p.verified,
        taxonomies,
        created_at: p.created_at,
        updated_at: p.updated_at,
    };
    serde_json::to_writer(&mut *out, &line).map_err(io_error)?;
    out.push(b'\n');
    Ok(())
}

fn csv_profile(
    p: &ProfileRow,
    entries: &[TaxonomyEntry],
    columns: &[(Uuid, String, FieldType, String)],
) -> io::Result<Vec<u8>> {
    let mut record = vec![
        p.id.to_string(),
        p.email.clone().unwrap_or_default(),
        p.status.as_str().to_string(),
        p.verified.to_string(),
        p.created_at.to_string(),
        p.updated_at.to_string(),
    ];
    for (taxonomy_id, field, ty, _) in columns {
        let value = entries
            .iter()
            .find(|e| e.taxonomy_id == *taxonomy_id)
            .and_then(|e| e.fields.iter().find(|f| &f.key == field))
            .map(|f| cell(*ty, &f.value));
        record.push(value.unwrap_or_default());
    }
    csv_line(record)
}

async fn stream_subscribers(
    mut tx: Tx,
    store_id: Uuid,
    audience_id: Uuid,
    status: Option<SubscriptionStatus>,
    format: ExportFormat,
    to: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    if format == ExportFormat::Csv && !send(to, csv_line(SUBSCRIBER_COLUMNS)?).await {
        return Ok(());
    }
    let mut after = None;
    loop {
        let page = tx.subscribers(store_id, audience_id, status, after, PAGE).await.map_err(io_error)?;
        let done = page.len() < PAGE as usize;
        after = page.last().map(|r| r.subscription.id);
        let mut out = Vec::with_capacity(page.len() * 200);
        for row in &page {
            match format {
                ExportFormat::Ndjson => {
                    serde_json::to_writer(&mut out, &subscriber(row)).map_err(io_error)?;
                    out.push(b'\n');
                }
                ExportFormat::Csv => out.extend(csv_subscriber(row)?),
            }
        }
        if !send(to, out).await {
            return Ok(());
        }
        if done {
            let _ = tx.commit().await;
            return Ok(());
        }
    }
}

fn subscriber(r: &SubscriberRow) -> ExportedSubscriber<'_> {
    let s = &r.subscription;
    ExportedSubscriber {
        profile_id: s.profile_id,
        email: r.email.as_deref(),
        subscription_id: s.id,
        status: s.status,
        source: s.source,
        price_id: s.price_id.as_deref(),
        start_date: s.start_date,
        end_date: s.end_date,
        confirmed_at: s.confirmed_at,
        cancelled_at: s.cancelled_at,
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

fn csv_subscriber(r: &SubscriberRow) -> io::Result<Vec<u8>> {
    let s = &r.subscription;
    csv_line([
        s.profile_id.to_string(),
        r.email.clone().unwrap_or_default(),
        s.id.to_string(),
        s.status.as_str().to_string(),
        s.source.as_str().to_string(),
        s.price_id.clone().unwrap_or_default(),
        opt(s.start_date),
        opt(s.end_date),
        opt(s.confirmed_at),
        opt(s.cancelled_at),
        s.created_at.to_string(),
        s.updated_at.to_string(),
    ])
}

/// The validation error of a `format` that is neither `ndjson` nor `csv` (for callers that parse
/// it themselves, like the CLI).
pub fn unknown_format() -> AppError {
    AppError::validation(vec![FieldError::new("format", "invalid_format")])
}
