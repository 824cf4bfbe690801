//! Profiles, their typed taxonomy values, promo usage and order links. The rules that combine
//! these statements (§3.1 merge, erasure) are in `services::profiles`.

use std::collections::HashMap;

use uuid::Uuid;

use super::{
    Arg, Backend, CodeSummary, NewProfile, OrderRow, ProfileDetails, ProfileRow, ProfileSearch, RepoResult, Row,
    SortField, SortValue, Sql, Tx,
};
use crate::domain::taxonomy::{Condition, NumOp, StoredValue, TaxonomyValue};
use crate::domain::{Email, Status};

const PROFILE_COLUMNS: &str = "p.store_id, p.id, p.email, p.verified, p.status, p.created_at, p.updated_at";
const VALUE_COLUMNS: &str = "profile_id, taxonomy_id, field_key, value_pos, field_pos, field_type, text_value, num_value, bool_value, lat, lon, label";
const ORDER_COLUMNS: &str = "store_id, order_id, profile_id, total, currency, status, placed_at, metadata, created_at";
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

/// An import's rewrite of one profile.
#[derive(Debug, Clone)]
pub struct ProfileRewrite {
    pub id: Uuid,
    pub email_key: String,
    /// Every value the profile keeps (the old ones the row does not replace, and the row's).
    pub values: Vec<TaxonomyValue>,
    pub status: Option<crate::domain::Status>,
}

pub(crate) fn profile(r: &Row) -> sqlx::Result<ProfileRow> {
    Ok(ProfileRow {
        store_id: r.uuid("store_id")?,
        id: r.uuid("id")?,
        email: r.opt_text("email")?,
        verified: r.boolean("verified")?,
        status: r.parsed("status")?,
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

    fn of(v: &StoredValue) -> Self {
        let none = Self {
            field_type: v.field_type().as_str().to_string(),
            text: None,
            num: None,
            boolean: None,
            lat: None,
            lon: None,
            label: None,
        };
        match v {
            StoredValue::Text(t) => Self { text: Some(t.clone()), ..none },
            StoredValue::Number(n) => Self { num: Some(*n), ..none },
            StoredValue::Boolean(x) => Self { boolean: Some(*x), ..none },
            StoredValue::Geo { lat, lon, label } => {
                Self { lat: Some(*lat), lon: Some(*lon), label: label.clone(), ..none }
            }
        }
    }
}

fn value(r: &Row) -> sqlx::Result<(Uuid, TaxonomyValue)> {
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

fn order(r: &Row) -> sqlx::Result<OrderRow> {
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

/// Multi-row INSERTs of values, each tagged with its store and profile, in chunks.
fn value_inserts<'a>(rows: impl IntoIterator<Item = (Uuid, Uuid, &'a TaxonomyValue)>) -> Vec<Sql> {
    let rows: Vec<_> = rows.into_iter().collect();
    rows.chunks(INSERT_CHUNK)
        .map(|chunk| {
            let mut sql = Sql::new(format!("INSERT INTO profile_taxonomy_values ({VALUE_COLUMNS}, store_id) VALUES "));
            for (i, (store_id, profile_id, v)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                let c = ValueColumns::of(&v.value);
                sql.push_list([
                    Arg::from(*profile_id),
                    Arg::from(v.taxonomy_id),
                    Arg::from(&v.field_key),
                    Arg::from(v.value_pos),
                    Arg::from(v.field_pos),
                    Arg::from(c.field_type),
                    Arg::from(c.text),
                    Arg::from(c.num),
                    Arg::from(c.boolean),
                    Arg::from(c.lat),
                    Arg::from(c.lon),
                    Arg::from(c.label),
                    Arg::from(*store_id),
                ]);
            }
            sql
        })
        .collect()
}

fn condition_sql(sql: &mut Sql, condition: &Condition) {
    match condition {
        Condition::TextIn(values) => {
            sql.push(" AND v.text_value IN ").push_list(values.iter().map(String::as_str));
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
                    sql.push(" AND v.num_value BETWEEN ").push_bind(*a).push(" AND ").push_bind(*z);
                    return;
                }
            };
            sql.push(&format!(" AND v.num_value {sym} ")).push_bind(*a);
        }
        Condition::Boolean(x) => {
            sql.push(" AND v.bool_value = ").push_bind(*x);
        }
        Condition::Within { lat, lon, radius_km } => {
            // Equirectangular distance in degrees, exact enough at city to country scale and plain
            // arithmetic on both backends; the bounding box lets the index narrow the scan first.
            let dlat = radius_km / 111.195;
            let k = lat.to_radians().cos().max(1e-6);
            let dlon = (dlat / k).min(360.0);
            sql.push(" AND v.lat BETWEEN ").push_bind(lat - dlat).push(" AND ").push_bind(lat + dlat);
            sql.push(" AND v.lon BETWEEN ").push_bind(lon - dlon).push(" AND ").push_bind(lon + dlon);
            sql.push(" AND ((v.lat - ").push_bind(*lat).push(") * (v.lat - ").push_bind(*lat);
            sql.push(") + ((v.lon - ").push_bind(*lon).push(") * ").push_bind(k);
            sql.push(") * ((v.lon - ").push_bind(*lon).push(") * ").push_bind(k);
            sql.push(")) <= ").push_bind(dlat * dlat);
        }
    }
}

