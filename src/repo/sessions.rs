use async_trait::async_trait;
use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use serde_json::Value;
use uuid::Uuid;

use super::profiles::{CODES_SHOWN, ValueColumns, merge_in_tx, profile, refresh_search_text};
use super::row::RowExt;
use super::{
    BeginWrite, CodeSummary, LiveSession, NewCode, NewOutboxMail, OpenOutcome, OpenSession, ProfileDetails,
    ProfileSessionRow, RefreshRotation, RepoError, RepoResult, RotateOutcome, SessionRepo, SessionSummary, SqlRepo,
    SweepReport, insert_outbox_mail, on_db,
};
use crate::domain::taxonomy::TaxonomyValue;

/// Rows deleted per janitor statement, so a large backlog never becomes one huge transaction.
const SWEEP_BATCH: i64 = 1000;

pub(super) fn session(r: &impl RowExt) -> sqlx::Result<ProfileSessionRow> {
    Ok(ProfileSessionRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        profile_id: r.uuid("profile_id")?,
        verified: r.boolean("verified")?,
        user_agent: r.opt_text("user_agent")?,
        created_at: r.int("created_at")?,
        last_used_at: r.int("last_used_at")?,
        refresh_expires_at: r.int("refresh_expires_at")?,
    })
}

/// `getMe` as one statement: the WHERE clause is the liveness check (a revoked or expired session
/// yields no row), and each collection of `details()` comes back as one JSON array of tuples.
/// Keep the two dialects and `details()` in step. Public so that examples/bench_baseline.rs can
/// time the statement alone. Parameters: store, session, profile, now, codes shown.
pub const ME_POSTGRES: &str = "SELECT (s.verified OR s.attached_email OR p.email_key IS NULL) AS session_holds,
        p.store_id, p.id, p.email, p.verified, p.status, p.created_at, p.updated_at,
        (SELECT COALESCE(json_agg(json_build_array(v.taxonomy_id, v.field_key, v.value_pos, v.field_pos, v.field_type,
                 v.text_value, v.num_value, v.bool_value, v.lat, v.lon, v.label)), '[]')
           FROM profile_taxonomy_values v WHERE v.store_id = p.store_id AND v.profile_id = p.id) AS taxonomy_values,
        (SELECT COALESCE(json_agg(json_build_array(u.promo_code_id, u.uses) ORDER BY u.promo_code_id), '[]')
           FROM profile_promo_usage u WHERE u.store_id = p.store_id AND u.profile_id = p.id) AS promo_usage,
        (SELECT COALESCE(json_agg(json_build_array(o.id, o.created_at, o.last_used_at, o.refresh_expires_at,
                 o.verified, o.user_agent) ORDER BY o.id), '[]')
           FROM profile_sessions o WHERE o.store_id = p.store_id AND o.profile_id = p.id
           AND o.revoked_at IS NULL AND o.refresh_expires_at > $4) AS sessions,
        (SELECT COALESCE(json_agg(json_build_array(c.id, c.created_at, c.expires_at, c.used_at IS NOT NULL,
                 c.attempts) ORDER BY c.created_at DESC, c.id DESC), '[]')
           FROM (SELECT id, created_at, expires_at, used_at, attempts FROM magic_codes
                 WHERE store_id = p.store_id AND email_key = p.email_key
                 ORDER BY created_at DESC, id DESC LIMIT $5) c) AS codes
    FROM profile_sessions s JOIN profiles p ON p.store_id = s.store_id AND p.id = s.profile_id
    WHERE s.store_id = $1 AND s.id = $2 AND s.profile_id = $3 AND s.revoked_at IS NULL AND s.refresh_expires_at > $4";

