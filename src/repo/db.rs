//! The unit of work: [`Database`] hands out [`Tx`], and every repository statement is a method of
//! `Tx`, written once for both backends.
//!
//! Why this shape: a statement is plain SQL plus its parameters as values ([`Sql`], [`Arg`]); the
//! one place that knows there are two backends is [`Tx::run`], which binds the values and picks
//! the connection by an enum match. The alternatives cost more: a repository generic over
//! `sqlx::Database` carries a wall of trait bounds on every function and compiles each body twice;
//! two implementations behind one trait write every statement twice; a macro that pastes one body
//! into two arms (what this replaced) compiles twice too and is out of rustfmt's reach. Here each
//! statement is an ordinary method that rustfmt formats, and services hold one concrete type.
//!
//! A service opens a transaction with [`Database::begin`], passes `&mut Tx` to the statements it
//! needs and commits; dropping an uncommitted `Tx` rolls it back. A one-statement read or write
//! runs on [`Database::auto`] instead, where each statement commits on its own, so it costs no
//! `BEGIN`/`COMMIT` round trips.
//!
//! Behind a pooler in transaction mode (`DATABASE_URL=...?pgbouncer=true`, PgBouncer's
//! `pool_mode = transaction`), a pooled connection is a different Postgres session from one
//! transaction to the next, and what sqlx does by default breaks there. A cached prepared
//! statement is named (`sqlx_s_1`, `sqlx_s_2`, ... per connection) and lives in the session that
//! prepared it: a later transaction finds it missing ("does not exist"), or finds another
//! client's statement of that name ("already exists", or, worse, it runs that other statement if
//! the parameters fit). Turning the cache off (`statement_cache_capacity(0)`) is not enough: sqlx
//! still prepares each statement under a new name, and only never reuses or closes it. And a
//! statement with parameters takes two round trips, Parse then Bind, each ended by a Sync, after
//! which PgBouncer may hand the session to another client: even an unnamed statement sent on its
//! own can be bound in another session, to whatever that session parsed last. So with the flag,
//! [`Tx`] prepares nothing by name (every statement unnamed, as [`Sql::unprepared`]) and runs
//! every statement inside a transaction, which keeps one session from its Parse to its Bind:
//! those of [`Database::begin`] and [`Database::snapshot`] already are, and a statement of
//! [`Database::auto`] gets a `BEGIN`/`COMMIT` of its own. The price is round trips (four for a
//! one-statement unit instead of one). Nothing else depends on the session: no `SET` (only `SET
//! TRANSACTION`), no session advisory lock (migrations take `pg_advisory_xact_lock`), no `LISTEN`,
//! no temporary table. docs/scaling.md has the measurements.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqlitePool, SqliteRow};
use sqlx::types::Json;
use sqlx::{Postgres, Sqlite, Transaction};
use uuid::Uuid;

use super::kept::Kept;
use super::{RepoError, RepoResult};
use crate::config::DatabaseUrl;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The shared handle: a connection pool of one backend. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Database {
    pool: Pool,
    /// Behind a transaction pooler (see the module's documentation).
    pgbouncer: bool,
}

#[derive(Clone, Debug)]
enum Pool {
    Postgres(Arc<Kept>),
    Sqlite(SqlitePool),
}

/// A unit of work: an open transaction, or (from [`Database::auto`]) the pool, where each
/// statement commits on its own.
pub struct Tx {
    conn: Conn,
    /// A snapshot: reads only, so no row locks are taken (Postgres refuses them read-only).
    read_only: bool,
    /// Behind a transaction pooler: nothing prepared by name, and a statement on the pool runs in
    /// a transaction of its own.
    pgbouncer: bool,
}

