use async_trait::async_trait;
use sqlx::types::Json;
use uuid::Uuid;

use super::row::RowExt;
use super::sql::{Param, SqlBuilder, bind_params, like_escape};
use super::{
    BeginWrite, CodeSummary, Db, LinkOutcome, MergeOutcome, NewProfile, OrderRow, ProfileChange, ProfileDetails,
    ProfileRepo, ProfileRow, ProfileSearch, RepoError, RepoResult, SessionSummary, SortField, SortValue, SqlRepo,
    on_db,
};
use crate::domain::taxonomy::{Condition, NumOp, StoredValue, TaxonomyValue};

const PROFILE_COLUMNS: &str = "p.store_id, p.id, p.email, p.verified, p.status, p.created_at, p.updated_at";
const VALUE_COLUMNS: &str = "profile_id, taxonomy_id, field_key, value_pos, field_pos, field_type, text_value, num_value, bool_value, lat, lon, label";
/// Rows per multi-row INSERT, well under both backends' parameter limits.
const INSERT_CHUNK: usize = 500;
/// Codes listed per profile.
pub(crate) const CODES_SHOWN: usize = 10;

/// What `query` searches: the lower-cased email and text taxonomy values, one per line.
pub(crate) fn search_text<'a>(email_key: Option<&str>, texts: impl Iterator<Item = &'a str>) -> String {
    let mut out = email_key.unwrap_or_default().to_string();
    for t in texts {
        out.push('\n');
        out.push_str(&t.to_lowercase());
    }
    out
}

fn text_values(values: &[TaxonomyValue]) -> impl Iterator<Item = &str> {
    values.iter().filter_map(|v| match &v.value {
        StoredValue::Text(t) => Some(t.as_str()),
        _ => None,
    })
}

pub(crate) fn profile(r: &impl RowExt) -> sqlx::Result<ProfileRow> {
    Ok(ProfileRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        email: r.opt_text("email")?,
        verified: r.boolean("verified")?,
        status: r.text("status")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

/// The typed value of one `profile_taxonomy_values` row, from its nullable columns.
pub(crate) struct ValueColumns {
    pub field_type: String,
    pub text: Option<String>,
    pub num: Option<f64>,
    pub boolean: Option<bool>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub label: Option<String>,
}

impl ValueColumns {
    pub fn into_value(self) -> sqlx::Result<StoredValue> {
        let ty = self.field_type;
        let missing = || sqlx::Error::Decode(format!("taxonomy value of type {ty} has no value").into());
        Ok(match ty.as_str() {
            "text" => StoredValue::Text(self.text.ok_or_else(missing)?),
            "number" => StoredValue::Number(self.num.ok_or_else(missing)?),
            "boolean" => StoredValue::Boolean(self.boolean.ok_or_else(missing)?),
            _ => StoredValue::Geo {
                lat: self.lat.ok_or_else(missing)?,
                lon: self.lon.ok_or_else(missing)?,
                label: self.label,
            },
        })
    }
}

fn value(r: &impl RowExt) -> sqlx::Result<(Uuid, TaxonomyValue)> {
    let value = ValueColumns {
        field_type: r.text("field_type")?,
        text: r.opt_text("text_value")?,
        num: r.opt_float("num_value")?,
        boolean: r.opt_bool("bool_value")?,
        lat: r.opt_float("lat")?,
        lon: r.opt_float("lon")?,
        label: r.opt_text("label")?,
    }
    .into_value()?;
    Ok((
        r.uuid("profile_id")?,
        TaxonomyValue {
            taxonomy_id: r.uuid("taxonomy_id")?,
            field_key: r.text("field_key")?,
            field_pos: r.int("field_pos")? as i32,
            value_pos: r.int("value_pos")? as i32,
            value,
        },
    ))
}

fn order(r: &impl RowExt) -> sqlx::Result<OrderRow> {
    Ok(OrderRow {
        store_id: r.uuid("store_id")?,
        order_id: r.text("order_id")?,
        profile_id: r.uuid("profile_id")?,
        total: r.opt_int("total")?,
        currency: r.opt_text("currency")?,
        status: r.opt_text("status")?,
        placed_at: r.opt_int("placed_at")?,
        metadata: r.json("metadata")?,
        created_at: r.int("created_at")?,
    })
}

/// INSERT statements for values, each tagged with its store and profile, in chunks.
fn value_inserts<'a>(rows: impl IntoIterator<Item = (Uuid, Uuid, &'a TaxonomyValue)>) -> Vec<SqlBuilder> {
    let rows: Vec<_> = rows.into_iter().collect();
    rows.chunks(INSERT_CHUNK)
        .map(|chunk| {
            let mut b =
                SqlBuilder::new(&format!("INSERT INTO profile_taxonomy_values ({VALUE_COLUMNS}, store_id) VALUES "));
            for (i, (store_id, profile_id, v)) in chunk.iter().enumerate() {
                if i > 0 {
                    b.push(", ");
                }
                let (text, num, boolean, lat, lon, label) = match &v.value {
                    StoredValue::Text(t) => (Some(t.clone()), None, None, None, None, None),
                    StoredValue::Number(n) => (None, Some(*n), None, None, None, None),
                    StoredValue::Boolean(x) => (None, None, Some(*x), None, None, None),
                    StoredValue::Geo { lat, lon, label } => (None, None, None, Some(*lat), Some(*lon), label.clone()),
                };
                b.list([
                    Param::Uuid(*profile_id),
                    Param::Uuid(v.taxonomy_id),
                    Param::Text(v.field_key.clone()),
                    Param::Int(i64::from(v.value_pos)),
                    Param::Int(i64::from(v.field_pos)),
                    Param::Text(v.value.field_type().as_str().into()),
                    Param::OptText(text),
                    Param::OptFloat(num),
                    Param::OptBool(boolean),
                    Param::OptFloat(lat),
                    Param::OptFloat(lon),
                    Param::OptText(label),
                    Param::Uuid(*store_id),
                ]);
            }
            b
        })
        .collect()
}

