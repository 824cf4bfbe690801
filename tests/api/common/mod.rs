//! Test harness: the real app on 127.0.0.1:0 against a real database, one per test.
//! SQLite always; Postgres (a fresh database per test) when the ignored Postgres half is run with
//! TEST_DATABASE_URL set and `-- --include-ignored`.

use std::collections::HashMap;
use std::path::PathBuf;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};
use storecrm::app::{self, AppState};
use storecrm::config::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const SECRET_KEY: &str = "test-secret-key-0123456789abcdef-0123456789abcdef";
pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One running server. Several can share one database (`sibling`).
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub backend: Backend,
    pub database_url: String,
    pub state: AppState,
    vars: HashMap<String, String>,
    dir: PathBuf,
    pg: Option<(String, String)>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

fn pg_admin_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL").ok().filter(|v| !v.is_empty())
}

/// A connection of the test's own (raw SQL, creating databases) to a Postgres URL of the harness.
/// TEST_DATABASE_URL may point at PgBouncer in transaction mode (`...?pgbouncer=true`, which the
/// server reads and the driver does not, so it is left out here): then a connection is a
/// different server session from one transaction to the next, so the harness and the tests send
/// SQL without parameters with the simple protocol (`sqlx::raw_sql`) and SQL with parameters
/// unnamed (`persistent(false)`) inside a transaction, never as sqlx's default named statements
/// (`src/repo/db.rs` says why).
pub async fn pg_connect(url: &str) -> sqlx::PgConnection {
    let url = match storecrm::config::DatabaseUrl::parse(url) {
        Ok(storecrm::config::DatabaseUrl::Postgres { url, .. }) => url.expose().to_string(),
        _ => url.to_string(),
    };
    sqlx::PgConnection::connect(&url).await.expect("connect to TEST_DATABASE_URL")
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map(|(b, q)| (b, Some(q))).unwrap_or((url, None));
    let root = &base[..base.rfind('/').expect("TEST_DATABASE_URL has a database path")];
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

/// Creates a fresh database, after dropping ones that earlier runs left behind an hour ago.
async fn fresh_pg_database(admin_url: &str) -> String {
    let mut conn = pg_connect(admin_url).await;
    let now = storecrm::now();
    let names: Vec<String> = sqlx::raw_sql("SELECT datname FROM pg_database WHERE datname LIKE 'sc\\_test\\_%'")
        .fetch_all(&mut conn)
        .await
        .expect("list test databases")
        .iter()
        .map(|r| sqlx::Row::get(r, 0))
        .collect();
    for name in names {
        let stamp = name.split('_').nth(2).and_then(|t| t.parse::<i64>().ok()).unwrap_or(0);
        if now - stamp > 3600 {
            let _ = conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))).await;
        }
    }
    let name = format!("sc_test_{now}_{}", uuid::Uuid::now_v7().simple());
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).await.expect("create test database");
    name
}