enum Conn {
    /// Each statement on a connection of its own, kept between statements (see [`Kept`]).
    PostgresPool(Arc<Kept>),
    SqlitePool(SqlitePool),
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl Database {
    /// Connects (creating a SQLite file if missing) without migrating.
    pub async fn connect(url: &DatabaseUrl, max_connections: u32) -> anyhow::Result<Self> {
        let (pool, pgbouncer) = match url {
            DatabaseUrl::Postgres { url, pgbouncer } => {
                let pool = super::postgres::connect(url.expose(), max_connections).await?;
                (Pool::Postgres(Kept::new(pool)), *pgbouncer)
            }
            DatabaseUrl::Sqlite { path } => (Pool::Sqlite(super::sqlite::connect(path, max_connections).await?), false),
        };
        Ok(Self { pool, pgbouncer })
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Postgres(_) => Backend::Postgres,
            Pool::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Refreshes the planner's statistics after a bulk load (seed, import) on Postgres. Until
    /// autovacuum gets to it, a table that grew tenfold is planned as the small one it was: a
    /// 100,000-profile store estimated at 489 rows sorted its export pages on disk.
    pub async fn analyze_after_bulk_load(&self) -> RepoResult<()> {
        if let Pool::Postgres(p) = &self.pool {
            sqlx::raw_sql("ANALYZE profiles, profile_taxonomy_values, subscriptions, events").execute(p.pool()).await?;
        }
        Ok(())
    }

    /// Starts a transaction that will write. SQLite takes its write lock up front (`BEGIN
    /// IMMEDIATE`), so two writers queue on the busy timeout instead of failing on upgrade, and a
    /// read inside the transaction sees what it will write over.
    pub async fn begin(&self) -> RepoResult<Tx> {
        let conn = match &self.pool {
            Pool::Postgres(p) => Conn::Postgres(p.begin().await?),
            Pool::Sqlite(p) => Conn::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
        };
        Ok(Tx { conn, read_only: false, pgbouncer: self.pgbouncer })
    }

    /// A read-only transaction that sees one snapshot of the database for its whole life (an
    /// export of a million rows is consistent): `REPEATABLE READ, READ ONLY` on Postgres; a
    /// deferred transaction on SQLite, whose WAL keeps the snapshot of its first read without
    /// blocking writers.
    pub async fn snapshot(&self) -> RepoResult<Tx> {
        let conn = match &self.pool {
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                // The simple protocol: nothing to prepare.
                sqlx::raw_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
                Conn::Postgres(tx)
            }
            Pool::Sqlite(p) => Conn::Sqlite(p.begin_with("BEGIN DEFERRED").await?),
        };
        Ok(Tx { conn, read_only: true, pgbouncer: self.pgbouncer })
    }

    /// For work that the repository does in one statement on Postgres but that needs several
    /// statements, or the write lock, on SQLite (a new guest and its session; leasing mail): the
    /// pool on Postgres, where one statement is atomic by itself and costs no `BEGIN`/`COMMIT`
    /// round trips, and a write transaction on SQLite. Commit it like any unit.
    pub async fn atomic(&self) -> RepoResult<Tx> {
        match self.backend() {
            Backend::Postgres => Ok(self.auto()),
            Backend::Sqlite => self.begin().await,
        }
    }

    /// Statements that each commit on their own: for a unit of work of one statement.
    pub fn auto(&self) -> Tx {
        let conn = match &self.pool {
            Pool::Postgres(p) => Conn::PostgresPool(p.clone()),
            Pool::Sqlite(p) => Conn::SqlitePool(p.clone()),
        };
        Tx { conn, read_only: false, pgbouncer: self.pgbouncer }
    }

    /// The Postgres pool, for code that times one statement against it (examples/bench_baseline.rs).
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match &self.pool {
            Pool::Postgres(p) => Some(p.pool()),
            Pool::Sqlite(_) => None,
        }
    }

    /// Time allowed to wait for a pooled connection.
    pub fn acquire_timeout(&self) -> Duration {
        match &self.pool {
            Pool::Postgres(p) => p.pool().options().get_acquire_timeout(),
            Pool::Sqlite(p) => p.options().get_acquire_timeout(),
        }
    }
}