fn profile_values(store_id: Uuid, profile_id: Uuid, values: &[TaxonomyValue]) -> Vec<SqlBuilder> {
    value_inserts(values.iter().map(|v| (store_id, profile_id, v)))
}

/// Recomputes `search_text` of the given profiles inside an open transaction `$tx`.
macro_rules! refresh_search_text {
    ($tx:ident, $store:expr, $ids:expr) => {
        for id in $ids {
            let email: Option<Option<String>> =
                sqlx::query_scalar("SELECT email_key FROM profiles WHERE store_id = $1 AND id = $2")
                    .bind($store)
                    .bind(*id)
                    .fetch_optional(&mut *$tx)
                    .await?;
            let Some(email) = email else { continue };
            let texts: Vec<String> = sqlx::query_scalar(
                "SELECT text_value FROM profile_taxonomy_values
                 WHERE store_id = $1 AND profile_id = $2 AND text_value IS NOT NULL
                 ORDER BY taxonomy_id, field_pos, value_pos",
            )
            .bind($store)
            .bind(*id)
            .fetch_all(&mut *$tx)
            .await?;
            let text = $crate::repo::profiles::search_text(email.as_deref(), texts.iter().map(String::as_str));
            sqlx::query("UPDATE profiles SET search_text = $3 WHERE store_id = $1 AND id = $2")
                .bind($store)
                .bind(*id)
                .bind(text)
                .execute(&mut *$tx)
                .await?;
        }
    };
}
pub(crate) use refresh_search_text;

