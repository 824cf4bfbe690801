//! Profile sessions, magic codes, store rate limits and the janitor's sweeps. The §4 rules that
//! combine them (identity resolution, code checks, proof) are in `services::sessions`.

use std::sync::LazyLock;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use serde_json::Value;
use uuid::Uuid;

use super::profiles::{CODES_SHOWN, ValueColumns, profile};
use super::{
    Arg, Backend, CodeSummary, LiveSession, NewCode, NewOutboxMail, ProfileDetails, ProfileSessionRow, RepoResult, Row,
    SessionSummary, Sql, Tx,
};
use crate::domain::Status;
use crate::domain::taxonomy::TaxonomyValue;

pub(super) fn session(r: &Row) -> sqlx::Result<ProfileSessionRow> {
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

/// The newest code of an address that can still be tried.
#[derive(Debug, Clone)]
pub struct LiveCode {
    pub id: Uuid,
    pub code_hash: Vec<u8>,
}

/// The last `$codes` codes of the address of `p` (its `store_id` and `email_key`), newest first, as
/// one JSON array (see [`profile_columns_postgres`] for the SQLite differences).
macro_rules! codes_postgres {
    ($codes:literal) => {
        concat!(
            "(SELECT COALESCE(json_agg(json_build_array(c.id, c.created_at, c.expires_at, c.used_at IS NOT NULL,
                 c.attempts) ORDER BY c.created_at DESC, c.id DESC), '[]')
           FROM (SELECT id, created_at, expires_at, used_at, attempts FROM magic_codes
                 WHERE store_id = p.store_id AND email_key = p.email_key
                 ORDER BY created_at DESC, id DESC LIMIT ",
            $codes,
            ") c)"
        )
    };
}

macro_rules! codes_sqlite {
    ($codes:literal) => {
        concat!(
            "(SELECT json_group_array(json_array(lower(hex(c.id)), c.created_at, c.expires_at, c.used_at IS NOT NULL,
                 c.attempts) ORDER BY c.created_at DESC, c.id DESC)
           FROM (SELECT id, created_at, expires_at, used_at, attempts FROM magic_codes
                 WHERE store_id = p.store_id AND email_key = p.email_key
                 ORDER BY created_at DESC, id DESC LIMIT ",
            $codes,
            ") c)"
        )
    };
}

/// The full profile `p` as getMe and the admin API answer it, in one statement: its values, promo
/// usage, live sessions (`$now`) and last codes (`$codes`) as four JSON arrays. The SQLite
/// variant writes UUID blobs as hex and REALs through `quote()`, because `json_array` prints them
/// with 15 digits and would not give back the stored value.
macro_rules! profile_columns_postgres {
    ($now:literal, $codes:literal) => {
        concat!(
            "p.store_id, p.id, p.email, p.verified, p.status, p.created_at, p.updated_at,
        (SELECT COALESCE(json_agg(json_build_array(v.taxonomy_id, v.field_key, v.value_pos, v.field_pos, v.field_type,
                 v.text_value, v.num_value, v.bool_value, v.lat, v.lon, v.label)), '[]')
           FROM profile_taxonomy_values v WHERE v.store_id = p.store_id AND v.profile_id = p.id) AS taxonomy_values,
        (SELECT COALESCE(json_agg(json_build_array(u.promo_code_id, u.uses) ORDER BY u.promo_code_id), '[]')
           FROM profile_promo_usage u WHERE u.store_id = p.store_id AND u.profile_id = p.id) AS promo_usage,
        (SELECT COALESCE(json_agg(json_build_array(o.id, o.created_at, o.last_used_at, o.refresh_expires_at,
                 o.verified, o.user_agent) ORDER BY o.id), '[]')
           FROM profile_sessions o WHERE o.store_id = p.store_id AND o.profile_id = p.id
           AND o.revoked_at IS NULL AND o.refresh_expires_at > ", $now, ") AS sessions, ",
            codes_postgres!($codes),
            " AS codes"
        )
    };
}