/// One parameter value. `None` binds SQL NULL of the value's type.
#[derive(Debug, Clone)]
pub enum Arg {
    Uuid(Option<Uuid>),
    Int(Option<i64>),
    Float(Option<f64>),
    Bool(Option<bool>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
    /// JSON text, serialized once where the value was made (bound as `JSONB` on Postgres).
    Json(Option<Box<serde_json::value::RawValue>>),
    /// Array parameters exist on Postgres only (`UNNEST($1::uuid[])`).
    UuidArray(Vec<Uuid>),
    IntArray(Vec<i64>),
    FloatArray(Vec<Option<f64>>),
    BoolArray(Vec<Option<bool>>),
    TextArray(Vec<Option<String>>),
}

impl From<Uuid> for Arg {
    fn from(v: Uuid) -> Self {
        Arg::Uuid(Some(v))
    }
}
impl From<Option<Uuid>> for Arg {
    fn from(v: Option<Uuid>) -> Self {
        Arg::Uuid(v)
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<i32> for Arg {
    fn from(v: i32) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}
impl From<f64> for Arg {
    fn from(v: f64) -> Self {
        Arg::Float(Some(v))
    }
}
impl From<Option<f64>> for Arg {
    fn from(v: Option<f64>) -> Self {
        Arg::Float(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(Some(v))
    }
}
impl From<Option<bool>> for Arg {
    fn from(v: Option<bool>) -> Self {
        Arg::Bool(v)
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(Some(v.clone()))
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_string()))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<&Option<String>> for Arg {
    fn from(v: &Option<String>) -> Self {
        Arg::Text(v.clone())
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_string))
    }
}
impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Self {
        Arg::Bytes(Some(v.to_vec()))
    }
}
impl From<Vec<Uuid>> for Arg {
    fn from(v: Vec<Uuid>) -> Self {
        Arg::UuidArray(v)
    }
}
impl From<Vec<i64>> for Arg {
    fn from(v: Vec<i64>) -> Self {
        Arg::IntArray(v)
    }
}
impl From<Vec<Option<f64>>> for Arg {
    fn from(v: Vec<Option<f64>>) -> Self {
        Arg::FloatArray(v)
    }
}
impl From<Vec<Option<bool>>> for Arg {
    fn from(v: Vec<Option<bool>>) -> Self {
        Arg::BoolArray(v)
    }
}
impl From<Vec<Option<String>>> for Arg {
    fn from(v: Vec<Option<String>>) -> Self {
        Arg::TextArray(v)
    }
}

impl Arg {
    /// A value stored as JSON (`JSONB` on Postgres, `TEXT` on SQLite).
    pub fn json(v: &impl Serialize) -> Self {
        Arg::Json(Some(serde_json::value::to_raw_value(v).expect("values of the repository serialize to JSON")))
    }

    pub fn opt_json(v: Option<&impl Serialize>) -> Self {
        match v {
            Some(v) => Self::json(v),
            None => Arg::Json(None),
        }
    }
}

/// A statement and its parameters. Built whole (`Sql::new(..).bind(..)`) or piece by piece
/// (`push`, `push_bind`, `push_list`) for dynamic SQL; placeholders are `$1`, `$2`, ... on both
/// backends.
#[derive(Debug, Clone)]
pub struct Sql {
    text: Cow<'static, str>,
    args: Vec<Arg>,
    persistent: bool,
}

impl Sql {
    pub fn new(text: impl Into<Cow<'static, str>>) -> Self {
        Self { text: text.into(), args: vec![], persistent: true }
    }

    /// Adds the value for the next placeholder already in the text.
    pub fn bind(mut self, v: impl Into<Arg>) -> Self {
        self.args.push(v.into());
        self
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.to_mut().push_str(text);
        self
    }

    /// Appends a placeholder for `v`.
    pub fn push_bind(&mut self, v: impl Into<Arg>) -> &mut Self {
        self.args.push(v.into());
        let n = self.args.len();
        self.text.to_mut().push_str(&format!("${n}"));
        self
    }

    /// Appends `($a, $b, ...)`.
    pub fn push_list<A: Into<Arg>>(&mut self, items: impl IntoIterator<Item = A>) -> &mut Self {
        self.push("(");
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push_bind(item);
        }
        self.push(")")
    }

