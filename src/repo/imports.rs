//! Import jobs and their row errors (issue 16); and finding many profiles by email at once.

use std::collections::HashMap;

use uuid::Uuid;

use super::{Arg, Backend, RepoResult, Row, Sql, Tx};

/// An import job as stored: counts so far, updated after every batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportJobRow {
    pub store_id: Uuid,
    pub id: Uuid,
    /// `running`, `completed` or `failed`.
    pub status: String,
    pub format: String,
    pub dry_run: bool,
    pub on_existing: String,
    pub bytes_total: i64,
    pub bytes_read: i64,
    pub rows_read: i64,
    pub created: i64,
    pub updated: i64,
    pub skipped: i64,
    pub failed: i64,
    pub subscribed: i64,
    pub error: Option<String>,
    pub created_at: i64,
    pub heartbeat_at: i64,
    pub finished_at: Option<i64>,
}

/// One row the import refused.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportErrorRow {
    pub row: i64,
    pub column: Option<String>,
    pub error: String,
}

const JOB_COLUMNS: &str = "store_id, id, status, format, dry_run, on_existing, bytes_total, bytes_read, rows_read, \
     created, updated, skipped, failed, subscribed, error, created_at, heartbeat_at, finished_at";

fn job(r: &Row) -> sqlx::Result<ImportJobRow> {
    Ok(ImportJobRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        status: r.text("status")?,
        format: r.text("format")?,
        dry_run: r.boolean("dry_run")?,
        on_existing: r.text("on_existing")?,
        bytes_total: r.int("bytes_total")?,
        bytes_read: r.int("bytes_read")?,
        rows_read: r.int("rows_read")?,
        created: r.int("created")?,
        updated: r.int("updated")?,
        skipped: r.int("skipped")?,
        failed: r.int("failed")?,
        subscribed: r.int("subscribed")?,
        error: r.opt_text("error")?,
        created_at: r.int("created_at")?,
        heartbeat_at: r.int("heartbeat_at")?,
        finished_at: r.opt_int("finished_at")?,
    })
}

impl Tx {
    /// The store's profiles with these email keys (locked inside a transaction): key → id.
    pub async fn profile_ids_by_email_keys(
        &mut self,
        store_id: Uuid,
        keys: &[String],
    ) -> RepoResult<HashMap<String, Uuid>> {
        let mut out = HashMap::new();
        if self.backend() == Backend::Postgres {
            // One array parameter: one plan, however many keys (an IN list is planned per call).
            let mut sql =
                Sql::new("SELECT email_key, id FROM profiles WHERE store_id = $1 AND email_key = ANY($2::text[])");
            sql.push(" ORDER BY id").push(self.for_update());
            let sql = sql.bind(store_id).bind(keys.iter().map(|k| Some(k.clone())).collect::<Vec<_>>());
            for r in self.fetch_all(sql).await? {
                out.insert(r.text("email_key")?, r.uuid("id")?);
            }
            return Ok(out);
        }
        for chunk in keys.chunks(500) {
            let mut sql = Sql::new("SELECT email_key, id FROM profiles WHERE store_id = ");
            sql.push_bind(store_id).push(" AND email_key IN ").push_list(chunk.iter().cloned());
            sql.push(" ORDER BY id").push(self.for_update());
            for r in self.fetch_all(sql.unprepared()).await? {
                out.insert(r.text("email_key")?, r.uuid("id")?);
            }
        }
        Ok(out)
    }

    pub async fn insert_import(&mut self, j: &ImportJobRow) -> RepoResult<()> {
        let sql = Sql::new(format!(
            "INSERT INTO imports ({JOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
        ))
        .bind(j.store_id)
        .bind(j.id)
        .bind(j.status.as_str())
        .bind(j.format.as_str())
        .bind(j.dry_run)
        .bind(j.on_existing.as_str())
        .bind(j.bytes_total)
        .bind(j.bytes_read)
        .bind(j.rows_read)
        .bind(j.created)
        .bind(j.updated)
        .bind(j.skipped)
        .bind(j.failed)
        .bind(j.subscribed)
        .bind(j.error.clone())
        .bind(j.created_at)
        .bind(j.heartbeat_at)
        .bind(j.finished_at);
        self.execute(sql).await?;
        Ok(())
    }

    /// Writes the job's counts, status and heartbeat.
    pub async fn save_import(&mut self, j: &ImportJobRow) -> RepoResult<()> {
        let sql = Sql::new(
            "UPDATE imports SET status = $3, bytes_read = $4, rows_read = $5, created = $6, updated = $7, skipped = $8,
               failed = $9, subscribed = $10, error = $11, heartbeat_at = $12, finished_at = $13
             WHERE store_id = $1 AND id = $2",
        )
        .bind(j.store_id)
        .bind(j.id)
        .bind(j.status.as_str())
        .bind(j.bytes_read)
        .bind(j.rows_read)
        .bind(j.created)
        .bind(j.updated)
        .bind(j.skipped)
        .bind(j.failed)
        .bind(j.subscribed)
        .bind(j.error.clone())
        .bind(j.heartbeat_at)
        .bind(j.finished_at);
        self.execute(sql).await?;
        Ok(())
    }

    pub async fn import_job(&mut self, store_id: Uuid, id: Uuid) -> RepoResult<Option<ImportJobRow>> {
        let sql = Sql::new(format!("SELECT {JOB_COLUMNS} FROM imports WHERE store_id = $1 AND id = $2"))
            .bind(store_id)
            .bind(id);
        Ok(self.fetch_optional(sql).await?.map(|r| job(&r)).transpose()?)
    }

    pub async fn insert_import_errors(
        &mut self,
        store_id: Uuid,
        import_id: Uuid,
        errors: &[ImportErrorRow],
    ) -> RepoResult<()> {
        // A batch's errors in a few statements (a file of bad rows has a thousand a batch).
        for chunk in errors.chunks(200) {
            let mut sql =
                Sql::new("INSERT INTO import_errors (store_id, import_id, row_number, column_name, error) VALUES ");
            for (i, e) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push_list([
                    Arg::from(store_id),
                    Arg::from(import_id),
                    Arg::from(e.row),
                    Arg::from(e.column.clone()),
                    Arg::from(e.error.as_str()),
                ]);
            }
            sql.push(" ON CONFLICT DO NOTHING");
            self.execute(sql.unprepared()).await?;
        }
        Ok(())
    }

    /// The job's row errors in (row, error) order, after `after`.
    pub async fn import_errors(
        &mut self,
        store_id: Uuid,
        import_id: Uuid,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> RepoResult<Vec<ImportErrorRow>> {
        let mut sql = Sql::new("SELECT row_number, column_name, error FROM import_errors WHERE store_id = ");
        sql.push_bind(store_id).push(" AND import_id = ").push_bind(import_id);
        if let Some((row, error)) = after {
            sql.push(" AND (row_number > ").push_bind(row);
            sql.push(" OR (row_number = ").push_bind(row).push(" AND error > ").push_bind(error).push("))");
        }
        sql.push(" ORDER BY row_number, error LIMIT ").push_bind(i64::from(limit));
        self.fetch_all(sql)
            .await?
            .iter()
            .map(|r| {
                Ok(ImportErrorRow {
                    row: r.int("row_number")?,
                    column: r.opt_text("column_name")?,
                    error: r.text("error")?,
                })
            })
            .collect::<sqlx::Result<_>>()
            .map_err(Into::into)
    }
}