/// §3.1 inside an open write transaction `$tx` of pool `$pool`; evaluates to `false` (and changes
/// nothing) when either profile is missing. Shared by the merge route and by connect / verify.
macro_rules! merge_in_tx {
    ($tx:ident, $pool:ident, $store:expr, $target:expr, $source:expr, $now:expr) => {
        'merge: {
            let (store_id, target, source, now): (Uuid, Uuid, Uuid, i64) = ($store, $target, $source, $now);
            let p = $pool;
    // Lock both rows in id order, so two merges over the same pair cannot deadlock.
    let lock = format!(
        "SELECT id, email, email_key, verified FROM profiles WHERE store_id = $1 AND id IN ($2, $3) ORDER BY id{}",
        p.for_update()
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(lock)).bind(store_id).bind(target).bind(source).fetch_all(&mut *$tx).await?;
    if rows.len() != 2 {
        break 'merge false;
    }
    let (t, s) = if rows[0].uuid("id")? == target { (&rows[0], &rows[1]) } else { (&rows[1], &rows[0]) };
    let verified = t.boolean("verified")? || s.boolean("verified")?;
    let t_email = t.opt_text("email")?;
    let s_email = s.opt_text("email")?;
    let s_key = s.opt_text("email_key")?;

    // Taxonomies: target wins per field; the source's other fields move over.
    sqlx::query(
        "DELETE FROM profile_taxonomy_values WHERE store_id = $1 AND profile_id = $3 AND EXISTS (
            SELECT 1 FROM profile_taxonomy_values t WHERE t.store_id = $1 AND t.profile_id = $2
            AND t.taxonomy_id = profile_taxonomy_values.taxonomy_id AND t.field_key = profile_taxonomy_values.field_key)",
    )
    .bind(store_id)
    .bind(target)
    .bind(source)
    .execute(&mut *$tx)
    .await?;
    sqlx::query("UPDATE profile_taxonomy_values SET profile_id = $2 WHERE store_id = $1 AND profile_id = $3")
        .bind(store_id)
        .bind(target)
        .bind(source)
        .execute(&mut *$tx)
        .await?;
    // Promo usage is summed.
    sqlx::query(
        "INSERT INTO profile_promo_usage (store_id, profile_id, promo_code_id, uses)
         SELECT store_id, $2, promo_code_id, uses FROM profile_promo_usage WHERE store_id = $1 AND profile_id = $3
         ON CONFLICT (store_id, profile_id, promo_code_id) DO UPDATE SET uses = profile_promo_usage.uses + excluded.uses",
    )
    .bind(store_id)
    .bind(target)
    .bind(source)
    .execute(&mut *$tx)
    .await?;
    // Subscriptions: where both have one for an audience the stronger survives (ties keep the
    // target's): active > cancellation_scheduled > pending > cancelled/expired.
    sqlx::query(
        "DELETE FROM subscriptions WHERE store_id = $1 AND profile_id = $2 AND EXISTS (
            SELECT 1 FROM subscriptions o WHERE o.store_id = $1 AND o.profile_id = $3
            AND o.audience_id = subscriptions.audience_id
            AND (CASE o.status WHEN 'active' THEN 4 WHEN 'cancellation_scheduled' THEN 3 WHEN 'pending' THEN 2 ELSE 1 END)
              > (CASE subscriptions.status WHEN 'active' THEN 4 WHEN 'cancellation_scheduled' THEN 3 WHEN 'pending' THEN 2 ELSE 1 END))",
    )
    .bind(store_id)
    .bind(target)
    .bind(source)
    .execute(&mut *$tx)
    .await?;
    sqlx::query(
        "DELETE FROM subscriptions WHERE store_id = $1 AND profile_id = $3 AND EXISTS (
            SELECT 1 FROM subscriptions t WHERE t.store_id = $1 AND t.profile_id = $2 AND t.audience_id = subscriptions.audience_id)",
    )
    .bind(store_id)
    .bind(target)
    .bind(source)
    .execute(&mut *$tx)
    .await?;
    sqlx::query("UPDATE subscriptions SET profile_id = $2 WHERE store_id = $1 AND profile_id = $3")
        .bind(store_id)
        .bind(target)
        .bind(source)
        .execute(&mut *$tx)
        .await?;
    sqlx::query("UPDATE profile_orders SET profile_id = $2 WHERE store_id = $1 AND profile_id = $3")
        .bind(store_id)
        .bind(target)
        .bind(source)
        .execute(&mut *$tx)
        .await?;
    // The source goes (its sessions, promo rows and remaining values with it); its email
    // passes to a target that has none, otherwise its magic codes go too.
    sqlx::query("DELETE FROM profiles WHERE store_id = $1 AND id = $2")
        .bind(store_id)
        .bind(source)
        .execute(&mut *$tx)
        .await?;
    let take_email = t_email.is_none() && s_email.is_some();
    if !take_email && let Some(key) = &s_key {
        sqlx::query("DELETE FROM magic_codes WHERE store_id = $1 AND email_key = $2")
            .bind(store_id)
            .bind(key)
            .execute(&mut *$tx)
            .await?;
    }
    if take_email {
        sqlx::query("UPDATE profiles SET email = $3, email_key = $4 WHERE store_id = $1 AND id = $2")
            .bind(store_id)
            .bind(target)
            .bind(&s_email)
            .bind(&s_key)
            .execute(&mut *$tx)
            .await?;
    }
    sqlx::query("UPDATE profiles SET verified = $3, updated_at = $4 WHERE store_id = $1 AND id = $2")
        .bind(store_id)
        .bind(target)
        .bind(verified)
        .bind(now)
        .execute(&mut *$tx)
        .await?;
            refresh_search_text!($tx, store_id, &[target]);
            true
        }
    };
}
pub(crate) use merge_in_tx;