/// [`ME_POSTGRES`] in SQLite's dialect: UUID blobs as hex, and REALs through `quote()`, because
/// `json_array` prints them with 15 digits and would not give back the stored value.
const ME_SQLITE: &str = "SELECT (s.verified OR s.attached_email OR p.email_key IS NULL) AS session_holds,
        p.store_id, p.id, p.email, p.verified, p.status, p.created_at, p.updated_at,
        (SELECT json_group_array(json_array(lower(hex(v.taxonomy_id)), v.field_key, v.value_pos, v.field_pos,
                 v.field_type, v.text_value, nullif(quote(v.num_value), 'NULL'), v.bool_value,
                 nullif(quote(v.lat), 'NULL'), nullif(quote(v.lon), 'NULL'), v.label))
           FROM profile_taxonomy_values v WHERE v.store_id = p.store_id AND v.profile_id = p.id) AS taxonomy_values,
        (SELECT json_group_array(json_array(u.promo_code_id, u.uses) ORDER BY u.promo_code_id)
           FROM profile_promo_usage u WHERE u.store_id = p.store_id AND u.profile_id = p.id) AS promo_usage,
        (SELECT json_group_array(json_array(lower(hex(o.id)), o.created_at, o.last_used_at, o.refresh_expires_at,
                 o.verified, o.user_agent) ORDER BY o.id)
           FROM profile_sessions o WHERE o.store_id = p.store_id AND o.profile_id = p.id
           AND o.revoked_at IS NULL AND o.refresh_expires_at > $4) AS sessions,
        (SELECT json_group_array(json_array(lower(hex(c.id)), c.created_at, c.expires_at, c.used_at IS NOT NULL,
                 c.attempts) ORDER BY c.created_at DESC, c.id DESC)
           FROM (SELECT id, created_at, expires_at, used_at, attempts FROM magic_codes
                 WHERE store_id = p.store_id AND email_key = p.email_key
                 ORDER BY created_at DESC, id DESC LIMIT $5) c) AS codes
    FROM profile_sessions s JOIN profiles p ON p.store_id = s.store_id AND p.id = s.profile_id
    WHERE s.store_id = $1 AND s.id = $2 AND s.profile_id = $3 AND s.revoked_at IS NULL AND s.refresh_expires_at > $4";

/// A JSON boolean, or SQLite's 0 / 1.
fn flex_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Value::deserialize(d)? {
        Value::Bool(b) => Ok(b),
        Value::Number(n) => Ok(n.as_i64().ok_or_else(|| D::Error::custom("not a boolean"))? != 0),
        other => Err(D::Error::custom(format!("not a boolean: {other}"))),
    }
}

fn flex_opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => flex_bool(v).map(Some).map_err(D::Error::custom),
    }
}

/// A JSON number, or the text of SQLite's `quote()`.
fn flex_opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_f64().map(Some).ok_or_else(|| D::Error::custom("not a number")),
        Value::String(s) => s.parse().map(Some).map_err(D::Error::custom),
        other => Err(D::Error::custom(format!("not a number: {other}"))),
    }
}

#[derive(Deserialize)]
struct MeValue(
    Uuid,
    String,
    i64,
    i64,
    String,
    Option<String>,
    #[serde(deserialize_with = "flex_opt_f64")] Option<f64>,
    #[serde(deserialize_with = "flex_opt_bool")] Option<bool>,
    #[serde(deserialize_with = "flex_opt_f64")] Option<f64>,
    #[serde(deserialize_with = "flex_opt_f64")] Option<f64>,
    Option<String>,
);