impl TestApp {
    /// Panics for Postgres when TEST_DATABASE_URL is not set: a case that cannot run fails.
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, &[]).await
    }

    pub async fn spawn_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .try_init();
        let dir = std::env::temp_dir().join(format!("storecrm-test-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (database_url, pg) = match backend {
            Backend::Sqlite => (format!("sqlite://{}", dir.join("crm.db").display()), None),
            Backend::Postgres => {
                let admin = pg_admin_url().expect("TEST_DATABASE_URL is not set: the Postgres half cannot run");
                let db = fresh_pg_database(&admin).await;
                (with_database(&admin, &db), Some((admin, db)))
            }
        };
        let mut vars: HashMap<String, String> = HashMap::from([
            ("DATABASE_URL".into(), database_url.clone()),
            ("SECRET_KEY".into(), SECRET_KEY.into()),
            ("MAIL_DIR".into(), dir.join("mail").display().to_string()),
            ("DB_MAX_CONNECTIONS".into(), "5".into()),
            ("MAIL_POLL_INTERVAL_MS".into(), "50".into()),
            ("WEBHOOK_POLL_INTERVAL_MS".into(), "50".into()),
            ("EVENT_FEED_DELAY_SECS".into(), "0".into()),
        ]);
        for (k, v) in overrides {
            vars.insert(k.to_string(), v.to_string());
        }
        Self::start(backend, vars, dir, pg).await
    }

    async fn start(
        backend: Backend,
        vars: HashMap<String, String>,
        dir: PathBuf,
        pg: Option<(String, String)>,
    ) -> Self {
        let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("test config");
        let state = app::build_state(config).await.expect("build state");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let server_state = state.clone();
        let server = tokio::spawn(async move {
            app::serve(listener, server_state, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestApp {
            base,
            http: reqwest::Client::new(),
            backend,
            database_url: vars["DATABASE_URL"].clone(),
            state,
            vars,
            dir,
            pg,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// A second instance on the same database, as behind a load balancer.
    pub async fn sibling(&self) -> TestApp {
        let mut s = Self::start(self.backend, self.vars.clone(), self.dir.clone(), None).await;
        s.dir = PathBuf::new();
        s
    }

    /// Stops the server and removes its database.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        if let Some((admin, db)) = self.pg.take() {
            let mut conn = pg_connect(&admin).await;
            let _ = conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))).await;
        }
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.req(method, path);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        read(r.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, token, None).await
    }

    /// Creates an account through the service (there is no public sign-up route), with a unique email.
    pub async fn account(&self, name: &str) -> String {
        let email = format!("{name}-{}@example.com", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        self.state.services.accounts.create(&email, PASSWORD).await.expect("create account");
        email
    }

    pub async fn login(&self, email: &str) -> Value {
        let (status, body) = self.post("/v1/auth/login", None, json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// A new account, logged in, owning a new store.
    pub async fn admin(&self, name: &str) -> Admin {
        let email = self.account(name).await;
        let tokens = self.login(&email).await;
        let token = tokens["access_token"].as_str().unwrap().to_string();
        let (status, store) = self.post("/v1/stores", Some(&token), json!({"name": format!("{name}'s shop")})).await;
        assert_eq!(status, StatusCode::CREATED, "{store}");
        Admin {
            token,
            refresh_token: tokens["refresh_token"].as_str().unwrap().into(),
            store_id: store["id"].as_str().unwrap().into(),
        }
    }
}

/// A test that ends without [`TestApp::stop`] (it returned early, or failed) still removes its
/// database: on a thread of its own, since `Drop` cannot wait on the test's runtime.
impl Drop for TestApp {
    fn drop(&mut self) {
        let Some((admin, db)) = self.pg.take() else { return };
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let mut conn = pg_connect(&admin).await;
                let _ =
                    conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))).await;
            });
        })
        .join();
    }
}

/// The origins `shop_admin` stores allow, so that subscribe links to them pass (§6).
pub const SHOP_ORIGINS: [&str; 2] = ["https://shop.example", "https://s.example"];

impl TestApp {
    /// `admin`, whose store allows links to [`SHOP_ORIGINS`].
    pub async fn shop_admin(&self, name: &str) -> Admin {
        let admin = self.admin(name).await;
        let (status, body) =
            self.put(&admin.store(""), Some(&admin.token), json!({"allowed_origins": SHOP_ORIGINS})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        admin
    }
}

pub struct Admin {
    pub token: String,
    pub refresh_token: String,
    pub store_id: String,
}

impl Admin {
    pub fn store(&self, rest: &str) -> String {
        format!("/v1/stores/{}{rest}", self.store_id)
    }
}

pub async fn read(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let request_id = resp.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_string());
    assert!(request_id.is_some(), "every response carries x-request-id");
    let text = resp.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_client_error() || status.is_server_error() {
        assert_error_shape(status, &body);
        assert_eq!(body["request_id"].as_str(), request_id.as_deref(), "body and header request ids agree");
    }
    (status, body)
}