macro_rules! profile_columns_sqlite {
    ($now:literal, $codes:literal) => {
        concat!(
            "p.store_id, p.id, p.email, p.verified, p.status, p.created_at, p.updated_at,
        (SELECT json_group_array(json_array(lower(hex(v.taxonomy_id)), v.field_key, v.value_pos, v.field_pos,
                 v.field_type, v.text_value, nullif(quote(v.num_value), 'NULL'), v.bool_value,
                 nullif(quote(v.lat), 'NULL'), nullif(quote(v.lon), 'NULL'), v.label))
           FROM profile_taxonomy_values v WHERE v.store_id = p.store_id AND v.profile_id = p.id) AS taxonomy_values,
        (SELECT json_group_array(json_array(u.promo_code_id, u.uses) ORDER BY u.promo_code_id)
           FROM profile_promo_usage u WHERE u.store_id = p.store_id AND u.profile_id = p.id) AS promo_usage,
        (SELECT json_group_array(json_array(lower(hex(o.id)), o.created_at, o.last_used_at, o.refresh_expires_at,
                 o.verified, o.user_agent) ORDER BY o.id)
           FROM profile_sessions o WHERE o.store_id = p.store_id AND o.profile_id = p.id
           AND o.revoked_at IS NULL AND o.refresh_expires_at > ",
            $now,
            ") AS sessions, ",
            codes_sqlite!($codes),
            " AS codes"
        )
    };
}

/// getMe as one statement: the WHERE clause is the liveness check (a revoked or expired session
/// yields no row), then whether the session holds the profile and the full profile. Public so
/// that examples/bench_baseline.rs can time the statement alone. Parameters: store, session,
/// profile, now, codes shown.
pub const ME_POSTGRES: &str = concat!(
    "SELECT ",
    session_holds!("s"),
    " AS session_holds, p.version, ",
    profile_columns_postgres!("$4", "$5"),
    " FROM profile_sessions s JOIN profiles p ON p.store_id = s.store_id AND p.id = s.profile_id
    WHERE s.store_id = $1 AND s.id = $2 AND s.profile_id = $3 AND s.revoked_at IS NULL AND s.refresh_expires_at > $4"
);

const ME_SQLITE: &str = concat!(
    "SELECT ",
    session_holds!("s"),
    " AS session_holds, ",
    profile_columns_sqlite!("$4", "$5"),
    " FROM profile_sessions s JOIN profiles p ON p.store_id = s.store_id AND p.id = s.profile_id
    WHERE s.store_id = $1 AND s.id = $2 AND s.profile_id = $3 AND s.revoked_at IS NULL AND s.refresh_expires_at > $4"
);

/// Profiles in full by id (the admin API, find, and the `data.object` of profile events): `$1`
/// store, `$2` now, `$3` codes shown, then the ids. One id has its own text: with `= ANY($4)`
/// Postgres would plan every execution anew (its generic plan expects ten rows, the custom one
/// one, so it never settles on the generic one), and planning this statement costs more than
/// running it.
const PROFILE_POSTGRES: &str = concat!(
    "SELECT TRUE AS session_holds, ",
    profile_columns_postgres!("$2", "$3"),
    " FROM profiles p WHERE p.store_id = $1 AND p.id = $4"
);

const PROFILES_POSTGRES: &str = concat!(
    "SELECT TRUE AS session_holds, ",
    profile_columns_postgres!("$2", "$3"),
    " FROM profiles p WHERE p.store_id = $1 AND p.id = ANY($4::uuid[]) ORDER BY p.id"
);

const PROFILES_SQLITE: &str = concat!(
    "SELECT 1 AS session_holds, ",
    profile_columns_sqlite!("$2", "$3"),
    " FROM profiles p WHERE p.store_id = $1 AND p.id IN "
);

/// The id of the profile holding an address (locked, on Postgres) and the address's last codes:
/// `$1` store, `$2` email key, `$3` codes shown.
pub(super) const ID_AND_CODES_POSTGRES: &str = concat!(
    "WITH found AS (SELECT id FROM profiles WHERE store_id = $1 AND email_key = $2 FOR UPDATE)
     SELECT (SELECT id FROM found) AS id, ",
    codes_postgres!("$3"),
    " AS codes FROM (SELECT $1::uuid AS store_id, $2::text AS email_key) p"
);

pub(super) const ID_AND_CODES_SQLITE: &str = concat!(
    "SELECT (SELECT id FROM profiles WHERE store_id = $1 AND email_key = $2) AS id, ",
    codes_sqlite!("$3"),
    " AS codes FROM (SELECT $1 AS store_id, $2 AS email_key) p"
);

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

fn me_details(r: &Row) -> sqlx::Result<(bool, ProfileDetails)> {
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
    let codes = code_summaries(r)?;
    let details = ProfileDetails { profile: profile(r)?, values, promo_usage: r.json("promo_usage")?, sessions, codes };
    Ok((r.boolean("session_holds")?, details))
}

/// The `codes` column: a JSON array of the address's last codes.
pub(super) fn code_summaries(r: &Row) -> sqlx::Result<Vec<CodeSummary>> {
    Ok(r.json::<Vec<MeCode>>("codes")?
        .into_iter()
        .map(|c| CodeSummary { id: c.0, created_at: c.1, expires_at: c.2, used: c.3, attempts: c.4 })
        .collect())
}

/// What getMe's statement answers for a live session.
pub struct MeRow {
    /// Whether the session holds the profile (§4); a claim does not.
    pub holds: bool,
    pub details: ProfileDetails,
    /// The profile's version when it was read (Postgres only).
    pub version: Option<i64>,
}

/// The two limits a code request counts against, in one window.
pub struct CodeLimits<'a> {
    /// `None` when the client's address is unknown.
    pub address_bucket: Option<&'a str>,
    pub address_max: i64,
    pub email_bucket: &'a str,
    pub email_max: i64,
    pub window_start: i64,
}