#[derive(Deserialize)]
struct MeSession(Uuid, i64, i64, i64, #[serde(deserialize_with = "flex_bool")] bool, Option<String>);

#[derive(Deserialize)]
struct MeCode(Uuid, i64, i64, #[serde(deserialize_with = "flex_bool")] bool, i64);

fn me_details(r: &impl RowExt) -> sqlx::Result<(bool, ProfileDetails)> {
    let values = r
        .json::<Vec<MeValue>>("taxonomy_values")?
        .into_iter()
        .map(|v| {
            let columns =
                ValueColumns { field_type: v.4, text: v.5, num: v.6, boolean: v.7, lat: v.8, lon: v.9, label: v.10 };
            Ok(TaxonomyValue {
                taxonomy_id: v.0,
                field_key: v.1,
                value_pos: v.2 as i32,
                field_pos: v.3 as i32,
                value: columns.into_value()?,
            })
        })
        .collect::<sqlx::Result<_>>()?;
    let sessions = r
        .json::<Vec<MeSession>>("sessions")?
        .into_iter()
        .map(|s| SessionSummary {
            id: s.0,
            created_at: s.1,
            last_used_at: s.2,
            refresh_expires_at: s.3,
            verified: s.4,
            user_agent: s.5,
        })
        .collect();
    let codes = r
        .json::<Vec<MeCode>>("codes")?
        .into_iter()
        .map(|c| CodeSummary { id: c.0, created_at: c.1, expires_at: c.2, used: c.3, attempts: c.4 })
        .collect();
    let details = ProfileDetails { profile: profile(r)?, values, promo_usage: r.json("promo_usage")?, sessions, codes };
    Ok((r.boolean("session_holds")?, details))
}

/// `initialize` on Postgres: the new guest, its session and its refresh token as one statement,
/// one round trip instead of five (BEGIN, three INSERTs, COMMIT); a statement is atomic by itself.
/// The same rows as the general path of `open_profile_session` writes for a guest.
async fn open_guest_postgres(p: &sqlx::PgPool, o: &OpenSession) -> RepoResult<OpenOutcome> {
    let inserted = sqlx::query(
        "WITH profile AS (
             INSERT INTO profiles (store_id, id, email, email_key, verified, status, search_text, created_at, updated_at)
             VALUES ($1, $2, NULL, NULL, FALSE, 'active', '', $3, $3) RETURNING store_id, id),
         session AS (
             INSERT INTO profile_sessions (store_id, id, profile_id, verified, user_agent, created_at, last_used_at,
                 refresh_expires_at)
             SELECT store_id, $4, id, FALSE, $5, $3, $3, $6 FROM profile RETURNING store_id, id)
         INSERT INTO profile_refresh_tokens (store_id, token_hash, session_id, created_at)
         SELECT store_id, $7, id, $3 FROM session",
    )
    .bind(o.store_id)
    .bind(o.new_profile_id)
    .bind(o.now)
    .bind(o.session_id)
    .bind(&o.user_agent)
    .bind(o.refresh_expires_at)
    .bind(&o.refresh_hash[..])
    .execute(p)
    .await;
    match inserted {
        Err(e) if is_fk_violation(&e) => Ok(OpenOutcome::NoStore),
        Err(e) => Err(RepoError::from_write(e)),
        Ok(_) => Ok(OpenOutcome::Opened(ProfileSessionRow {
            store_id: o.store_id,
            id: o.session_id,
            profile_id: o.new_profile_id,
            verified: false,
            user_agent: o.user_agent.clone(),
            created_at: o.now,
            last_used_at: o.now,
            refresh_expires_at: o.refresh_expires_at,
        })),
    }
}

fn is_fk_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_foreign_key_violation())
}