fn condition_sql(b: &mut SqlBuilder, condition: &Condition) {
    match condition {
        Condition::TextIn(values) => {
            b.push(" AND v.text_value IN ").list(values.iter().map(|v| Param::Text(v.clone())));
        }
        Condition::TextAll(_) => unreachable!("expanded into one TextIn per value"),
        Condition::Number(op, a, z) => {
            let sym = match op {
                NumOp::Eq => "=",
                NumOp::Ne => "<>",
                NumOp::Gt => ">",
                NumOp::Gte => ">=",
                NumOp::Lt => "<",
                NumOp::Lte => "<=",
                NumOp::Between => {
                    b.push(" AND v.num_value BETWEEN ").bind(Param::Float(*a)).push(" AND ").bind(Param::Float(*z));
                    return;
                }
            };
            b.push(&format!(" AND v.num_value {sym} ")).bind(Param::Float(*a));
        }
        Condition::Boolean(x) => {
            b.push(" AND v.bool_value = ").bind(Param::OptBool(Some(*x)));
        }
        Condition::Within { lat, lon, radius_km } => {
            // Equirectangular distance in degrees, exact enough at city to country scale and plain
            // arithmetic on both backends; the bounding box lets the index narrow the scan first.
            let dlat = radius_km / 111.195;
            let k = lat.to_radians().cos().max(1e-6);
            let dlon = (dlat / k).min(360.0);
            b.push(" AND v.lat BETWEEN ").bind(Param::Float(lat - dlat)).push(" AND ").bind(Param::Float(lat + dlat));
            b.push(" AND v.lon BETWEEN ").bind(Param::Float(lon - dlon)).push(" AND ").bind(Param::Float(lon + dlon));
            b.push(" AND ((v.lat - ").bind(Param::Float(*lat)).push(") * (v.lat - ").bind(Param::Float(*lat));
            b.push(") + ((v.lon - ").bind(Param::Float(*lon)).push(") * ").bind(Param::Float(k));
            b.push(") * ((v.lon - ").bind(Param::Float(*lon)).push(") * ").bind(Param::Float(k));
            b.push(")) <= ").bind(Param::Float(dlat * dlat));
        }
    }
}

fn find_sql(s: &ProfileSearch, db: &Db) -> SqlBuilder {
    let sort = match s.sort {
        SortField::CreatedAt => "p.created_at",
        SortField::UpdatedAt => "p.updated_at",
        SortField::Email => "COALESCE(p.email_key, '')",
    };
    // SQLite has no index for LIKE '%x%'. Left alone it walks the sort index and reads every row
    // out of order (120 ms for a rare match at 100k profiles); read in primary-key order, which is
    // insertion order (UUIDv7 ids), and with the matches sorted, the search costs ~20 ms whatever
    // the pattern. The name is SQLite's for the PRIMARY KEY (store_id, id) of migration 0002.
    let from = match (db, &s.text) {
        (Db::Sqlite(_), Some(_)) => "profiles p INDEXED BY sqlite_autoindex_profiles_1",
        _ => "profiles p",
    };
    let mut b = SqlBuilder::new(&format!("SELECT {PROFILE_COLUMNS} FROM {from} WHERE p.store_id = "));
    b.bind(Param::Uuid(s.store_id));
    if let Some(status) = &s.status {
        b.push(" AND p.status = ").bind(Param::Text(status.clone()));
    }
    if let Some(text) = &s.text {
        b.push(" AND (p.search_text LIKE ").bind(Param::Text(format!("%{}%", like_escape(text)))).push(" ESCAPE '\\'");
        if let Some(id) = s.id {
            b.push(" OR p.id = ").bind(Param::Uuid(id));
        }
        b.push(")");
    }
    for f in &s.filters {
        let conditions = match &f.condition {
            Condition::TextAll(values) => values.iter().map(|v| Condition::TextIn(vec![v.clone()])).collect(),
            other => vec![other.clone()],
        };
        for c in conditions {
            b.push(" AND EXISTS (SELECT 1 FROM profile_taxonomy_values v WHERE v.store_id = p.store_id AND v.profile_id = p.id");
            b.push(" AND v.taxonomy_id = ").bind(Param::Uuid(f.taxonomy_id));
            b.push(" AND v.field_key = ").bind(Param::Text(f.field_key.clone()));
            condition_sql(&mut b, &c);
            b.push(")");
        }
    }
    let (cmp, dir) = if s.descending { ("<", "DESC") } else { (">", "ASC") };
    if let Some((key, id)) = &s.after {
        b.push(&format!(" AND ({sort}, p.id) {cmp} ("));
        b.bind(match key {
            SortValue::Int(v) => Param::Int(*v),
            SortValue::Text(v) => Param::Text(v.clone()),
        });
        b.push(", ").bind(Param::Uuid(*id)).push(")");
    }
    b.push(&format!(" ORDER BY {sort} {dir}, p.id {dir} LIMIT ")).bind(Param::Int(i64::from(s.limit)));
    b
}