/// Postgres, a `WITH` part: counts one hit on a rate-limit bucket and returns its `hits`, with
/// `source` saying when it counts (`WHERE ...`, or `FROM <part> WHERE ...` to depend on another
/// part). The same upsert as [`Tx::hit_rate_limit`], inside the statement of the write it guards.
fn limit_hit(store: &str, bucket: &str, window: &str, source: &str) -> String {
    format!(
        "INSERT INTO rate_limits (store_id, bucket, window_start, hits)
         SELECT {store}, {bucket}, {window}, 1 {source}
         ON CONFLICT (store_id, bucket, window_start) DO UPDATE SET hits = rate_limits.hits + 1
         RETURNING hits"
    )
}

/// `initialize`'s one statement on Postgres (built once: the text is the same for every call):
/// the per-address limit, the guest profile, its `profile.created` event, and its session, which
/// holds the hash of its first refresh token. Public for examples/bench_baseline.rs, which times
/// it on a bare server.
pub static GUEST_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    // The event's insert is written only when events are recorded (see `RECORDING`).
    let event_if = if super::events::RECORDING { "" } else { " WHERE FALSE" };
    let dispatched = super::events::dispatched_at("profile.store_id", "$3::int8");
    let hit = limit_hit("$1::uuid", "$12::text", "$13::int8", "FROM store WHERE store.ok AND $12::text IS NOT NULL");
    format!(
        "WITH store AS (SELECT EXISTS (SELECT 1 FROM stores WHERE id = $1::uuid) AS ok),
         hit AS ({hit}),
         go AS (SELECT store.ok AND COALESCE((SELECT hits FROM hit), 0) <= $14::int8 AS ok FROM store),
         profile AS (
             INSERT INTO profiles (store_id, id, email, email_key, verified, status, search_text, created_at, updated_at)
             SELECT $1::uuid, $2::uuid, NULL, NULL, FALSE, $8::text, '', $3::int8, $3::int8 FROM go WHERE go.ok
             RETURNING store_id, id),
         event AS (
             INSERT INTO events (store_id, id, type, subject_id, data, created_at, dispatched_at)
             SELECT store_id, $9, $10, id, $11::json, $3, {dispatched} FROM profile{event_if}),
         session AS (
             INSERT INTO profile_sessions (store_id, id, profile_id, verified, user_agent, created_at, last_used_at,
                 refresh_expires_at, refresh_hash)
             SELECT store_id, $4, id, FALSE, $5, $3, $3, $6, $7 FROM profile)
         SELECT store.ok AS store_ok, go.ok FROM store, go"
    )
});

/// Rows a janitor sweep deletes per statement.
pub(super) const SWEEP_BATCH: u64 = 1000;

/// A hit on a rate-limit bucket that a write counts and obeys.
pub struct LimitHit<'a> {
    pub bucket: &'a str,
    pub window_start: i64,
    /// Hits allowed in the window.
    pub max: i64,
}

/// What [`Tx::request_code`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeRequest {
    Sent,
    /// The address was over its limit: nothing else was counted or written.
    AddressLimited,
    /// The email was over its limit: no code, no mail.
    EmailLimited,
}