fn find_sql(s: &ProfileSearch, backend: Backend) -> Sql {
    find_sql_selecting(s, backend, &format!("SELECT {PROFILE_COLUMNS}"), true)
}

/// `find`'s filters under another SELECT; `paged`: with the keyset, order and limit.
fn find_sql_selecting(s: &ProfileSearch, backend: Backend, select: &str, paged: bool) -> Sql {
    let sort = match s.sort {
        SortField::CreatedAt => "p.created_at",
        SortField::UpdatedAt => "p.updated_at",
        SortField::Email => "COALESCE(p.email_key, '')",
    };
    // SQLite has no index for LIKE '%x%'. Left alone it walks the sort index and reads every row
    // out of order (120 ms for a rare match at 100k profiles); read in primary-key order, which is
    // insertion order (UUIDv7 ids), and with the matches sorted, the search costs ~20 ms whatever
    // the pattern. The name is SQLite's for the PRIMARY KEY (store_id, id) of migration 0002.
    let from = match (backend, &s.text) {
        (Backend::Sqlite, Some(_)) => "profiles p INDEXED BY sqlite_autoindex_profiles_1",
        _ => "profiles p",
    };
    let mut sql = Sql::new(format!("{select} FROM {from} WHERE p.store_id = "));
    sql.push_bind(s.store_id);
    if let Some(status) = s.status {
        sql.push(" AND p.status = ").push_bind(status.as_str());
    }
    if let Some(text) = &s.text {
        sql.push(" AND (p.search_text LIKE ").push_bind(format!("%{}%", like_escape(text))).push(" ESCAPE '\\'");
        if let Some(id) = s.id {
            sql.push(" OR p.id = ").push_bind(id);
        }
        sql.push(")");
    }
    for f in &s.filters {
        let conditions = match &f.condition {
            Condition::TextAll(values) => values.iter().map(|v| Condition::TextIn(vec![v.clone()])).collect(),
            other => vec![other.clone()],
        };
        for c in conditions {
            sql.push(" AND EXISTS (SELECT 1 FROM profile_taxonomy_values v WHERE v.store_id = p.store_id AND v.profile_id = p.id");
            sql.push(" AND v.taxonomy_id = ").push_bind(f.taxonomy_id);
            sql.push(" AND v.field_key = ").push_bind(&f.field_key);
            condition_sql(&mut sql, &c);
            sql.push(")");
        }
    }
    if !paged {
        return sql;
    }
    let (cmp, dir) = if s.descending { ("<", "DESC") } else { (">", "ASC") };
    if let Some((key, id)) = &s.after {
        sql.push(&format!(" AND ({sort}, p.id) {cmp} ("));
        match key {
            SortValue::Int(v) => sql.push_bind(*v),
            SortValue::Text(v) => sql.push_bind(v),
        };
        sql.push(", ").push_bind(*id).push(")");
    }
    sql.push(&format!(" ORDER BY {sort} {dir}, p.id {dir} LIMIT ")).push_bind(s.limit);
    sql
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
pub(crate) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A profile locked for a change, with its email key.
#[derive(Debug, Clone)]
pub struct LockedProfile {
    pub row: ProfileRow,
    pub email_key: Option<String>,
}

impl Tx {
    /// Inserts the profile (with its values) unless a profile of the store has its email; true
    /// when inserted. An unknown store is `MissingReference` (checked here, not by a foreign
    /// key: migration 0019 says why).
    pub async fn insert_profile(&mut self, n: &NewProfile) -> RepoResult<bool> {
        let email_key = n.email.as_ref().map(Email::key);
        let text = search_text(email_key.as_deref(), text_values(&n.values));
        let sql = Sql::new(
            "INSERT INTO profiles (store_id, id, email, email_key, verified, status, search_text, created_at, updated_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $8 WHERE EXISTS (SELECT 1 FROM stores WHERE id = $1)
             ON CONFLICT (store_id, email_key) DO NOTHING",
        )
        .bind(n.store_id)
        .bind(n.id)
        .bind(n.email.as_ref().map(Email::as_str))
        .bind(email_key)
        .bind(n.verified)
        .bind(n.status.as_str())
        .bind(text)
        .bind(n.created_at);
        if self.execute(sql).await? == 0 {
            let store = Sql::new("SELECT COUNT(*) AS n FROM stores WHERE id = $1").bind(n.store_id);
            return match self.fetch_one(store).await?.int("n")? {
                0 => Err(super::RepoError::MissingReference),
                _ => Ok(false),
            };
        }
        self.insert_values(n.store_id, n.id, &n.values).await?;
        Ok(true)
    }

    pub async fn insert_values(
        &mut self,
        store_id: Uuid,
        profile_id: Uuid,
        values: &[TaxonomyValue],
    ) -> RepoResult<()> {
        for sql in value_inserts(values.iter().map(|v| (store_id, profile_id, v))) {
            self.execute(sql).await?;
        }
        Ok(())
    }

    pub async fn delete_values(&mut self, store_id: Uuid, profile_id: Uuid) -> RepoResult<()> {
        let sql = Sql::new("DELETE FROM profile_taxonomy_values WHERE store_id = $1 AND profile_id = $2")
            .bind(store_id)
            .bind(profile_id);
        self.execute(sql).await?;
        Ok(())
    }

    /// The id of the store's profile with this email, locked inside a transaction, and the last
    /// codes of the address (as getMe lists them): what a profile created for the address shows.
    pub async fn profile_id_and_codes_by_email(
        &mut self,
        store_id: Uuid,
        email_key: &str,
    ) -> RepoResult<(Option<Uuid>, Vec<CodeSummary>)> {
        let text = match self.backend() {
            Backend::Postgres => super::sessions::ID_AND_CODES_POSTGRES,
            Backend::Sqlite => super::sessions::ID_AND_CODES_SQLITE,
        };
        let sql = Sql::new(text).bind(store_id).bind(email_key).bind(CODES_SHOWN as i64);
        let r = self.fetch_one(sql).await?;
        Ok((r.opt_uuid("id")?, super::sessions::code_summaries(&r)?))
    }

    /// The id of the store's profile with this email, locked inside a transaction.
    pub async fn profile_id_by_email(&mut self, store_id: Uuid, email_key: &str) -> RepoResult<Option<Uuid>> {
        let sql =
            Sql::new(format!("SELECT id FROM profiles WHERE store_id = $1 AND email_key = $2{}", self.for_update()))
                .bind(store_id)
                .bind(email_key);
        Ok(self.fetch_optional(sql).await?.map(|r| r.uuid("id")).transpose()?)
    }

    /// The store's profiles among `ids`, locked in id order (every writer of several profiles
    /// takes them in this order, so two such units cannot deadlock).
    pub async fn lock_profiles(&mut self, store_id: Uuid, ids: &[Uuid]) -> RepoResult<Vec<LockedProfile>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut sql = Sql::new(format!("SELECT {PROFILE_COLUMNS}, p.email_key FROM profiles p WHERE p.store_id = "));
        sql.push_bind(store_id).push(" AND p.id IN ").push_list(ids.iter().copied());
        sql.push(" ORDER BY p.id").push(self.for_update());
        let rows = self.fetch_all(sql).await?;
        Ok(rows
            .iter()
            .map(|r| Ok(LockedProfile { row: profile(r)?, email_key: r.opt_text("email_key")? }))
            .collect::<sqlx::Result<_>>()?)
    }

    pub async fn lock_profile(&mut self, store_id: Uuid, id: Uuid) -> RepoResult<Option<LockedProfile>> {
        Ok(self.lock_profiles(store_id, &[id]).await?.pop())
    }

    /// How many profiles `find`'s filters match (keyset and limit ignored).
    pub async fn count_profiles(&mut self, search: &ProfileSearch) -> RepoResult<i64> {
        let sql = find_sql_selecting(search, self.backend(), "SELECT COUNT(*) AS n", false).unprepared();
        Ok(self.fetch_one(sql).await?.int("n")?)
    }

    /// A page of `find` with the taxonomy values only (exports: no sessions, codes or promo
    /// usage), in `find`'s order.
    pub async fn find_profiles_with_values(
        &mut self,
        search: &ProfileSearch,
    ) -> RepoResult<Vec<(ProfileRow, Vec<TaxonomyValue>)>> {
        let sql = find_sql(search, self.backend()).unprepared();
        let rows = self.fetch_all(sql).await?.iter().map(profile).collect::<sqlx::Result<Vec<_>>>()?;
        let Some(store_id) = rows.first().map(|r| r.store_id) else { return Ok(vec![]) };
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let mut values = self.taxonomy_values(store_id, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let v = values.remove(&r.id).unwrap_or_default();
                (r, v)
            })
            .collect())
    }

    /// The taxonomy values of some profiles (one query a batch of 1,000 ids), by profile.
    pub async fn taxonomy_values(
        &mut self,
        store_id: Uuid,
        ids: &[Uuid],
    ) -> RepoResult<HashMap<Uuid, Vec<TaxonomyValue>>> {
        let mut out: HashMap<Uuid, Vec<TaxonomyValue>> = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut sql = Sql::new(format!("SELECT {VALUE_COLUMNS} FROM profile_taxonomy_values WHERE store_id = "));
            sql.push_bind(store_id).push(" AND profile_id IN ").push_list(chunk.iter().copied());
            for r in self.fetch_all(sql).await? {
                let (pid, v) = value(&r)?;
                out.entry(pid).or_default().push(v);
            }
        }
        Ok(out)
    }

    pub async fn find_profiles(&mut self, search: &ProfileSearch) -> RepoResult<Vec<ProfileDetails>> {
        // Not a cached prepared statement: Postgres then plans with the actual values. A generic
        // plan cannot see how selective a LIKE pattern is, and walked every profile of the
        // store in created_at order for a rare email (300 ms at 100k profiles, 1 ms planned).
        let sql = find_sql(search, self.backend()).unprepared();
        let rows = self.fetch_all(sql).await?.iter().map(profile).collect::<sqlx::Result<Vec<_>>>()?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let mut found: HashMap<Uuid, ProfileDetails> =
            self.profiles(search.store_id, &ids).await?.into_iter().map(|d| (d.profile.id, d)).collect();
        // In find's order; a profile deleted in between is left out.
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// Sets (or clears) the email. A changed address is not verified any more.
    pub async fn set_email(&mut self, store_id: Uuid, id: Uuid, email: Option<&Email>) -> RepoResult<()> {
        let sql = Sql::new(
            "UPDATE profiles SET email = $3, email_key = $4, verified = FALSE WHERE store_id = $1 AND id = $2",
        )
        .bind(store_id)
        .bind(id)
        .bind(email.map(Email::as_str))
        .bind(email.map(Email::key));
        self.execute(sql).await?;
        Ok(())
    }

    /// The same address in another spelling (letter case): kept as written, still verified.
    pub async fn respell_email(&mut self, store_id: Uuid, id: Uuid, email: &Email) -> RepoResult<()> {
        let sql = Sql::new("UPDATE profiles SET email = $3 WHERE store_id = $1 AND id = $2")
            .bind(store_id)
            .bind(id)
            .bind(email.as_str());
        self.execute(sql).await?;
        Ok(())
    }

    /// Gives a profile without email this one (a guest's upgrade); false when it has one already.
    pub async fn attach_email(&mut self, store_id: Uuid, id: Uuid, email: &Email, now: i64) -> RepoResult<bool> {
        let sql = Sql::new(
            "UPDATE profiles SET email = $3, email_key = $4, updated_at = $5
             WHERE store_id = $1 AND id = $2 AND email_key IS NULL",
        )
        .bind(store_id)
        .bind(id)
        .bind(email.as_str())
        .bind(email.key())
        .bind(now);
        Ok(self.execute(sql).await? == 1)
    }

    /// Marks the profile verified (an email it proved, or OR-ed in by a merge).
    /// True when the profile was not verified before.
    pub async fn set_verified(&mut self, store_id: Uuid, id: Uuid, now: i64) -> RepoResult<bool> {
        let sql = Sql::new(
            "UPDATE profiles SET verified = TRUE, updated_at = $3 WHERE store_id = $1 AND id = $2 AND NOT verified",
        )
        .bind(store_id)
        .bind(id)
        .bind(now);
        Ok(self.execute(sql).await? == 1)
    }

    pub async fn set_profile_status(&mut self, store_id: Uuid, id: Uuid, status: Status) -> RepoResult<()> {
        let sql = Sql::new("UPDATE profiles SET status = $3 WHERE store_id = $1 AND id = $2")
            .bind(store_id)
            .bind(id)
            .bind(status.as_str());
        self.execute(sql).await?;
        Ok(())
    }

    pub async fn touch_profile(&mut self, store_id: Uuid, id: Uuid, now: i64) -> RepoResult<()> {
        let sql = Sql::new("UPDATE profiles SET updated_at = $3 WHERE store_id = $1 AND id = $2")
            .bind(store_id)
            .bind(id)
            .bind(now);
        self.execute(sql).await?;
        Ok(())
    }

    /// Recomputes `search_text` of the given profiles from their email and text values.
    pub async fn refresh_search_text(&mut self, store_id: Uuid, ids: &[Uuid]) -> RepoResult<()> {
        for id in ids {
            let sql =
                Sql::new("SELECT email_key FROM profiles WHERE store_id = $1 AND id = $2").bind(store_id).bind(*id);
            let Some(row) = self.fetch_optional(sql).await? else { continue };
            let email = row.opt_text("email_key")?;
            let sql = Sql::new(
                "SELECT text_value FROM profile_taxonomy_values
                 WHERE store_id = $1 AND profile_id = $2 AND text_value IS NOT NULL
                 ORDER BY taxonomy_id, field_pos, value_pos",
            )
            .bind(store_id)
            .bind(*id);
            let texts =
                self.fetch_all(sql).await?.iter().map(|r| r.text("text_value")).collect::<sqlx::Result<Vec<_>>>()?;
            let text = search_text(email.as_deref(), texts.iter().map(String::as_str));
            let sql = Sql::new("UPDATE profiles SET search_text = $3 WHERE store_id = $1 AND id = $2")
                .bind(store_id)
                .bind(*id)
                .bind(text);
            self.execute(sql).await?;
        }
        Ok(())
    }

    /// Deletes `source`'s values of the fields that `target` also has.
    pub async fn delete_shadowed_values(&mut self, store_id: Uuid, target: Uuid, source: Uuid) -> RepoResult<()> {
        let sql = Sql::new(
            "DELETE FROM profile_taxonomy_values WHERE store_id = $1 AND profile_id = $3 AND EXISTS (
                SELECT 1 FROM profile_taxonomy_values t WHERE t.store_id = $1 AND t.profile_id = $2
                AND t.taxonomy_id = profile_taxonomy_values.taxonomy_id AND t.field_key = profile_taxonomy_values.field_key)",
        )
        .bind(store_id)
        .bind(target)
        .bind(source);
        self.execute(sql).await?;
        Ok(())
    }

    pub async fn move_values(&mut self, store_id: Uuid, from: Uuid, to: Uuid) -> RepoResult<()> {
        let sql =
            Sql::new("UPDATE profile_taxonomy_values SET profile_id = $3 WHERE store_id = $1 AND profile_id = $2")
                .bind(store_id)
                .bind(from)
                .bind(to);
        self.execute(sql).await?;
        Ok(())
    }

    /// Adds `from`'s promo usage to `to`'s, code by code.
    pub async fn add_promo_usage(&mut self, store_id: Uuid, from: Uuid, to: Uuid) -> RepoResult<()> {
        let sql = Sql::new(
            "INSERT INTO profile_promo_usage (store_id, profile_id, promo_code_id, uses)
             SELECT store_id, $3, promo_code_id, uses FROM profile_promo_usage WHERE store_id = $1 AND profile_id = $2
             ON CONFLICT (store_id, profile_id, promo_code_id) DO UPDATE SET uses = profile_promo_usage.uses + excluded.uses",
        )
        .bind(store_id)
        .bind(from)
        .bind(to);
        self.execute(sql).await?;
        Ok(())
    }

    pub async fn move_orders(&mut self, store_id: Uuid, from: Uuid, to: Uuid) -> RepoResult<()> {
        let sql = Sql::new("UPDATE profile_orders SET profile_id = $3 WHERE store_id = $1 AND profile_id = $2")
            .bind(store_id)
            .bind(from)
            .bind(to);
        self.execute(sql).await?;
        Ok(())
    }

    /// Deletes the row; values, promo usage, order links, subscriptions, sessions and refresh
    /// tokens go with it by cascade, and on Postgres, where sessions have no foreign key to their
    /// profile (migrations/postgres/0020_session_profile_check.sql), by a statement of its own
    /// after it: one that sees a session committed while the profile's row was locked.
    pub async fn delete_profile(&mut self, store_id: Uuid, id: Uuid) -> RepoResult<bool> {
        let sql = Sql::new("DELETE FROM profiles WHERE store_id = $1 AND id = $2").bind(store_id).bind(id);
        let deleted = self.execute(sql).await? > 0;
        if self.backend() == Backend::Postgres {
            let sql = Sql::new("DELETE FROM profile_sessions WHERE store_id = $1 AND profile_id = $2")
                .bind(store_id)
                .bind(id);
            self.execute(sql).await?;
        }
        Ok(deleted)
    }

    /// Links an order unless the store has linked it already; true when inserted.
    pub async fn insert_order(&mut self, o: &OrderRow) -> RepoResult<bool> {
        let sql = Sql::new(format!(
            "INSERT INTO profile_orders ({ORDER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (store_id, order_id) DO NOTHING"
        ))
        .bind(o.store_id)
        .bind(&o.order_id)
        .bind(o.profile_id)
        .bind(o.total)
        .bind(&o.currency)
        .bind(&o.status)
        .bind(o.placed_at)
        .bind(Arg::json(&o.metadata))
        .bind(o.created_at);
        Ok(self.execute(sql).await? == 1)
    }

    pub async fn order(&mut self, store_id: Uuid, order_id: &str) -> RepoResult<Option<OrderRow>> {
        let sql = Sql::new(format!("SELECT {ORDER_COLUMNS} FROM profile_orders WHERE store_id = $1 AND order_id = $2"))
            .bind(store_id)
            .bind(order_id);
        Ok(self.fetch_optional(sql).await?.map(|r| order(&r)).transpose()?)
    }

    pub async fn orders(
        &mut self,
        store_id: Uuid,
        profile_id: Uuid,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> RepoResult<Vec<OrderRow>> {
        let (after_at, after_id) = after.map(|(a, b)| (Some(a), Some(b))).unwrap_or((None, None));
        let sql = Sql::new(format!(
            "SELECT {ORDER_COLUMNS} FROM profile_orders WHERE store_id = $1 AND profile_id = $2
             AND ($3 IS NULL OR (created_at, order_id) > ($3, $4))
             ORDER BY created_at, order_id LIMIT $5"
        ))
        .bind(store_id)
        .bind(profile_id)
        .bind(after_at)
        .bind(after_id)
        .bind(limit);
        Ok(self.fetch_all(sql).await?.iter().map(order).collect::<sqlx::Result<_>>()?)
    }

    /// Rewrites many profiles at once (an import's updates): every value of each is replaced by
    /// `values`, its status set when given, its search text recomputed and `updated_at` set, in a
    /// few statements per batch rather than several per profile. The profile rows first, their
    /// versions moved by the statement itself: the value triggers then find them written by this
    /// transaction and leave them be (one update of each profile, not two).
    pub async fn bulk_rewrite_profiles(&mut self, store_id: Uuid, rows: &[ProfileRewrite], now: i64) -> RepoResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let text = |r: &ProfileRewrite| search_text(Some(&r.email_key), text_values(&r.values));
        match self.backend() {
            Backend::Postgres => {
                let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
                let texts: Vec<Option<String>> = rows.iter().map(|r| Some(text(r))).collect();
                let statuses: Vec<Option<String>> =
                    rows.iter().map(|r| r.status.map(|s| s.as_str().to_string())).collect();
                let sql = Sql::new(
                    "UPDATE profiles p SET search_text = t.search_text, status = COALESCE(t.status, p.status), updated_at = $5,
                         version = p.version + 1
                     FROM UNNEST($2::uuid[], $3::text[], $4::text[]) AS t (id, search_text, status)
                     WHERE p.store_id = $1 AND p.id = t.id",
                )
                .bind(store_id)
                .bind(ids)
                .bind(texts)
                .bind(statuses)
                .bind(now);
                self.execute(sql).await?;
            }
            Backend::Sqlite => {
                for r in rows {
                    let sql = Sql::new(
                        "UPDATE profiles SET search_text = $3, status = COALESCE($4, status), updated_at = $5
                         WHERE store_id = $1 AND id = $2",
                    )
                    .bind(store_id)
                    .bind(r.id)
                    .bind(text(r))
                    .bind(r.status.map(|s| s.as_str()))
                    .bind(now);
                    self.execute(sql).await?;
                }
            }
        }
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut sql = Sql::new("DELETE FROM profile_taxonomy_values WHERE store_id = ");
            sql.push_bind(store_id).push(" AND profile_id IN ").push_list(chunk.iter().map(|r| r.id));
            self.execute(sql.unprepared()).await?;
        }
        let values: Vec<(Uuid, Uuid, &TaxonomyValue)> =
            rows.iter().flat_map(|r| r.values.iter().map(move |v| (store_id, r.id, v))).collect();
        self.insert_value_rows(values).await?;
        Ok(())
    }

    /// Value rows of many profiles: one UNNEST statement on Postgres, multi-row inserts on SQLite.
    async fn insert_value_rows(&mut self, values: Vec<(Uuid, Uuid, &TaxonomyValue)>) -> RepoResult<()> {
        match self.backend() {
            Backend::Postgres if !values.is_empty() => self.execute(values_unnest(&values)).await.map(drop)?,
            Backend::Postgres => {}
            Backend::Sqlite => {
                for sql in value_inserts(values) {
                    self.execute(sql).await?;
                }
            }
        }
        Ok(())
    }

    pub async fn bulk_insert_profiles(&mut self, profiles: &[NewProfile]) -> RepoResult<Vec<Uuid>> {
        let inserted = match self.backend() {
            // One statement per table with every column as an array parameter: Postgres parses and
            // plans it once per batch (multi-row VALUES cost a new plan per 500 rows, and most of the time).
            Backend::Postgres => self.bulk_insert_postgres(profiles).await?,
            // SQLite has no array parameters: multi-row VALUES, in chunks under its parameter limit.
            Backend::Sqlite => self.bulk_insert_sqlite(profiles).await?,
        };
        let by_id: HashMap<Uuid, &NewProfile> = profiles.iter().map(|n| (n.id, n)).collect();
        let values: Vec<(Uuid, Uuid, &TaxonomyValue)> = inserted
            .iter()
            .flat_map(|id| {
                let n = by_id[id];
                n.values.iter().map(move |v| (n.store_id, n.id, v))
            })
            .collect();
        self.insert_value_rows(values).await?;
        Ok(inserted)
    }

    async fn bulk_insert_postgres(&mut self, profiles: &[NewProfile]) -> RepoResult<Vec<Uuid>> {
        let (mut store_ids, mut ids, mut emails, mut keys) = (vec![], vec![], vec![], vec![]);
        let (mut verified, mut statuses, mut texts, mut created) = (vec![], vec![], vec![], vec![]);
        for p in profiles {
            let key = p.email.as_ref().map(Email::key);
            texts.push(Some(search_text(key.as_deref(), text_values(&p.values))));
            store_ids.push(p.store_id);
            ids.push(p.id);
            emails.push(p.email.as_ref().map(|e| e.to_string()));
            keys.push(key);
            verified.push(Some(p.verified));
            statuses.push(Some(p.status.as_str().to_string()));
            created.push(p.created_at);
        }
        let sql = Sql::new(
            "INSERT INTO profiles (store_id, id, email, email_key, verified, status, search_text, created_at, updated_at)
             SELECT store_id, id, email, email_key, verified, status, search_text, created_at, created_at
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bool[], $6::text[], $7::text[], $8::int8[])
                  AS t (store_id, id, email, email_key, verified, status, search_text, created_at)
             ON CONFLICT (store_id, email_key) DO NOTHING RETURNING id",
        )
        .bind(store_ids)
        .bind(ids)
        .bind(emails)
        .bind(keys)
        .bind(verified)
        .bind(statuses)
        .bind(texts)
        .bind(created);
        Ok(self.fetch_all(sql).await?.iter().map(|r| r.uuid("id")).collect::<sqlx::Result<_>>()?)
    }

    async fn bulk_insert_sqlite(&mut self, profiles: &[NewProfile]) -> RepoResult<Vec<Uuid>> {
        let mut inserted = vec![];
        for chunk in profiles.chunks(INSERT_CHUNK) {
            let mut sql = Sql::new(
                "INSERT INTO profiles (store_id, id, email, email_key, verified, status, search_text, created_at, updated_at) VALUES ",
            );
            for (i, n) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                let key = n.email.as_ref().map(Email::key);
                sql.push_list([
                    Arg::from(n.store_id),
                    Arg::from(n.id),
                    Arg::from(n.email.as_ref().map(|e| e.to_string())),
                    Arg::from(key.clone()),
                    Arg::from(n.verified),
                    Arg::from(n.status.as_str()),
                    Arg::from(search_text(key.as_deref(), text_values(&n.values))),
                    Arg::from(n.created_at),
                    Arg::from(n.created_at),
                ]);
            }
            sql.push(" ON CONFLICT (store_id, email_key) DO NOTHING RETURNING id");
            for r in self.fetch_all(sql).await? {
                inserted.push(r.uuid("id")?);
            }
        }
        Ok(inserted)
    }
}