impl SqlRepo {
    /// Loads values, promo usage, live sessions and recent codes of a page of profiles: four queries.
    async fn details(&self, rows: Vec<ProfileRow>) -> RepoResult<Vec<ProfileDetails>> {
        let Some(store_id) = rows.first().map(|r| r.store_id) else { return Ok(vec![]) };
        let ids = || rows.iter().map(|r| Param::Uuid(r.id));
        let now = crate::now();
        let mut values_q =
            SqlBuilder::new(&format!("SELECT {VALUE_COLUMNS} FROM profile_taxonomy_values WHERE store_id = "));
        values_q.bind(Param::Uuid(store_id)).push(" AND profile_id IN ").list(ids());
        let mut promo_q =
            SqlBuilder::new("SELECT profile_id, promo_code_id, uses FROM profile_promo_usage WHERE store_id = ");
        promo_q.bind(Param::Uuid(store_id)).push(" AND profile_id IN ").list(ids());
        promo_q.push(" ORDER BY promo_code_id");
        let mut sessions_q = SqlBuilder::new(
            "SELECT profile_id, id, created_at, last_used_at, refresh_expires_at, verified, user_agent FROM profile_sessions \
             WHERE store_id = ",
        );
        sessions_q.bind(Param::Uuid(store_id)).push(" AND revoked_at IS NULL AND refresh_expires_at > ");
        sessions_q.bind(Param::Int(now)).push(" AND profile_id IN ").list(ids()).push(" ORDER BY id");
        let emails: Vec<String> = rows.iter().filter_map(|r| r.email.as_ref().map(|e| e.to_lowercase())).collect();
        let mut codes_q = SqlBuilder::new(
            "SELECT email_key, id, created_at, expires_at, used_at, attempts FROM magic_codes WHERE store_id = ",
        );
        codes_q.bind(Param::Uuid(store_id)).push(" AND email_key IN ");
        codes_q.list(emails.iter().map(|e| Param::Text(e.clone()))).push(" ORDER BY created_at DESC, id DESC");

        let mut out: Vec<ProfileDetails> = rows
            .into_iter()
            .map(|profile| ProfileDetails {
                profile,
                values: vec![],
                promo_usage: vec![],
                sessions: vec![],
                codes: vec![],
            })
            .collect();
        let index: std::collections::HashMap<Uuid, usize> =
            out.iter().enumerate().map(|(i, d)| (d.profile.id, i)).collect();
        let by_email: std::collections::HashMap<String, usize> = out
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.profile.email.as_ref().map(|e| (e.to_lowercase(), i)))
            .collect();
        on_db!(self, p => {
            for r in bind_params!(sqlx::query(sqlx::AssertSqlSafe(values_q.sql)), &values_q.params).fetch_all(p).await? {
                let (pid, v) = value(&r)?;
                out[index[&pid]].values.push(v);
            }
            for r in bind_params!(sqlx::query(sqlx::AssertSqlSafe(promo_q.sql)), &promo_q.params).fetch_all(p).await? {
                out[index[&r.uuid("profile_id")?]].promo_usage.push((r.text("promo_code_id")?, r.int("uses")?));
            }
            for r in bind_params!(sqlx::query(sqlx::AssertSqlSafe(sessions_q.sql)), &sessions_q.params).fetch_all(p).await? {
                out[index[&r.uuid("profile_id")?]].sessions.push(SessionSummary {
                    id: r.uuid("id")?,
                    created_at: r.int("created_at")?,
                    last_used_at: r.int("last_used_at")?,
                    refresh_expires_at: r.int("refresh_expires_at")?,
                    verified: r.boolean("verified")?,
                    user_agent: r.opt_text("user_agent")?,
                });
            }
            if !emails.is_empty() {
                for r in bind_params!(sqlx::query(sqlx::AssertSqlSafe(codes_q.sql)), &codes_q.params).fetch_all(p).await? {
                    let Some(&i) = by_email.get(&r.text("email_key")?) else { continue };
                    if out[i].codes.len() < CODES_SHOWN {
                        out[i].codes.push(CodeSummary {
                            id: r.uuid("id")?,
                            created_at: r.int("created_at")?,
                            expires_at: r.int("expires_at")?,
                            used: r.opt_int("used_at")?.is_some(),
                            attempts: r.int("attempts")?,
                        });
                    }
                }
            }
        });
        Ok(out)
    }
}

#[async_trait]
impl ProfileRepo for SqlRepo {
    async fn create_profile(&self, n: &NewProfile) -> RepoResult<(ProfileDetails, bool)> {
        let email_key = n.email.as_ref().map(|e| e.key());
        let text = search_text(email_key.as_deref(), text_values(&n.values));
        let (id, created) = on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let inserted = sqlx::query(
                "INSERT INTO profiles (store_id, id, email, email_key, verified, status, search_text, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (store_id, email_key) DO NOTHING",
            )
            .bind(n.store_id)
            .bind(n.id)
            .bind(n.email.as_ref().map(|e| e.as_str()))
            .bind(email_key.as_deref())
            .bind(n.verified)
            .bind(&n.status)
            .bind(&text)
            .bind(n.created_at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if inserted {
                for b in profile_values(n.store_id, n.id, &n.values) {
                    bind_params!(sqlx::query(sqlx::AssertSqlSafe(b.sql)), &b.params).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                (n.id, true)
            } else {
                let existing: Uuid = sqlx::query_scalar("SELECT id FROM profiles WHERE store_id = $1 AND email_key = $2")
                    .bind(n.store_id)
                    .bind(email_key.as_deref())
                    .fetch_one(&mut *tx)
                    .await?;
                (existing, false)
            }
        });
        let details = self.profile(n.store_id, id).await?.ok_or(RepoError::Db(sqlx::Error::RowNotFound))?;
        Ok((details, created))
    }

