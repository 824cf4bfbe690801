//! A small embedded migrator: the SQL files are compiled into the binary, applied in order
//! inside one transaction, and recorded with a checksum so an edited migration is caught.

use serde::Serialize;

use super::{Backend, Database, Sql, Tx};

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

// Each list is the migrations folder of its backend, in order; they are compiled into the binary.
const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_foundation",
        sql: include_str!("../../migrations/postgres/0001_foundation.sql"),
    },
    Migration { version: 2, name: "0002_profiles", sql: include_str!("../../migrations/postgres/0002_profiles.sql") },
    Migration {
        version: 3,
        name: "0003_mail_outbox",
        sql: include_str!("../../migrations/postgres/0003_mail_outbox.sql"),
    },
    Migration { version: 4, name: "0004_sessions", sql: include_str!("../../migrations/postgres/0004_sessions.sql") },
    Migration {
        version: 5,
        name: "0005_email_templates",
        sql: include_str!("../../migrations/postgres/0005_email_templates.sql"),
    },
    Migration { version: 6, name: "0006_audiences", sql: include_str!("../../migrations/postgres/0006_audiences.sql") },
    Migration {
        version: 7,
        name: "0007_subscriber_counts",
        sql: include_str!("../../migrations/postgres/0007_subscriber_counts.sql"),
    },
    Migration {
        version: 8,
        name: "0008_find_indexes",
        sql: include_str!("../../migrations/postgres/0008_find_indexes.sql"),
    },
    Migration {
        version: 9,
        name: "0009_payment_events",
        sql: include_str!("../../migrations/postgres/0009_payment_events.sql"),
    },
    Migration { version: 10, name: "0010_trust", sql: include_str!("../../migrations/postgres/0010_trust.sql") },
    Migration {
        version: 11,
        name: "0011_mail_visible",
        sql: include_str!("../../migrations/postgres/0011_mail_visible.sql"),
    },
    Migration {
        version: 12,
        name: "0012_events_webhooks",
        sql: include_str!("../../migrations/postgres/0012_events_webhooks.sql"),
    },
    Migration {
        version: 14,
        name: "0014_segments_consents",
        sql: include_str!("../../migrations/postgres/0014_segments_consents.sql"),
    },
    Migration { version: 15, name: "0015_imports", sql: include_str!("../../migrations/postgres/0015_imports.sql") },
    Migration {
        version: 16,
        name: "0016_profile_versions",
        sql: include_str!("../../migrations/postgres/0016_profile_versions.sql"),
    },
    Migration {
        version: 17,
        name: "0017_session_refresh_hash",
        sql: include_str!("../../migrations/postgres/0017_session_refresh_hash.sql"),
    },
    Migration {
        version: 18,
        name: "0018_lean_events",
        sql: include_str!("../../migrations/postgres/0018_lean_events.sql"),
    },
    Migration {
        version: 19,
        name: "0019_store_keys",
        sql: include_str!("../../migrations/postgres/0019_store_keys.sql"),
    },
    Migration {
        version: 20,
        name: "0020_session_profile_check",
        sql: include_str!("../../migrations/postgres/0020_session_profile_check.sql"),
    },
];
const SQLITE: &[Migration] = &[
    Migration { version: 1, name: "0001_foundation", sql: include_str!("../../migrations/sqlite/0001_foundation.sql") },
    Migration { version: 2, name: "0002_profiles", sql: include_str!("../../migrations/sqlite/0002_profiles.sql") },
    Migration {
        version: 3,
        name: "0003_mail_outbox",
        sql: include_str!("../../migrations/sqlite/0003_mail_outbox.sql"),
    },
    Migration { version: 4, name: "0004_sessions", sql: include_str!("../../migrations/sqlite/0004_sessions.sql") },
    Migration {
        version: 5,
        name: "0005_email_templates",
        sql: include_str!("../../migrations/sqlite/0005_email_templates.sql"),
    },
    Migration { version: 6, name: "0006_audiences", sql: include_str!("../../migrations/sqlite/0006_audiences.sql") },
    Migration {
        version: 7,
        name: "0007_subscriber_counts",
        sql: include_str!("../../migrations/sqlite/0007_subscriber_counts.sql"),
    },
    Migration {
        version: 8,
        name: "0008_find_indexes",
        sql: include_str!("../../migrations/sqlite/0008_find_indexes.sql"),
    },
    Migration {
        version: 9,
        name: "0009_payment_events",
        sql: include_str!("../../migrations/sqlite/0009_payment_events.sql"),
    },
    Migration { version: 10, name: "0010_trust", sql: include_str!("../../migrations/sqlite/0010_trust.sql") },
    Migration {
        version: 11,
        name: "0011_mail_visible",
        sql: include_str!("../../migrations/sqlite/0011_mail_visible.sql"),
    },
    Migration {
        version: 12,
        name: "0012_events_webhooks",
        sql: include_str!("../../migrations/sqlite/0012_events_webhooks.sql"),
    },
    Migration {
        version: 14,
        name: "0014_segments_consents",
        sql: include_str!("../../migrations/sqlite/0014_segments_consents.sql"),
    },
    Migration { version: 15, name: "0015_imports", sql: include_str!("../../migrations/sqlite/0015_imports.sql") },
    Migration {
        version: 17,
        name: "0017_session_refresh_hash",
        sql: include_str!("../../migrations/sqlite/0017_session_refresh_hash.sql"),
    },
    Migration {
        version: 18,
        name: "0018_lean_events",
        sql: include_str!("../../migrations/sqlite/0018_lean_events.sql"),
    },
];

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

async fn run(mut tx: Tx, list: &[Migration]) -> anyhow::Result<MigrationReport> {
    let backend = match tx.backend() {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    if tx.backend() == Backend::Postgres {
        // Serialises concurrent starts of several instances; released at commit.
        tx.execute(Sql::new("SELECT pg_advisory_xact_lock(7311240117)")).await?;
    }
    tx.execute(Sql::new(CREATE_LEDGER)).await?;
    let rows = tx.fetch_all(Sql::new("SELECT version, checksum FROM schema_migrations ORDER BY version")).await?;
    let applied: Vec<(i64, String)> =
        rows.iter().map(|r| Ok((r.int("version")?, r.text("checksum")?))).collect::<sqlx::Result<_>>()?;
    let todo = pending(list, &applied)?;
    let mut report =
        MigrationReport { backend, applied: vec![], current_version: applied.last().map(|a| a.0).unwrap_or(0) };
    for m in todo {
        tx.execute_script(m.sql).await.map_err(|e| anyhow::anyhow!("migration {} failed: {e}", m.name))?;
        let record =
            Sql::new("INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)")
                .bind(m.version)
                .bind(m.name)
                .bind(checksum(m.sql))
                .bind(crate::now());
        tx.execute(record).await?;
        report.applied.push(m.name.to_string());
        report.current_version = m.version;
    }
    tx.commit().await?;
    Ok(report)
}

impl Database {
    /// Applies pending migrations in one transaction; safe to run from several instances at once.
    pub async fn migrate(&self) -> anyhow::Result<MigrationReport> {
        let list = match self.backend() {
            Backend::Postgres => POSTGRES,
            Backend::Sqlite => SQLITE,
        };
        run(self.begin().await?, list).await
    }
}