    /// Not kept as a prepared statement: Postgres then plans it with the actual values.
    pub fn unprepared(mut self) -> Self {
        self.persistent = false;
        self
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// `prepared: false` sends it unnamed whatever `persistent` says (behind a transaction pooler).
    fn postgres(self, prepared: bool) -> Query<'static, Postgres, PgArguments> {
        let mut q = match self.text {
            Cow::Borrowed(s) => sqlx::query(s),
            Cow::Owned(s) => sqlx::query(sqlx::AssertSqlSafe(s)),
        };
        for arg in self.args {
            q = match arg {
                Arg::Uuid(v) => q.bind(v),
                Arg::Int(v) => q.bind(v),
                Arg::Float(v) => q.bind(v),
                Arg::Bool(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
                Arg::Bytes(v) => q.bind(v),
                Arg::Json(v) => q.bind(v.map(Json)),
                Arg::UuidArray(v) => q.bind(v),
                Arg::IntArray(v) => q.bind(v),
                Arg::FloatArray(v) => q.bind(v),
                Arg::BoolArray(v) => q.bind(v),
                Arg::TextArray(v) => q.bind(v),
            };
        }
        q.persistent(self.persistent && prepared)
    }

    fn sqlite(self) -> Query<'static, Sqlite, SqliteArguments> {
        let mut q = match self.text {
            Cow::Borrowed(s) => sqlx::query(s),
            Cow::Owned(s) => sqlx::query(sqlx::AssertSqlSafe(s)),
        };
        for arg in self.args {
            q = match arg {
                Arg::Uuid(v) => q.bind(v),
                Arg::Int(v) => q.bind(v),
                Arg::Float(v) => q.bind(v),
                Arg::Bool(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
                Arg::Bytes(v) => q.bind(v),
                Arg::Json(v) => q.bind(v.map(Json)),
                Arg::UuidArray(_) | Arg::IntArray(_) | Arg::FloatArray(_) | Arg::BoolArray(_) | Arg::TextArray(_) => {
                    unreachable!("array parameters are written for Postgres only")
                }
            };
        }
        q.persistent(self.persistent)
    }
}

/// A result row of either backend; read it through [`RowExt`](super::row::RowExt).
pub enum Row {
    Postgres(PgRow),
    Sqlite(SqliteRow),
}

impl Tx {
    pub fn backend(&self) -> Backend {
        match self.conn {
            Conn::PostgresPool(_) | Conn::Postgres(_) => Backend::Postgres,
            Conn::SqlitePool(_) | Conn::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// `" FOR UPDATE"` inside a Postgres transaction: the row lock for a read that a write of
    /// this transaction depends on. SQLite's write transaction already holds the whole database,
    /// and outside a transaction a lock would end with the statement. A read-only snapshot
    /// writes nothing, so it locks nothing (Postgres refuses `FOR UPDATE` there).
    pub fn for_update(&self) -> &'static str {
        match self.conn {
            Conn::Postgres(_) if !self.read_only => " FOR UPDATE",
            _ => "",
        }
    }

    /// `" FOR SHARE"` inside a Postgres transaction: the row may not change or go until it ends.
    pub fn for_share(&self) -> &'static str {
        match self.conn {
            Conn::Postgres(_) if !self.read_only => " FOR SHARE",
            _ => "",
        }
    }

    /// Makes the transaction's changes durable; on an `auto` unit there is nothing to commit.
    pub async fn commit(self) -> RepoResult<()> {
        match self.conn {
            Conn::Postgres(tx) => tx.commit().await?,
            Conn::Sqlite(tx) => tx.commit().await?,
            Conn::PostgresPool(_) | Conn::SqlitePool(_) => {}
        }
        Ok(())
    }

    // The one place that dispatches on the backend: these four methods.

    /// Runs a statement; the number of rows it changed.
    pub async fn execute(&mut self, sql: Sql) -> RepoResult<u64> {
        let prepared = !self.pgbouncer;
        Ok(match &mut self.conn {
            Conn::PostgresPool(p) if self.pgbouncer => {
                let mut tx = p.begin().await?;
                let n = sql.postgres(false).execute(&mut *tx).await?.rows_affected();
                tx.commit().await?;
                n
            }
            Conn::PostgresPool(p) => {
                let mut conn = p.take().await?;
                let done = sql.postgres(prepared).execute(&mut *conn).await;
                p.give_back(conn, &done);
                done?.rows_affected()
            }
            Conn::Postgres(tx) => sql.postgres(prepared).execute(&mut **tx).await?.rows_affected(),
            Conn::SqlitePool(p) => sql.sqlite().execute(&*p).await?.rows_affected(),
            Conn::Sqlite(tx) => sql.sqlite().execute(&mut **tx).await?.rows_affected(),
        })
    }

    pub async fn fetch_all(&mut self, sql: Sql) -> RepoResult<Vec<Row>> {
        let prepared = !self.pgbouncer;
        Ok(match &mut self.conn {
            Conn::PostgresPool(p) if self.pgbouncer => {
                let mut tx = p.begin().await?;
                let rows = sql.postgres(false).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                rows.into_iter().map(Row::Postgres).collect()
            }
            Conn::PostgresPool(p) => {
                let mut conn = p.take().await?;
                let done = sql.postgres(prepared).fetch_all(&mut *conn).await;
                p.give_back(conn, &done);
                done?.into_iter().map(Row::Postgres).collect()
            }
            Conn::Postgres(tx) => {
                sql.postgres(prepared).fetch_all(&mut **tx).await?.into_iter().map(Row::Postgres).collect()
            }
            Conn::SqlitePool(p) => sql.sqlite().fetch_all(&*p).await?.into_iter().map(Row::Sqlite).collect(),
            Conn::Sqlite(tx) => sql.sqlite().fetch_all(&mut **tx).await?.into_iter().map(Row::Sqlite).collect(),
        })
    }