impl Tx {
    /// A new guest profile, its session (holding its first refresh token's hash) and
    /// `profile.created` event; with `limit`, only if the hit it counts on its bucket is within
    /// the limit (`Ok(false)` when not: the hit still counts, nothing else is written). One
    /// statement on Postgres (run it on [`Database::atomic`](super::Database::atomic)); on SQLite
    /// commit it even when refused.
    /// An unknown store is `MissingReference`.
    pub async fn insert_guest(
        &mut self,
        session: &ProfileSessionRow,
        refresh_hash: &[u8; 32],
        created: &super::NewEvent,
        limit: Option<&LimitHit<'_>>,
    ) -> RepoResult<bool> {
        let s = session;
        if self.backend() == Backend::Postgres {
            let sql = Sql::new(GUEST_POSTGRES.as_str())
                .bind(s.store_id)
                .bind(s.profile_id)
                .bind(s.created_at)
                .bind(s.id)
                .bind(&s.user_agent)
                .bind(s.refresh_expires_at)
                .bind(&refresh_hash[..])
                .bind(Status::Active.as_str())
                .bind(created.id)
                .bind(created.kind.as_str())
                .bind(super::events::data_text(created))
                .bind(limit.map(|l| l.bucket))
                .bind(limit.map_or(0, |l| l.window_start))
                .bind(limit.map_or(0, |l| l.max));
            let row = self.fetch_one(sql).await?;
            if !row.boolean("store_ok")? {
                return Err(super::RepoError::MissingReference);
            }
            return Ok(row.boolean("ok")?);
        }
        if let Some(l) = limit
            && self.hit_rate_limit(s.store_id, l.bucket, l.window_start).await? > l.max
        {
            return Ok(false);
        }
        let sql = Sql::new(
            "INSERT INTO profiles (store_id, id, email, email_key, verified, status, search_text, created_at, updated_at)
             VALUES ($1, $2, NULL, NULL, FALSE, $3, '', $4, $4)",
        )
        .bind(s.store_id)
        .bind(s.profile_id)
        .bind(Status::Active.as_str())
        .bind(s.created_at);
        self.execute(sql).await?;
        self.insert_profile_session(s, false, refresh_hash, None).await?;
        self.insert_event(created).await?;
        Ok(true)
    }