#[async_trait]
impl SessionRepo for SqlRepo {
    async fn open_profile_session(&self, o: &OpenSession) -> RepoResult<OpenOutcome> {
        if let (super::Db::Postgres(p), None, None, None) = (&self.db, &o.email, o.caller, &o.code) {
            return open_guest_postgres(p, o).await;
        }
        let email_key = o.email.as_ref().map(|e| e.key());
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let verified = o.code.is_some();
            if let (Some(check), Some(key)) = (&o.code, &email_key) {
                let sql = format!(
                    "SELECT id, code_hash, attempts FROM magic_codes WHERE store_id = $1 AND email_key = $2
                     AND used_at IS NULL AND voided_at IS NULL AND expires_at > $3 AND attempts < $4
                     ORDER BY created_at DESC, id DESC LIMIT 1{}",
                    p.for_update()
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(o.store_id)
                    .bind(key)
                    .bind(o.now)
                    .bind(check.max_attempts)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else { return Ok(OpenOutcome::WrongCode) };
                let code_id = row.uuid("id")?;
                let stored: Vec<u8> = sqlx::Row::try_get(&row, "code_hash")?;
                if !crate::crypto::constant_time_eq(&stored, &check.code_hash) {
                    sqlx::query("UPDATE magic_codes SET attempts = attempts + 1 WHERE store_id = $1 AND id = $2")
                        .bind(o.store_id)
                        .bind(code_id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    return Ok(OpenOutcome::WrongCode);
                }
                sqlx::query("UPDATE magic_codes SET used_at = $3 WHERE store_id = $1 AND id = $2")
                    .bind(o.store_id)
                    .bind(code_id)
                    .bind(o.now)
                    .execute(&mut *tx)
                    .await?;
            }

            let caller_is_guest = match o.caller {
                None => false,
                Some(caller) => {
                    let key: Option<Option<String>> =
                        sqlx::query_scalar("SELECT email_key FROM profiles WHERE store_id = $1 AND id = $2")
                            .bind(o.store_id)
                            .bind(caller)
                            .fetch_optional(&mut *tx)
                            .await?;
                    matches!(key, Some(None))
                }
            };
            let existing: Option<Uuid> = match &email_key {
                None => None,
                Some(key) => {
                    sqlx::query_scalar("SELECT id FROM profiles WHERE store_id = $1 AND email_key = $2")
                        .bind(o.store_id)
                        .bind(key)
                        .fetch_optional(&mut *tx)
                        .await?
                }
            };
            // The session that gives a profile its email holds it (§4 "Proof and claims").
            let mut attached_email = false;
            let profile_id = match (existing, o.caller) {
                (Some(found), Some(caller)) if caller_is_guest && caller != found => {
                    // The guest's cart, subscriptions and orders carry over into the known profile.
                    merge_in_tx!(tx, p, o.store_id, found, caller, o.now);
                    found
                }
                (Some(found), _) => found,
                (None, Some(caller)) if caller_is_guest => {
                    sqlx::query("UPDATE profiles SET email = $3, email_key = $4, updated_at = $5 WHERE store_id = $1 AND id = $2")
                        .bind(o.store_id)
                        .bind(caller)
                        .bind(o.email.as_ref().map(|e| e.as_str()))
                        .bind(&email_key)
                        .bind(o.now)
                        .execute(&mut *tx)
                        .await
                        .map_err(RepoError::from_write)?;
                    refresh_search_text!(tx, o.store_id, &[caller]);
                    attached_email = true;
                    caller
                }
                (None, _) => {
                    let inserted = sqlx::query(
                        "INSERT INTO profiles (store_id, id, email, email_key, verified, status, search_text, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, FALSE, 'active', $5, $6, $6)",
                    )
                    .bind(o.store_id)
                    .bind(o.new_profile_id)
                    .bind(o.email.as_ref().map(|e| e.as_str()))
                    .bind(&email_key)
                    .bind(email_key.clone().unwrap_or_default())
                    .bind(o.now)
                    .execute(&mut *tx)
                    .await;
                    match inserted {
                        Err(e) if is_fk_violation(&e) => return Ok(OpenOutcome::NoStore),
                        Err(e) => return Err(RepoError::from_write(e)),
                        Ok(_) => {
                            attached_email = email_key.is_some();
                            o.new_profile_id
                        }
                    }
                }
            };
            if verified {
                sqlx::query("UPDATE profiles SET verified = TRUE, updated_at = $3 WHERE store_id = $1 AND id = $2 AND NOT verified")
                    .bind(o.store_id)
                    .bind(profile_id)
                    .bind(o.now)
                    .execute(&mut *tx)
                    .await?;
            }
            let row = ProfileSessionRow {
                store_id: o.store_id,
                id: o.session_id,
                profile_id,
                verified,
                user_agent: o.user_agent.clone(),
                created_at: o.now,
                last_used_at: o.now,
                refresh_expires_at: o.refresh_expires_at,
            };
            sqlx::query(
                "INSERT INTO profile_sessions (store_id, id, profile_id, verified, user_agent, created_at, last_used_at,
                     refresh_expires_at, attached_email)
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8)",
            )
            .bind(row.store_id)
            .bind(row.id)
            .bind(row.profile_id)
            .bind(row.verified)
            .bind(&row.user_agent)
            .bind(row.created_at)
            .bind(row.refresh_expires_at)
            .bind(attached_email)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO profile_refresh_tokens (store_id, token_hash, session_id, created_at) VALUES ($1, $2, $3, $4)")
                .bind(row.store_id)
                .bind(&o.refresh_hash[..])
                .bind(row.id)
                .bind(o.now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(OpenOutcome::Opened(row))
        })
    }

    async fn rotate_profile_refresh(
        &self,
        store_id: Uuid,
        rot: &RefreshRotation,
    ) -> RepoResult<RotateOutcome<ProfileSessionRow>> {
        self.rotate_refresh(Some(store_id), rot).await
    }

    async fn live_profile_session(
        &self,
        store_id: Uuid,
        session_id: Uuid,
        profile_id: Uuid,
    ) -> RepoResult<Option<LiveSession>> {
        on_db!(self, p => {
            let row = sqlx::query(
                "SELECT s.verified, (s.verified OR s.attached_email OR p.email_key IS NULL) AS holds
                 FROM profile_sessions s JOIN profiles p ON p.store_id = s.store_id AND p.id = s.profile_id
                 WHERE s.store_id = $1 AND s.id = $2 AND s.profile_id = $3 AND s.revoked_at IS NULL
                 AND s.refresh_expires_at > $4",
            )
            .bind(store_id)
            .bind(session_id)
            .bind(profile_id)
            .bind(crate::now())
            .fetch_optional(p)
            .await?;
            Ok(row.map(|r| Ok::<_, sqlx::Error>(LiveSession { verified: r.boolean("verified")?, holds: r.boolean("holds")? })).transpose()?)
        })
    }

    async fn profile_me(
        &self,
        store_id: Uuid,
        session_id: Uuid,
        profile_id: Uuid,
        now: i64,
    ) -> RepoResult<Option<(bool, ProfileDetails)>> {
        let sql = match self.db {
            super::Db::Postgres(_) => ME_POSTGRES,
            super::Db::Sqlite(_) => ME_SQLITE,
        };
        on_db!(self, p => {
            let row = sqlx::query(sql)
                .bind(store_id)
                .bind(session_id)
                .bind(profile_id)
                .bind(now)
                .bind(CODES_SHOWN as i64)
                .fetch_optional(p)
                .await?;
            Ok(row.map(|r| me_details(&r)).transpose()?)
        })
    }

    async fn profile_sessions(&self, store_id: Uuid, profile_id: Uuid) -> RepoResult<Vec<SessionSummary>> {
        on_db!(self, p => {
            let rows = sqlx::query(
                "SELECT id, created_at, last_used_at, refresh_expires_at, verified, user_agent FROM profile_sessions
                 WHERE store_id = $1 AND profile_id = $2 AND revoked_at IS NULL AND refresh_expires_at > $3 ORDER BY id",
            )
            .bind(store_id)
            .bind(profile_id)
            .bind(crate::now())
            .fetch_all(p)
            .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    Ok(SessionSummary {
                        id: r.uuid("id")?,
                        created_at: r.int("created_at")?,
                        last_used_at: r.int("last_used_at")?,
                        refresh_expires_at: r.int("refresh_expires_at")?,
                        verified: r.boolean("verified")?,
                        user_agent: r.opt_text("user_agent")?,
                    })
                })
                .collect::<sqlx::Result<_>>()?)
        })
    }

    async fn revoke_profile_session(
        &self,
        store_id: Uuid,
        profile_id: Uuid,
        session_id: Uuid,
        now: i64,
    ) -> RepoResult<bool> {
        on_db!(self, p => {
            let n = sqlx::query(
                "UPDATE profile_sessions SET revoked_at = $4
                 WHERE store_id = $1 AND profile_id = $2 AND id = $3 AND revoked_at IS NULL AND refresh_expires_at > $4",
            )
            .bind(store_id)
            .bind(profile_id)
            .bind(session_id)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected();
            Ok(n == 1)
        })
    }

    async fn revoke_profile_sessions(&self, store_id: Uuid, profile_id: Uuid, now: i64) -> RepoResult<u64> {
        on_db!(self, p => {
            let n = sqlx::query(
                "UPDATE profile_sessions SET revoked_at = $3 WHERE store_id = $1 AND profile_id = $2 AND revoked_at IS NULL",
            )
            .bind(store_id)
            .bind(profile_id)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected();
            Ok(n)
        })
    }

    async fn store_code(&self, c: &NewCode, mail: &NewOutboxMail) -> RepoResult<()> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "UPDATE magic_codes SET voided_at = $3
                 WHERE store_id = $1 AND email_key = $2 AND used_at IS NULL AND voided_at IS NULL",
            )
            .bind(c.store_id)
            .bind(&c.email_key)
            .bind(c.created_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO magic_codes (store_id, id, email_key, code_hash, attempts, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, 0, $5, $6)",
            )
            .bind(c.store_id)
            .bind(c.id)
            .bind(&c.email_key)
            .bind(&c.code_hash[..])
            .bind(c.created_at)
            .bind(c.expires_at)
            .execute(&mut *tx)
            .await?;
            insert_outbox_mail!(&mut *tx, mail).await.map_err(RepoError::from_write)?;
            tx.commit().await?;
        });
        Ok(())
    }

    async fn hit_rate_limit(&self, store_id: Uuid, bucket: &str, window_start: i64) -> RepoResult<Option<i64>> {
        on_db!(self, p => {
            let hits = sqlx::query_scalar(
                "INSERT INTO rate_limits (store_id, bucket, window_start, hits) VALUES ($1, $2, $3, 1)
                 ON CONFLICT (store_id, bucket, window_start) DO UPDATE SET hits = rate_limits.hits + 1
                 RETURNING hits",
            )
            .bind(store_id)
            .bind(bucket)
            .bind(window_start)
            .fetch_one(p)
            .await;
            match hits {
                Err(e) if is_fk_violation(&e) => Ok(None),
                other => Ok(Some(other?)),
            }
        })
    }

    async fn hit_account_rate_limit(&self, bucket: &str, window_start: i64) -> RepoResult<()> {
        on_db!(self, p => {
            sqlx::query(
                "INSERT INTO account_rate_limits (bucket, window_start, hits) VALUES ($1, $2, 1)
                 ON CONFLICT (bucket, window_start) DO UPDATE SET hits = account_rate_limits.hits + 1",
            )
            .bind(bucket)
            .bind(window_start)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    async fn account_rate_limit(&self, bucket: &str, window_start: i64) -> RepoResult<i64> {
        on_db!(self, p => {
            let hits: Option<i64> =
                sqlx::query_scalar("SELECT hits FROM account_rate_limits WHERE bucket = $1 AND window_start = $2")
                    .bind(bucket)
                    .bind(window_start)
                    .fetch_optional(p)
                    .await?;
            Ok(hits.unwrap_or(0))
        })
    }

    async fn sweep(&self, now: i64, guest_cutoff: i64) -> RepoResult<SweepReport> {
        let mut report = SweepReport::default();
        on_db!(self, p => {
            loop {
                let n = sqlx::query(
                    "DELETE FROM profiles WHERE (store_id, id) IN (
                        SELECT g.store_id, g.id FROM profiles g WHERE g.email_key IS NULL AND g.created_at < $1
                        AND NOT EXISTS (SELECT 1 FROM profile_sessions s WHERE s.store_id = g.store_id
                                        AND s.profile_id = g.id AND s.last_used_at >= $1)
                        LIMIT $2)",
                )
                .bind(guest_cutoff)
                .bind(SWEEP_BATCH)
                .execute(p)
                .await?
                .rows_affected();
                report.guests += n;
                if n < SWEEP_BATCH as u64 {
                    break;
                }
            }
            // Sessions past their refresh expiry, or revoked a day ago (kept that long for reuse detection).
            report.sessions = sqlx::query(
                "DELETE FROM profile_sessions WHERE refresh_expires_at < $1 OR (revoked_at IS NOT NULL AND revoked_at < $1 - 86400)",
            )
            .bind(now)
            .execute(p)
            .await?
            .rows_affected();
            report.codes = sqlx::query("DELETE FROM magic_codes WHERE expires_at < $1 - 86400")
                .bind(now)
                .execute(p)
                .await?
                .rows_affected();
            report.rate_limits = sqlx::query("DELETE FROM rate_limits WHERE window_start < $1 - 172800")
                .bind(now)
                .execute(p)
                .await?
                .rows_affected();
            report.rate_limits += sqlx::query("DELETE FROM account_rate_limits WHERE window_start < $1 - 86400")
                .bind(now)
                .execute(p)
                .await?
                .rows_affected();
        });
        Ok(report)
    }
}
