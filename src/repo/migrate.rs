//! A small embedded migrator: the SQL files are compiled into the binary, applied in order
//! inside one transaction, and recorded with a checksum so an edited migration is caught.

use serde::Serialize;
use sqlx::Row;

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

macro_rules! migrations {
    ($dir:literal: $($version:literal => $name:literal),* $(,)?) => {
        &[$(Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../migrations/", $dir, "/", $name, ".sql")),
        }),*]
    };
}

const POSTGRES: &[Migration] = migrations!("postgres":
    1 => "0001_foundation",
    2 => "0002_profiles",
    3 => "0003_mail_outbox",
    4 => "0004_sessions",
    5 => "0005_email_templates",
    6 => "0006_audiences",
    7 => "0007_subscriber_counts",
    8 => "0008_find_indexes",
    9 => "0009_payment_events",
    10 => "0010_trust",
);
const SQLITE: &[Migration] = migrations!("sqlite":
    1 => "0001_foundation",
    2 => "0002_profiles",
    3 => "0003_mail_outbox",
    4 => "0004_sessions",
    5 => "0005_email_templates",
    6 => "0006_audiences",
    7 => "0007_subscriber_counts",
    8 => "0008_find_indexes",
    9 => "0009_payment_events",
    10 => "0010_trust",
);

#[derive(Debug, Serialize)]
pub struct MigrationReport {
    pub backend: &'static str,
    pub applied: Vec<String>,
    pub current_version: i64,
}

const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)";

fn checksum(sql: &str) -> String {
    crate::crypto::b64(&crate::crypto::sha256(sql.as_bytes()))
}

fn pending<'a>(list: &'a [Migration], applied: &[(i64, String)]) -> anyhow::Result<Vec<&'a Migration>> {
    for (version, sum) in applied {
        match list.iter().find(|m| m.version == *version) {
            Some(m) if checksum(m.sql) != *sum => {
                anyhow::bail!("migration {} ({}) was changed after it was applied", m.version, m.name)
            }
            Some(_) => {}
            None => {
                anyhow::bail!("the database has migration {version}, which this binary does not know: is it older?")
            }
        }
    }
    Ok(list.iter().filter(|m| !applied.iter().any(|(v, _)| *v == m.version)).collect())
}

macro_rules! run_in_tx {
    ($tx:ident, $backend:literal, $list:expr) => {{
        let rows = sqlx::query("SELECT version, checksum FROM schema_migrations ORDER BY version")
            .fetch_all(&mut *$tx)
            .await?;
        let applied: Vec<(i64, String)> =
            rows.iter().map(|r| Ok((r.try_get("version")?, r.try_get("checksum")?))).collect::<sqlx::Result<_>>()?;
        let todo = pending($list, &applied)?;
        let mut report = MigrationReport {
            backend: $backend,
            applied: vec![],
            current_version: applied.last().map(|a| a.0).unwrap_or(0),
        };
        for m in todo {
            sqlx::raw_sql(m.sql)
                .execute(&mut *$tx)
                .await
                .map_err(|e| anyhow::anyhow!("migration {} failed: {e}", m.name))?;
            sqlx::query("INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)")
                .bind(m.version)
                .bind(m.name)
                .bind(checksum(m.sql))
                .bind(crate::now())
                .execute(&mut *$tx)
                .await?;
            report.applied.push(m.name.to_string());
            report.current_version = m.version;
        }
        $tx.commit().await?;
        Ok(report)
    }};
}

pub async fn run_postgres(pool: &sqlx::PgPool) -> anyhow::Result<MigrationReport> {
    let mut tx = pool.begin().await?;
    // Serialises concurrent starts of several instances; released at commit.
    sqlx::query("SELECT pg_advisory_xact_lock(7311240117)").execute(&mut *tx).await?;
    sqlx::query(CREATE_LEDGER).execute(&mut *tx).await?;
    run_in_tx!(tx, "postgres", POSTGRES)
}

pub async fn run_sqlite(pool: &sqlx::SqlitePool) -> anyhow::Result<MigrationReport> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(CREATE_LEDGER).execute(&mut *tx).await?;
    run_in_tx!(tx, "sqlite", SQLITE)
}