    /// A session of an existing profile, holding its first refresh token's hash. `attached_email`:
    /// this session gave the profile its email (§4: it holds the profile). `event`: one to record with
    /// it (of this store; on Postgres part of the session's statement).
    pub async fn insert_profile_session(
        &mut self,
        s: &ProfileSessionRow,
        attached_email: bool,
        refresh_hash: &[u8; 32],
        event: Option<&super::NewEvent>,
    ) -> RepoResult<()> {
        let event = event.filter(|_| super::events::RECORDING);
        let sql = match self.backend() {
            Backend::Postgres => {
                // The profile is locked as a foreign key's check would lock it (there is none on
                // Postgres: migrations/postgres/0020_session_profile_check.sql): a profile deleted
                // meanwhile (merge, erasure) leaves nothing written. A new session changes what
                // getMe shows, and session inserts fire no trigger (0016_profile_versions.sql), so
                // this statement moves the version, as the triggers do: not for a profile this
                // transaction wrote already (its version is new anyway).
                static TEXT: LazyLock<String> = LazyLock::new(|| {
                    let dispatched = super::events::dispatched_at("$1::uuid", "$6::int8");
                    format!(
                        "WITH profile AS (SELECT id FROM profiles WHERE store_id = $1 AND id = $3 FOR KEY SHARE),
                         moved AS (UPDATE profiles SET version = version + 1
                             WHERE store_id = $1 AND id = $3 AND xmin <> pg_current_xact_id()::xid
                             AND EXISTS (SELECT 1 FROM profile)),
                         event AS (INSERT INTO events (store_id, id, type, subject_id, data, created_at, dispatched_at)
                             SELECT $1, $10::uuid, $11::text, $3, $12::json, $13::int8, {dispatched}
                             FROM profile WHERE $10::uuid IS NOT NULL)
                         INSERT INTO profile_sessions (store_id, id, profile_id, verified, user_agent, created_at,
                             last_used_at, refresh_expires_at, attached_email, refresh_hash)
                         SELECT $1, $2, $3, $4, $5, $6, $6, $7, $8, $9 FROM profile"
                    )
                });
                Sql::new(TEXT.as_str())
            }
            Backend::Sqlite => Sql::new(
                "INSERT INTO profile_sessions (store_id, id, profile_id, verified, user_agent, created_at, last_used_at,
                     refresh_expires_at, attached_email, refresh_hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9)",
            ),
        };
        let sql = sql
            .bind(s.store_id)
            .bind(s.id)
            .bind(s.profile_id)
            .bind(s.verified)
            .bind(&s.user_agent)
            .bind(s.created_at)
            .bind(s.refresh_expires_at)
            .bind(attached_email)
            .bind(&refresh_hash[..]);
        let sql = match self.backend() {
            Backend::Postgres => sql
                .bind(event.map(|e| e.id))
                .bind(event.map(|e| e.kind.as_str()))
                .bind(event.map_or(Arg::Text(None), super::events::data_text))
                .bind(event.map(|e| e.created_at)),
            Backend::Sqlite => sql,
        };
        if self.execute(sql).await? == 0 {
            // Postgres: the profile is gone (SQLite's foreign key says so itself).
            return Err(super::RepoError::MissingReference);
        }
        if let Some(e) = event
            && self.backend() == Backend::Sqlite
        {
            self.insert_event(e).await?;
        }
        Ok(())
    }

    pub async fn profile_session(&mut self, store_id: Uuid, id: Uuid) -> RepoResult<Option<ProfileSessionRow>> {
        let sql = Sql::new(
            "SELECT store_id, id, profile_id, verified, user_agent, created_at, last_used_at, refresh_expires_at
             FROM profile_sessions WHERE store_id = $1 AND id = $2",
        )
        .bind(store_id)
        .bind(id);
        Ok(self.fetch_optional(sql).await?.map(|r| session(&r)).transpose()?)
    }

    /// The session if it is live (not revoked, not expired) and belongs to the profile.
    pub async fn live_profile_session(
        &mut self,
        store_id: Uuid,
        session_id: Uuid,
        profile_id: Uuid,
        now: i64,
    ) -> RepoResult<Option<LiveSession>> {
        let sql = Sql::new(concat!(
            "SELECT s.verified, ",
            session_holds!("s"),
            " AS holds
             FROM profile_sessions s JOIN profiles p ON p.store_id = s.store_id AND p.id = s.profile_id
             WHERE s.store_id = $1 AND s.id = $2 AND s.profile_id = $3 AND s.revoked_at IS NULL
             AND s.refresh_expires_at > $4"
        ))
        .bind(store_id)
        .bind(session_id)
        .bind(profile_id)
        .bind(now);
        let Some(r) = self.fetch_optional(sql).await? else { return Ok(None) };
        Ok(Some(LiveSession { verified: r.boolean("verified")?, holds: r.boolean("holds")? }))
    }

    /// `getMe` in one round trip: whether the session holds the profile and the full profile, or
    /// `None` when the session is not live (revoked, expired, unknown, of another profile or store).
    pub async fn profile_me(
        &mut self,
        store_id: Uuid,
        session_id: Uuid,
        profile_id: Uuid,
        now: i64,
    ) -> RepoResult<Option<MeRow>> {
        let text = match self.backend() {
            Backend::Postgres => ME_POSTGRES,
            Backend::Sqlite => ME_SQLITE,
        };
        let sql = Sql::new(text).bind(store_id).bind(session_id).bind(profile_id).bind(now).bind(CODES_SHOWN as i64);
        let Some(r) = self.fetch_optional(sql).await? else { return Ok(None) };
        let (holds, details) = me_details(&r)?;
        let version = match self.backend() {
            Backend::Postgres => Some(r.int("version")?),
            Backend::Sqlite => None,
        };
        Ok(Some(MeRow { holds, details, version }))
    }

    /// The profile's version (Postgres: migrations/postgres/0016_profile_versions.sql), `None` for
    /// a profile the store does not have: the one-row check before a remembered getMe is served.
    pub async fn profile_version(&mut self, store_id: Uuid, profile_id: Uuid) -> RepoResult<Option<i64>> {
        let sql =
            Sql::new("SELECT version FROM profiles WHERE store_id = $1 AND id = $2").bind(store_id).bind(profile_id);
        Ok(self.fetch_optional(sql).await?.map(|r| r.int("version")).transpose()?)
    }

    /// A profile in full in one round trip (the four detail lists as JSON aggregates).
    pub async fn profile(&mut self, store_id: Uuid, id: Uuid) -> RepoResult<Option<ProfileDetails>> {
        Ok(self.profiles(store_id, &[id]).await?.pop())
    }

    /// Profiles in full, in id order (unknown ids are left out): one statement per 500 ids.
    pub async fn profiles(&mut self, store_id: Uuid, ids: &[Uuid]) -> RepoResult<Vec<ProfileDetails>> {
        let mut out = Vec::with_capacity(ids.len());
        let now = crate::now();
        for chunk in ids.chunks(500) {
            let sql = match self.backend() {
                Backend::Postgres if chunk.len() == 1 => {
                    Sql::new(PROFILE_POSTGRES).bind(store_id).bind(now).bind(CODES_SHOWN as i64).bind(chunk[0])
                }
                Backend::Postgres => {
                    Sql::new(PROFILES_POSTGRES).bind(store_id).bind(now).bind(CODES_SHOWN as i64).bind(chunk.to_vec())
                }
                Backend::Sqlite => {
                    let mut sql = Sql::new(PROFILES_SQLITE).bind(store_id).bind(now).bind(CODES_SHOWN as i64);
                    sql.push_list(chunk.iter().copied()).push(" ORDER BY p.id");
                    // One id (the common case) is one text, worth keeping prepared; lists vary.
                    if chunk.len() == 1 { sql } else { sql.unprepared() }
                }
            };
            for r in self.fetch_all(sql).await? {
                out.push(me_details(&r)?.1);
            }
        }
        Ok(out)
    }

    pub async fn profile_sessions(
        &mut self,
        store_id: Uuid,
        profile_id: Uuid,
        now: i64,
    ) -> RepoResult<Vec<SessionSummary>> {
        let sql = Sql::new(
            "SELECT id, created_at, last_used_at, refresh_expires_at, verified, user_agent FROM profile_sessions
             WHERE store_id = $1 AND profile_id = $2 AND revoked_at IS NULL AND refresh_expires_at > $3 ORDER BY id",
        )
        .bind(store_id)
        .bind(profile_id)
        .bind(now);
        let rows = self.fetch_all(sql).await?;
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
    }

    /// False when the profile has no such live session.
    pub async fn revoke_profile_session(
        &mut self,
        store_id: Uuid,
        profile_id: Uuid,
        session_id: Uuid,
        now: i64,
    ) -> RepoResult<bool> {
        let sql = Sql::new(
            "UPDATE profile_sessions SET revoked_at = $4
             WHERE store_id = $1 AND profile_id = $2 AND id = $3 AND revoked_at IS NULL AND refresh_expires_at > $4",
        )
        .bind(store_id)
        .bind(profile_id)
        .bind(session_id)
        .bind(now);
        Ok(self.execute(sql).await? == 1)
    }

    pub async fn revoke_profile_sessions(&mut self, store_id: Uuid, profile_id: Uuid, now: i64) -> RepoResult<u64> {
        let sql = Sql::new(
            "UPDATE profile_sessions SET revoked_at = $3 WHERE store_id = $1 AND profile_id = $2 AND revoked_at IS NULL",
        )
        .bind(store_id)
        .bind(profile_id)
        .bind(now);
        self.execute(sql).await
    }

    /// Voids the address's codes not yet used (a new code replaces them).
    pub async fn void_codes(&mut self, store_id: Uuid, email_key: &str, now: i64) -> RepoResult<()> {
        let sql = Sql::new(
            "UPDATE magic_codes SET voided_at = $3
             WHERE store_id = $1 AND email_key = $2 AND used_at IS NULL AND voided_at IS NULL",
        )
        .bind(store_id)
        .bind(email_key)
        .bind(now);
        self.execute(sql).await?;
        Ok(())
    }

    /// A code request: counts a hit on the address bucket (when there is one), then, if the
    /// address is within its limit, on the email bucket; if both are within their limits, voids
    /// the address's live codes and inserts the new code and its mail. Run it on
    /// [`Database::atomic`](super::Database::atomic) and commit it whatever the outcome: a refused
    /// request still counts. One statement on Postgres; SQLite's write transaction holds the
    /// rest. Either way no code without its mail, no mail without its code.
    pub async fn request_code(
        &mut self,
        limits: &CodeLimits<'_>,
        code: &NewCode,
        mail: &NewOutboxMail,
    ) -> RepoResult<CodeRequest> {
        if self.backend() == Backend::Sqlite {
            // The address first: a client over its limit never spends the victim's per-email quota.
            if let Some(bucket) = limits.address_bucket
                && self.hit_rate_limit(code.store_id, bucket, limits.window_start).await? > limits.address_max
            {
                return Ok(CodeRequest::AddressLimited);
            }
            if self.hit_rate_limit(code.store_id, limits.email_bucket, limits.window_start).await? > limits.email_max {
                return Ok(CodeRequest::EmailLimited);
            }
            self.void_codes(code.store_id, &code.email_key, code.created_at).await?;
            self.insert_code(code).await?;
            self.insert_mail(mail).await?;
            return Ok(CodeRequest::Sent);
        }
        static REQUEST: LazyLock<String> = LazyLock::new(|| {
            let address_hit = limit_hit("$1::uuid", "$2::text", "$3::int8", "WHERE $2::text IS NOT NULL");
            let email_hit = limit_hit("$1::uuid", "$5::text", "$3::int8", "FROM address WHERE address.ok");
            format!(
                "WITH address_hit AS ({address_hit}),
             address AS (SELECT COALESCE((SELECT hits FROM address_hit), 0) <= $4::int8 AS ok),
             email_hit AS ({email_hit}),
             go AS (SELECT address.ok AND COALESCE((SELECT hits FROM email_hit), $6::int8 + 1) <= $6::int8 AS ok
                    FROM address),
             voided AS (
                 UPDATE magic_codes SET voided_at = $9::int8
                 WHERE store_id = $1::uuid AND email_key = $7::text AND used_at IS NULL AND voided_at IS NULL
                   AND (SELECT ok FROM go)),
             code AS (
                 INSERT INTO magic_codes (store_id, id, email_key, code_hash, attempts, created_at, expires_at)
                 SELECT $1::uuid, $8::uuid, $7::text, $10::bytea, 0, $9::int8, $11::int8 FROM go WHERE go.ok),
             mail AS (
                 INSERT INTO mail_outbox (store_id, id, to_key, message, attempts, next_attempt_at, created_at,
                                          kind, subject)
                 SELECT $1::uuid, $12::uuid, $13::text, $14::jsonb, 0, $9::int8, $9::int8, $15::text, $16::text
                 FROM go WHERE go.ok)
             SELECT address.ok AS address_ok, go.ok AS sent FROM address, go"
            )
        });
        let sql = Sql::new(REQUEST.as_str())
            .bind(code.store_id)
            .bind(limits.address_bucket)
            .bind(limits.window_start)
            .bind(limits.address_max)
            .bind(limits.email_bucket)
            .bind(limits.email_max)
            .bind(&code.email_key)
            .bind(code.id)
            .bind(code.created_at)
            .bind(&code.code_hash[..])
            .bind(code.expires_at)
            .bind(mail.id)
            .bind(&mail.to_key)
            .bind(Arg::json(&mail.message))
            .bind(mail.kind.as_str())
            .bind(&mail.subject);
        let r = self.fetch_one(sql).await?;
        Ok(match (r.boolean("address_ok")?, r.boolean("sent")?) {
            (false, _) => CodeRequest::AddressLimited,
            (true, false) => CodeRequest::EmailLimited,
            (true, true) => CodeRequest::Sent,
        })
    }

    pub async fn insert_code(&mut self, c: &NewCode) -> RepoResult<()> {
        let sql = Sql::new(
            "INSERT INTO magic_codes (store_id, id, email_key, code_hash, attempts, created_at, expires_at)
             VALUES ($1, $2, $3, $4, 0, $5, $6)",
        )
        .bind(c.store_id)
        .bind(c.id)
        .bind(&c.email_key)
        .bind(&c.code_hash[..])
        .bind(c.created_at)
        .bind(c.expires_at);
        self.execute(sql).await?;
        Ok(())
    }

    /// The address's newest code that is unused, unexpired and not out of attempts, locked.
    pub async fn live_code(
        &mut self,
        store_id: Uuid,
        email_key: &str,
        now: i64,
        max_attempts: i64,
    ) -> RepoResult<Option<LiveCode>> {
        let sql = Sql::new(format!(
            "SELECT id, code_hash FROM magic_codes WHERE store_id = $1 AND email_key = $2
             AND used_at IS NULL AND voided_at IS NULL AND expires_at > $3 AND attempts < $4
             ORDER BY created_at DESC, id DESC LIMIT 1{}",
            self.for_update()
        ))
        .bind(store_id)
        .bind(email_key)
        .bind(now)
        .bind(max_attempts);
        let Some(r) = self.fetch_optional(sql).await? else { return Ok(None) };
        Ok(Some(LiveCode { id: r.uuid("id")?, code_hash: r.bytes("code_hash")? }))
    }

    pub async fn count_code_attempt(&mut self, store_id: Uuid, id: Uuid) -> RepoResult<()> {
        let sql = Sql::new("UPDATE magic_codes SET attempts = attempts + 1 WHERE store_id = $1 AND id = $2")
            .bind(store_id)
            .bind(id);
        self.execute(sql).await?;
        Ok(())
    }

    pub async fn use_code(&mut self, store_id: Uuid, id: Uuid, now: i64) -> RepoResult<()> {
        let sql = Sql::new("UPDATE magic_codes SET used_at = $3 WHERE store_id = $1 AND id = $2")
            .bind(store_id)
            .bind(id)
            .bind(now);
        self.execute(sql).await?;
        Ok(())
    }

    pub async fn delete_codes(&mut self, store_id: Uuid, email_key: &str) -> RepoResult<()> {
        let sql =
            Sql::new("DELETE FROM magic_codes WHERE store_id = $1 AND email_key = $2").bind(store_id).bind(email_key);
        self.execute(sql).await?;
        Ok(())
    }

    /// Counts a hit in the store's fixed window starting at `window_start`; returns the hits so
    /// far. An unknown store is `MissingReference`.
    pub async fn hit_rate_limit(&mut self, store_id: Uuid, bucket: &str, window_start: i64) -> RepoResult<i64> {
        // The store is checked here, not by a foreign key (migration 0019 says why).
        let sql = Sql::new(
            "INSERT INTO rate_limits (store_id, bucket, window_start, hits)
             SELECT $1, $2, $3, 1 WHERE EXISTS (SELECT 1 FROM stores WHERE id = $1)
             ON CONFLICT (store_id, bucket, window_start) DO UPDATE SET hits = rate_limits.hits + 1
             RETURNING hits",
        )
        .bind(store_id)
        .bind(bucket)
        .bind(window_start);
        match self.fetch_optional(sql).await? {
            Some(row) => Ok(row.int("hits")?),
            None => Err(super::RepoError::MissingReference),
        }
    }

    /// Deletes up to `batch` guests without email created before `cutoff` and unused since.
    /// Deletes up to `batch` guests idle since before `cutoff`; their `(store_id, id)`.
    pub async fn delete_idle_guests(&mut self, cutoff: i64, batch: i64) -> RepoResult<Vec<(Uuid, Uuid)>> {
        let sql = Sql::new(
            "DELETE FROM profiles WHERE (store_id, id) IN (
                SELECT g.store_id, g.id FROM profiles g WHERE g.email_key IS NULL AND g.created_at < $1
                AND NOT EXISTS (SELECT 1 FROM profile_sessions s WHERE s.store_id = g.store_id
                                AND s.profile_id = g.id AND s.last_used_at >= $1)
                LIMIT $2)
             RETURNING store_id, id",
        )
        .bind(cutoff)
        .bind(batch);
        let rows = self.fetch_all(sql).await?;
        let gone: Vec<(Uuid, Uuid)> =
            rows.iter().map(|r| Ok((r.uuid("store_id")?, r.uuid("id")?))).collect::<sqlx::Result<_>>()?;
        if self.backend() == Backend::Postgres && !gone.is_empty() {
            // No foreign key takes their sessions on Postgres (0020_session_profile_check.sql). A
            // statement of its own, to see a session committed while a guest's row was locked.
            let sql = Sql::new(
                "DELETE FROM profile_sessions s USING UNNEST($1::uuid[], $2::uuid[]) AS g(store_id, id)
                 WHERE s.store_id = g.store_id AND s.profile_id = g.id",
            )
            .bind(gone.iter().map(|g| g.0).collect::<Vec<_>>())
            .bind(gone.iter().map(|g| g.1).collect::<Vec<_>>());
            self.execute(sql).await?;
        }
        Ok(gone)
    }

    /// Sessions past their refresh expiry, or revoked a day ago (kept that long for reuse detection).
    pub async fn delete_ended_sessions(&mut self, now: i64) -> RepoResult<u64> {
        let due = "refresh_expires_at < $1 OR (revoked_at IS NOT NULL AND revoked_at < $1 - 86400)";
        self.delete_in_batches("profile_sessions", "store_id, id", due, now).await
    }

    pub async fn delete_old_codes(&mut self, now: i64) -> RepoResult<u64> {
        self.delete_in_batches("magic_codes", "store_id, id", "expires_at < $1 - 86400", now).await
    }

    /// Windows older than two days (the longest limit counts per day).
    pub async fn delete_old_rate_limits(&mut self, now: i64) -> RepoResult<u64> {
        let stores =
            self.delete_in_batches("rate_limits", "store_id, bucket, window_start", "window_start < $1 - 172800", now);
        let stores = stores.await?;
        let accounts =
            self.delete_in_batches("account_rate_limits", "bucket, window_start", "window_start < $1 - 86400", now);
        Ok(stores + accounts.await?)
    }

    /// Deletes the rows of `table` matching `condition` (on `$1` = `at`), [`SWEEP_BATCH`] rows a
    /// statement, each committing on its own (on [`Database::auto`](super::Database::auto)): a
    /// backlog never becomes one long transaction holding its locks. `key`: the primary key.
    pub async fn delete_in_batches(&mut self, table: &str, key: &str, condition: &str, at: i64) -> RepoResult<u64> {
        let text = format!(
            "DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE {condition} LIMIT {SWEEP_BATCH})"
        );
        self.delete_until_short(|| Sql::new(text.clone()).bind(at)).await
    }

    /// Runs the delete `batch` makes (of at most [`SWEEP_BATCH`] rows) until one deletes fewer;
    /// the rows deleted.
    pub(super) async fn delete_until_short(&mut self, batch: impl Fn() -> Sql) -> RepoResult<u64> {
        let mut total = 0;
        loop {
            let gone = self.execute(batch()).await?;
            total += gone;
            if gone < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }
}