    async fn bulk_insert_profiles(&self, profiles: &[NewProfile]) -> RepoResult<u64> {
        match &self.db {
            // One statement per table with every column as an array parameter: Postgres parses and
            // plans it once per batch (multi-row VALUES cost a new plan per 500 rows, and most of the time).
            Db::Postgres(p) => bulk_insert_postgres(p, profiles).await,
            // SQLite has no array parameters: multi-row VALUES, in chunks under its parameter limit.
            Db::Sqlite(p) => bulk_insert_sqlite(p, profiles).await,
        }
    }

    async fn profile(&self, store_id: Uuid, id: Uuid) -> RepoResult<Option<ProfileDetails>> {
        let sql = format!("SELECT {PROFILE_COLUMNS} FROM profiles p WHERE p.store_id = $1 AND p.id = $2");
        let row = on_db!(self, p => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(store_id).bind(id).fetch_optional(p).await?;
            row.map(|r| profile(&r)).transpose()?
        });
        match row {
            None => Ok(None),
            Some(row) => Ok(self.details(vec![row]).await?.pop()),
        }
    }

    async fn find_profiles(&self, search: &ProfileSearch) -> RepoResult<Vec<ProfileDetails>> {
        let b = find_sql(search, &self.db);
        let rows = on_db!(self, p => {
            // Not a cached prepared statement: Postgres then plans with the actual values. A generic
            // plan cannot see how selective a LIKE pattern is, and walked every profile of the
            // store in created_at order for a rare email (300 ms at 100k profiles, 1 ms planned).
            let rows = bind_params!(sqlx::query(sqlx::AssertSqlSafe(b.sql.clone())), &b.params)
                .persistent(false)
                .fetch_all(p)
                .await?;
            rows.iter().map(profile).collect::<sqlx::Result<Vec<_>>>()?
        });
        self.details(rows).await
    }

    async fn update_profile(&self, store_id: Uuid, id: Uuid, c: &ProfileChange) -> RepoResult<Option<ProfileDetails>> {
        let found = on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let lock = format!("SELECT email_key FROM profiles WHERE store_id = $1 AND id = $2{}", p.for_update());
            let current: Option<Option<String>> =
                sqlx::query_scalar(sqlx::AssertSqlSafe(lock)).bind(store_id).bind(id).fetch_optional(&mut *tx).await?;
            match current {
                None => false,
                Some(current_key) => {
                    if let Some(email) = &c.email {
                        let key = email.as_ref().map(|e| e.key());
                        if key != current_key {
                            sqlx::query(
                                "UPDATE profiles SET email = $3, email_key = $4, verified = FALSE WHERE store_id = $1 AND id = $2",
                            )
                            .bind(store_id)
                            .bind(id)
                            .bind(email.as_ref().map(|e| e.as_str()))
                            .bind(key)
                            .execute(&mut *tx)
                            .await
                            .map_err(RepoError::from_write)?;
                        } else if let Some(e) = email {
                            // Same address, maybe other letter case: keep the new spelling.
                            sqlx::query("UPDATE profiles SET email = $3 WHERE store_id = $1 AND id = $2")
                                .bind(store_id)
                                .bind(id)
                                .bind(e.as_str())
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    if let Some(values) = &c.values {
                        sqlx::query("DELETE FROM profile_taxonomy_values WHERE store_id = $1 AND profile_id = $2")
                            .bind(store_id)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                        for b in profile_values(store_id, id, values) {
                            bind_params!(sqlx::query(sqlx::AssertSqlSafe(b.sql)), &b.params).execute(&mut *tx).await?;
                        }
                    }
                    if let Some(status) = &c.status {
                        sqlx::query("UPDATE profiles SET status = $3 WHERE store_id = $1 AND id = $2")
                            .bind(store_id)
                            .bind(id)
                            .bind(status)
                            .execute(&mut *tx)
                            .await?;
                    }
                    sqlx::query("UPDATE profiles SET updated_at = $3 WHERE store_id = $1 AND id = $2")
                        .bind(store_id)
                        .bind(id)
                        .bind(c.now)
                        .execute(&mut *tx)
                        .await?;
                    refresh_search_text!(tx, store_id, &[id]);
                    tx.commit().await?;
                    true
                }
            }
        });
        if found { self.profile(store_id, id).await } else { Ok(None) }
    }

    async fn merge_profiles(&self, store_id: Uuid, target: Uuid, source: Uuid, now: i64) -> RepoResult<MergeOutcome> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            if !merge_in_tx!(tx, p, store_id, target, source, now) {
                return Ok(MergeOutcome::NotFound);
            }
            tx.commit().await?;
            Ok(MergeOutcome::Merged)
        })
    }

    async fn erase_profile(&self, store_id: Uuid, id: Uuid) -> RepoResult<bool> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let key: Option<Option<String>> = sqlx::query_scalar("SELECT email_key FROM profiles WHERE store_id = $1 AND id = $2")
                .bind(store_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(key) = key else { return Ok(false) };
            if let Some(key) = &key {
                sqlx::query("DELETE FROM magic_codes WHERE store_id = $1 AND email_key = $2")
                    .bind(store_id)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                // Mail still queued to the address holds it too.
                sqlx::query("DELETE FROM mail_outbox WHERE store_id = $1 AND to_key = $2")
                    .bind(store_id)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
            // Values, promo usage, order links, sessions and refresh tokens go by cascade.
            sqlx::query("DELETE FROM profiles WHERE store_id = $1 AND id = $2").bind(store_id).bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    async fn link_order(&self, o: &OrderRow) -> RepoResult<LinkOutcome> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let inserted = sqlx::query(
                "INSERT INTO profile_orders (store_id, order_id, profile_id, total, currency, status, placed_at, metadata, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (store_id, order_id) DO NOTHING",
            )
            .bind(o.store_id)
            .bind(&o.order_id)
            .bind(o.profile_id)
            .bind(o.total)
            .bind(&o.currency)
            .bind(&o.status)
            .bind(o.placed_at)
            .bind(Json(&o.metadata))
            .bind(o.created_at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if inserted {
                tx.commit().await?;
                return Ok(LinkOutcome::Linked(o.clone()));
            }
            let row = sqlx::query(
                "SELECT store_id, order_id, profile_id, total, currency, status, placed_at, metadata, created_at
                 FROM profile_orders WHERE store_id = $1 AND order_id = $2",
            )
            .bind(o.store_id)
            .bind(&o.order_id)
            .fetch_one(&mut *tx)
            .await?;
            let existing = order(&row)?;
            Ok(if existing.profile_id == o.profile_id { LinkOutcome::Existing(existing) } else { LinkOutcome::Elsewhere })
        })
    }

    async fn orders(
        &self,
        store_id: Uuid,
        profile_id: Uuid,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> RepoResult<Vec<OrderRow>> {
        let (after_at, after_id) = after.map(|(a, b)| (Some(a), Some(b))).unwrap_or((None, None));
        on_db!(self, p => {
            let rows = sqlx::query(
                "SELECT store_id, order_id, profile_id, total, currency, status, placed_at, metadata, created_at
                 FROM profile_orders WHERE store_id = $1 AND profile_id = $2
                 AND ($3 IS NULL OR (created_at, order_id) > ($3, $4))
                 ORDER BY created_at, order_id LIMIT $5",
            )
            .bind(store_id)
            .bind(profile_id)
            .bind(after_at)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(order).collect::<sqlx::Result<_>>()?)
        })
    }
}