/// `profile_taxonomy_values` rows as one array per column, for one UNNEST insert (Postgres).
fn values_unnest(values: &[(Uuid, Uuid, &TaxonomyValue)]) -> Sql {
    let n = values.len();
    let (mut profile_ids, mut taxonomy_ids, mut field_keys) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut value_pos, mut field_pos, mut field_types) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut texts, mut nums, mut bools) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut lats, mut lons, mut labels, mut store_ids) = (vec![], vec![], vec![], vec![]);
    for (store_id, profile_id, v) in values {
        let c = ValueColumns::of(&v.value);
        profile_ids.push(*profile_id);
        taxonomy_ids.push(v.taxonomy_id);
        field_keys.push(Some(v.field_key.clone()));
        value_pos.push(i64::from(v.value_pos));
        field_pos.push(i64::from(v.field_pos));
        field_types.push(Some(c.field_type));
        texts.push(c.text);
        nums.push(c.num);
        bools.push(c.boolean);
        lats.push(c.lat);
        lons.push(c.lon);
        labels.push(c.label);
        store_ids.push(*store_id);
    }
    Sql::new(
        "INSERT INTO profile_taxonomy_values (profile_id, taxonomy_id, field_key, value_pos, field_pos, field_type,
             text_value, num_value, bool_value, lat, lon, label, store_id)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::int8[], $6::text[], $7::text[],
             $8::float8[], $9::bool[], $10::float8[], $11::float8[], $12::text[], $13::uuid[])",
    )
    .bind(profile_ids)
    .bind(taxonomy_ids)
    .bind(field_keys)
    .bind(value_pos)
    .bind(field_pos)
    .bind(field_types)
    .bind(texts)
    .bind(nums)
    .bind(bools)
    .bind(lats)
    .bind(lons)
    .bind(labels)
    .bind(store_ids)
}