/// The contract's error body: code, message, status_code, request_id; validation_errors on 422 only.
pub fn assert_error_shape(status: StatusCode, body: &Value) {
    let code = body["error"].as_str().unwrap_or_else(|| panic!("error code missing in {body}"));
    assert!(!code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{code}");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(body["status_code"].as_u64(), Some(u64::from(status.as_u16())), "{body}");
    assert!(body["request_id"].as_str().is_some_and(|r| !r.is_empty()), "{body}");
    assert_eq!(body.get("validation_errors").is_some(), status == StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

/// Asserts status and error code together.
#[track_caller]
pub fn expect_error(got: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(got.1["error"], code, "{}", got.1);
}

/// Runs each listed case once per backend, as `sqlite::name` and `postgres::name`. A case is an
/// `async fn(&TestApp)` on a fresh default app or, with `run = runner;`, whatever the calling
/// module's `runner(backend, case)` makes of it. The Postgres half is ignored unless run with
/// `-- --include-ignored`, so that without a database it is reported as not run, never as passed.
macro_rules! backend_tests {
    (@cases $run:path; $($name:ident),*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $run($crate::common::Backend::Sqlite, super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "Postgres half: set TEST_DATABASE_URL and pass -- --include-ignored"]
                async fn $name() {
                    $run($crate::common::Backend::Postgres, super::$name).await;
                }
            )*
        }
    };
    (run = $run:ident; $($name:ident),* $(,)?) => {
        backend_tests!(@cases super::$run; $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        backend_tests!(@cases $crate::common::on_fresh_app; $($name),*);
    };
}

/// Runs `case` on a fresh app with the default configuration, then stops it.
pub async fn on_fresh_app(backend: Backend, case: impl AsyncFnOnce(&TestApp)) {
    let app = TestApp::spawn(backend).await;
    case(&app).await;
    app.stop().await;
}

/// A value bound into raw SQL run by a test.
#[derive(Clone, Debug)]
pub enum Bind {
    U(uuid::Uuid),
    S(String),
    I(i64),
    B(Vec<u8>),
}

macro_rules! bind_all {
    ($q:expr, $binds:expr) => {{
        let mut q = $q;
        for b in $binds {
            q = match b {
                Bind::U(v) => q.bind(*v),
                Bind::S(v) => q.bind(v.clone()),
                Bind::I(v) => q.bind(*v),
                Bind::B(v) => q.bind(v.clone()),
            };
        }
        q
    }};
}

impl TestApp {
    /// Runs raw SQL against the app's database on a separate connection (`$n` placeholders); on
    /// Postgres unnamed and in a transaction of its own (see [`pg_connect`]).
    pub async fn exec(&self, sql: &str, binds: &[Bind]) {
        use sqlx::Connection;
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.database_url).await.unwrap();
                bind_all!(sqlx::query(sql), binds).execute(&mut c).await.unwrap();
            }
            Backend::Postgres => {
                let mut c = pg_connect(&self.database_url).await;
                let mut tx = c.begin().await.unwrap();
                bind_all!(sqlx::query(sql), binds).persistent(false).execute(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
            }
        }
    }

    /// A single integer from raw SQL (`SELECT COUNT(*) ...`).
    pub async fn scalar(&self, sql: &str, binds: &[Bind]) -> i64 {
        use sqlx::Connection;
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.database_url).await.unwrap();
                bind_all!(sqlx::query_scalar::<_, i64>(sql), binds).fetch_one(&mut c).await.unwrap()
            }
            Backend::Postgres => {
                let mut c = pg_connect(&self.database_url).await;
                let mut tx = c.begin().await.unwrap();
                let n = bind_all!(sqlx::query_scalar::<_, i64>(sql), binds)
                    .persistent(false)
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                n
            }
        }
    }
}

impl TestApp {
    pub fn mail_dir(&self) -> PathBuf {
        PathBuf::from(&self.vars["MAIL_DIR"])
    }

    /// The raw .eml mails delivered to `to` so far, oldest first.
    pub fn mails_to(&self, to: &str) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.mail_dir()) else { return vec![] };
        let mut files: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        let needle = format!("to: {}", to.to_lowercase());
        files
            .into_iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .filter(|m| m.lines().any(|l| l.trim_end().to_lowercase() == needle))
            .collect()
    }

    /// Waits (up to 10 s) for mail number `n` (1-based) to `to` and returns the code in its subject.
    pub async fn code_for(&self, to: &str, n: usize) -> String {
        for _ in 0..200 {
            let mails = self.mails_to(to);
            if mails.len() >= n {
                return subject_code(&mails[n - 1]);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no mail #{n} to {to} in {}", self.mail_dir().display());
    }
}

/// The 6-digit code leading the Subject header.
pub fn subject_code(mail: &str) -> String {
    let subject = mail.lines().find_map(|l| l.trim_end().strip_prefix("Subject: ")).expect("a Subject header");
    let code: String = subject.chars().take(6).collect();
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "no code in subject {subject:?}");
    code
}

pub fn uuid(v: &Value) -> uuid::Uuid {
    v.as_str().unwrap_or_else(|| panic!("not a uuid: {v}")).parse().unwrap()
}