async fn bulk_insert_postgres(p: &sqlx::PgPool, profiles: &[NewProfile]) -> RepoResult<u64> {
    let (mut store_ids, mut ids, mut emails, mut keys) = (vec![], vec![], vec![], vec![]);
    let (mut verified, mut statuses, mut texts, mut created) = (vec![], vec![], vec![], vec![]);
    for p in profiles {
        let key = p.email.as_ref().map(|e| e.key());
        texts.push(search_text(key.as_deref(), text_values(&p.values)));
        store_ids.push(p.store_id);
        ids.push(p.id);
        emails.push(p.email.as_ref().map(|e| e.to_string()));
        keys.push(key);
        verified.push(p.verified);
        statuses.push(p.status.as_str());
        created.push(p.created_at);
    }
    let mut tx = p.begin_write().await?;
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO profiles (store_id, id, email, email_key, verified, status, search_text, created_at, updated_at)
         SELECT store_id, id, email, email_key, verified, status, search_text, created_at, created_at
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bool[], $6::text[], $7::text[], $8::int8[])
              AS t (store_id, id, email, email_key, verified, status, search_text, created_at)
         ON CONFLICT (store_id, email_key) DO NOTHING RETURNING id",
    )
    .bind(&store_ids)
    .bind(&ids)
    .bind(&emails)
    .bind(&keys)
    .bind(&verified)
    .bind(&statuses)
    .bind(&texts)
    .bind(&created)
    .fetch_all(&mut *tx)
    .await?;

    let by_id: std::collections::HashMap<Uuid, &NewProfile> = profiles.iter().map(|n| (n.id, n)).collect();
    let mut v = ValueArrays::default();
    for id in &inserted {
        let n = by_id[id];
        for value in &n.values {
            v.push(n.store_id, n.id, value);
        }
    }
    if !v.profile_ids.is_empty() {
        sqlx::query(
            "INSERT INTO profile_taxonomy_values (profile_id, taxonomy_id, field_key, value_pos, field_pos, field_type,
                 text_value, num_value, bool_value, lat, lon, label, store_id)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::int8[], $6::text[], $7::text[],
                 $8::float8[], $9::bool[], $10::float8[], $11::float8[], $12::text[], $13::uuid[])",
        )
        .bind(&v.profile_ids)
        .bind(&v.taxonomy_ids)
        .bind(&v.field_keys)
        .bind(&v.value_pos)
        .bind(&v.field_pos)
        .bind(&v.field_types)
        .bind(&v.texts)
        .bind(&v.nums)
        .bind(&v.bools)
        .bind(&v.lats)
        .bind(&v.lons)
        .bind(&v.labels)
        .bind(&v.store_ids)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(inserted.len() as u64)
}