    pub async fn fetch_optional(&mut self, sql: Sql) -> RepoResult<Option<Row>> {
        let prepared = !self.pgbouncer;
        Ok(match &mut self.conn {
            Conn::PostgresPool(p) if self.pgbouncer => {
                let mut tx = p.begin().await?;
                let row = sql.postgres(false).fetch_optional(&mut *tx).await?;
                tx.commit().await?;
                row.map(Row::Postgres)
            }
            Conn::PostgresPool(p) => {
                let mut conn = p.take().await?;
                let done = sql.postgres(prepared).fetch_optional(&mut *conn).await;
                p.give_back(conn, &done);
                done?.map(Row::Postgres)
            }
            Conn::Postgres(tx) => sql.postgres(prepared).fetch_optional(&mut **tx).await?.map(Row::Postgres),
            Conn::SqlitePool(p) => sql.sqlite().fetch_optional(&*p).await?.map(Row::Sqlite),
            Conn::Sqlite(tx) => sql.sqlite().fetch_optional(&mut **tx).await?.map(Row::Sqlite),
        })
    }

    /// Runs a script of several statements without parameters (a migration).
    pub async fn execute_script(&mut self, script: &'static str) -> RepoResult<()> {
        match &mut self.conn {
            Conn::PostgresPool(p) => sqlx::raw_sql(script).execute(p.pool()).await.map(drop)?,
            Conn::Postgres(tx) => sqlx::raw_sql(script).execute(&mut **tx).await.map(drop)?,
            Conn::SqlitePool(p) => sqlx::raw_sql(script).execute(&*p).await.map(drop)?,
            Conn::Sqlite(tx) => sqlx::raw_sql(script).execute(&mut **tx).await.map(drop)?,
        }
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&mut self) -> RepoResult<()> {
        self.execute(Sql::new("SELECT 1")).await.map(drop)
    }

    pub async fn fetch_one(&mut self, sql: Sql) -> RepoResult<Row> {
        self.fetch_optional(sql).await?.ok_or(RepoError::Db(sqlx::Error::RowNotFound))
    }
}

impl Row {
    fn get<T>(&self, col: &str) -> sqlx::Result<T>
    where
        T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
        T: for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
    {
        use sqlx::Row as _;
        match self {
            Row::Postgres(r) => r.try_get(col),
            Row::Sqlite(r) => r.try_get(col),
        }
    }

    pub fn uuid(&self, col: &str) -> sqlx::Result<Uuid> {
        self.get(col)
    }
    pub fn opt_uuid(&self, col: &str) -> sqlx::Result<Option<Uuid>> {
        self.get(col)
    }
    pub fn int(&self, col: &str) -> sqlx::Result<i64> {
        self.get(col)
    }
    pub fn opt_int(&self, col: &str) -> sqlx::Result<Option<i64>> {
        self.get(col)
    }
    pub fn text(&self, col: &str) -> sqlx::Result<String> {
        self.get(col)
    }
    pub fn opt_text(&self, col: &str) -> sqlx::Result<Option<String>> {
        self.get(col)
    }
    pub fn boolean(&self, col: &str) -> sqlx::Result<bool> {
        self.get(col)
    }
    pub fn opt_bool(&self, col: &str) -> sqlx::Result<Option<bool>> {
        self.get(col)
    }
    pub fn opt_float(&self, col: &str) -> sqlx::Result<Option<f64>> {
        self.get(col)
    }
    pub fn bytes(&self, col: &str) -> sqlx::Result<Vec<u8>> {
        self.get(col)
    }
    pub fn json<T: serde::de::DeserializeOwned + 'static>(&self, col: &str) -> sqlx::Result<T> {
        self.get::<Json<T>>(col).map(|j| j.0)
    }
    pub fn opt_json<T: serde::de::DeserializeOwned + 'static>(&self, col: &str) -> sqlx::Result<Option<T>> {
        self.get::<Option<Json<T>>>(col).map(|j| j.map(|j| j.0))
    }
    /// A value of one of the domain's enums, stored as its text.
    pub fn parsed<T: std::str::FromStr>(&self, col: &str) -> sqlx::Result<T> {
        let text = self.text(col)?;
        text.parse().map_err(|_| sqlx::Error::Decode(format!("{col}: unknown value {text:?}").into()))
    }
}