/// `profile_taxonomy_values` rows as one array per column, for UNNEST.
#[derive(Default)]
struct ValueArrays<'a> {
    profile_ids: Vec<Uuid>,
    taxonomy_ids: Vec<Uuid>,
    field_keys: Vec<&'a str>,
    value_pos: Vec<i64>,
    field_pos: Vec<i64>,
    field_types: Vec<&'static str>,
    texts: Vec<Option<&'a str>>,
    nums: Vec<Option<f64>>,
    bools: Vec<Option<bool>>,
    lats: Vec<Option<f64>>,
    lons: Vec<Option<f64>>,
    labels: Vec<Option<&'a str>>,
    store_ids: Vec<Uuid>,
}

impl<'a> ValueArrays<'a> {
    fn push(&mut self, store_id: Uuid, profile_id: Uuid, v: &'a TaxonomyValue) {
        let (text, num, boolean, lat, lon, label) = match &v.value {
            StoredValue::Text(t) => (Some(t.as_str()), None, None, None, None, None),
            StoredValue::Number(n) => (None, Some(*n), None, None, None, None),
            StoredValue::Boolean(x) => (None, None, Some(*x), None, None, None),
            StoredValue::Geo { lat, lon, label } => (None, None, None, Some(*lat), Some(*lon), label.as_deref()),
        };
        self.profile_ids.push(profile_id);
        self.taxonomy_ids.push(v.taxonomy_id);
        self.field_keys.push(&v.field_key);
        self.value_pos.push(i64::from(v.value_pos));
        self.field_pos.push(i64::from(v.field_pos));
        self.field_types.push(v.value.field_type().as_str());
        self.texts.push(text);
        self.nums.push(num);
        self.bools.push(boolean);
        self.lats.push(lat);
        self.lons.push(lon);
        self.labels.push(label);
        self.store_ids.push(store_id);
    }
}

async fn bulk_insert_sqlite(p: &sqlx::SqlitePool, profiles: &[NewProfile]) -> RepoResult<u64> {
    let mut statements = vec![];
    for chunk in profiles.chunks(INSERT_CHUNK) {
        let mut b = SqlBuilder::new(
            "INSERT INTO profiles (store_id, id, email, email_key, verified, status, search_text, created_at, updated_at) VALUES ",
        );
        for (i, n) in chunk.iter().enumerate() {
            if i > 0 {
                b.push(", ");
            }
            let key = n.email.as_ref().map(|e| e.key());
            b.list([
                Param::Uuid(n.store_id),
                Param::Uuid(n.id),
                Param::OptText(n.email.as_ref().map(|e| e.to_string())),
                Param::OptText(key.clone()),
                Param::OptBool(Some(n.verified)),
                Param::Text(n.status.clone()),
                Param::Text(search_text(key.as_deref(), text_values(&n.values))),
                Param::Int(n.created_at),
                Param::Int(n.created_at),
            ]);
        }
        b.push(" ON CONFLICT (store_id, email_key) DO NOTHING RETURNING id");
        statements.push(b);
    }
    let by_id: std::collections::HashMap<Uuid, &NewProfile> = profiles.iter().map(|n| (n.id, n)).collect();
    let mut tx = p.begin_write().await?;
    let mut inserted: Vec<Uuid> = vec![];
    for b in &statements {
        let ids: Vec<Uuid> =
            bind_params!(sqlx::query_scalar(sqlx::AssertSqlSafe(b.sql.clone())), &b.params).fetch_all(&mut *tx).await?;
        inserted.extend(ids);
    }
    let values = inserted.iter().flat_map(|id| {
        let n = by_id[id];
        n.values.iter().map(move |v| (n.store_id, n.id, v))
    });
    for b in value_inserts(values) {
        bind_params!(sqlx::query(sqlx::AssertSqlSafe(b.sql)), &b.params).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(inserted.len() as u64)
}
