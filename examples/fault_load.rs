//! The load and the checks of the fault scripts (scripts/faults/, docs/reliability.md).
//!
//!   fault_load mixed  --base URL[,URL2] --store ID --key sk_.. --acks FILE [--sink LOG] [--secs 30]
//!                     [--max 100000] [--concurrency 8] [--ops guest,connect,code,confirm,merge,update]
//!   fault_load check  --base URL --store ID --key sk_.. --acks FILE --sink LOG --db URL [--mail-wait 180]
//!   fault_load limits --base URL,URL2 --store ID --key sk_.. --acks FILE [--rounds 10] [--merges 20]
//!
//! `mixed` runs the mixed write load (round-robin over the bases) until `--secs` or `--max`
//! operations, and appends every write the server acknowledged (2xx) to `--acks`, one JSON line
//! each, before it goes on; merges also record their attempt first. It fails (exit 1) on any 5xx
//! other than 503, on a 503 without the error shape, or on an answer slower than `--max-latency`.
//! `check` reads the acks back through the API, checks merges (acknowledged or not) are whole,
//! waits for the outbox to drain and matches it against the counting sink's log by Message-ID
//! (the outbox row's id), compares every audience's `subscriber_count` with its counted active
//! subscriptions, and checks the migration lock is free. `limits` checks the per-email and
//! per-address limits across instances (each burst from its own X-Forwarded-For address, so the
//! servers run with TRUSTED_PROXY_HOPS=1) and races two merges of one pair on two instances.
//! Every loop is bounded in count and time; the load goes where `--base` says (loopback).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;

type Res<T> = Result<T, String>;

struct Args(HashMap<String, String>);

impl Args {
    fn parse() -> (String, Self) {
        let mut it = std::env::args().skip(1);
        let mode = it.next().unwrap_or_default();
        let mut map = HashMap::new();
        while let Some(k) = it.next() {
            let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
            map.insert(k.trim_start_matches("--").to_string(), v);
        }
        (mode, Self(map))
    }
    fn get(&self, k: &str) -> String {
        self.0.get(k).cloned().unwrap_or_else(|| panic!("--{k} is required"))
    }
    fn or(&self, k: &str, d: &str) -> String {
        self.0.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    fn num(&self, k: &str, d: u64) -> u64 {
        self.0.get(k).map(|v| v.parse().unwrap_or_else(|_| panic!("--{k} is a number"))).unwrap_or(d)
    }
}

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    answered: AtomicU64,
    unanswered: AtomicU64,
    by_status: Mutex<HashMap<u16, u64>>,
    server_errors: AtomicU64,
    bad_shape: AtomicU64,
    too_slow: AtomicU64,
    max_latency_ms: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Stats {
    fn sample(&self, s: String) {
        let mut v = self.samples.lock().unwrap();
        if v.len() < 10 {
            v.push(s);
        }
    }
}

struct Ctx {
    http: reqwest::Client,
    bases: Vec<String>,
    rr: AtomicUsize,
    store: String,
    key: String,
    audience: String,
    tag: String,
    seq: AtomicU64,
    acks: Mutex<std::fs::File>,
    stats: Stats,
    max_latency: Duration,
    sink: Option<String>,
    /// Acknowledged double opt-in subscribes waiting for their confirmation: (profile, email).
    pending: Mutex<VecDeque<(String, String)>>,
    /// Confirmation tokens by recipient, read from the sink's log, and how far it was read.
    tokens: Mutex<(u64, HashMap<String, String>)>,
}

enum Answer {
    Got(StatusCode, Value),
    Lost,
}

impl Answer {
    fn ok(&self) -> Option<&Value> {
        match self {
            Answer::Got(s, v) if s.is_success() => Some(v),
            _ => None,
        }
    }
    fn status(&self) -> Option<u16> {
        match self {
            Answer::Got(s, _) => Some(s.as_u16()),
            Answer::Lost => None,
        }
    }
}

fn error_shape_ok(status: StatusCode, body: &Value) -> bool {
    body["error"].as_str().is_some_and(|c| !c.is_empty() && c.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        && body["message"].is_string()
        && body["status_code"].as_u64() == Some(u64::from(status.as_u16()))
        && body["request_id"].as_str().is_some_and(|r| !r.is_empty())
}

impl Ctx {
    fn new(args: &Args, acks_append: bool) -> Arc<Self> {
        let acks = std::fs::OpenOptions::new()
            .create(true)
            .append(acks_append)
            .write(true)
            .truncate(!acks_append)
            .open(args.get("acks"))
            .expect("open --acks");
        let timeout = Duration::from_secs(args.num("timeout", 40));
        Arc::new(Self {
            http: reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(64).build().unwrap(),
            bases: args.get("base").split(',').map(|b| b.trim_end_matches('/').to_string()).collect(),
            rr: AtomicUsize::new(0),
            store: args.get("store"),
            key: args.get("key"),
            audience: args.or("audience", "news"),
            tag: args.or("tag", &format!("{}", std::process::id())),
            seq: AtomicU64::new(0),
            acks: Mutex::new(acks),
            stats: Stats::default(),
            max_latency: Duration::from_secs(args.num("max-latency", 35)),
            sink: args.0.get("sink").cloned(),
            pending: Mutex::new(VecDeque::new()),
            tokens: Mutex::new((0, HashMap::new())),
        })
    }

    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn email(&self, what: &str) -> String {
        format!("{what}-{}-{}@fault.example", self.tag, self.next())
    }

    fn ack(&self, v: Value) {
        let mut f = self.acks.lock().unwrap();
        writeln!(f, "{v}").expect("write an ack");
    }

    fn base(&self) -> &str {
        &self.bases[self.rr.fetch_add(1, Ordering::Relaxed) % self.bases.len()]
    }

    fn store_path(&self, rest: &str) -> String {
        format!("/v1/stores/{}{rest}", self.store)
    }

    /// One request to the next instance. `auth`: None, the admin key, or a profile token.
    async fn call(&self, method: Method, path: &str, auth: Option<&str>, body: Option<Value>) -> Answer {
        let base = self.base().to_string();
        self.call_at(&base, method, path, auth, body, None).await
    }

    async fn call_at(
        &self,
        base: &str,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
        forwarded_for: Option<&str>,
    ) -> Answer {
        let mut r = self.http.request(method.clone(), format!("{base}{path}"));
        if let Some(a) = auth {
            r = r.bearer_auth(a);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        if let Some(f) = forwarded_for {
            r = r.header("x-forwarded-for", f);
        }
        let started = Instant::now();
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        let resp = match r.send().await {
            Ok(r) => r,
            Err(e) => {
                self.stats.unanswered.fetch_add(1, Ordering::Relaxed);
                if e.is_timeout() {
                    self.stats.too_slow.fetch_add(1, Ordering::Relaxed);
                    self.stats.sample(format!("{method} {path}: no answer within the client timeout"));
                }
                // The server is down (killed): do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Answer::Lost;
            }
        };
        let status = resp.status();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(_) => {
                self.stats.unanswered.fetch_add(1, Ordering::Relaxed);
                return Answer::Lost;
            }
        };
        let latency = started.elapsed();
        self.stats.answered.fetch_add(1, Ordering::Relaxed);
        self.stats.max_latency_ms.fetch_max(latency.as_millis() as u64, Ordering::Relaxed);
        *self.stats.by_status.lock().unwrap().entry(status.as_u16()).or_default() += 1;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if latency > self.max_latency {
            self.stats.too_slow.fetch_add(1, Ordering::Relaxed);
            self.stats.sample(format!("{method} {path}: {status} after {latency:?}"));
        }
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            self.stats.server_errors.fetch_add(1, Ordering::Relaxed);
            self.stats.sample(format!("{method} {path}: {status} {body}"));
        }
        if (status.is_client_error() || status.is_server_error()) && !error_shape_ok(status, &body) {
            self.stats.bad_shape.fetch_add(1, Ordering::Relaxed);
            self.stats.sample(format!("{method} {path}: {status} without the error shape: {body}"));
        }
        Answer::Got(status, body)
    }

    async fn admin(&self, method: Method, rest: &str, body: Option<Value>) -> Answer {
        self.call(method, &self.store_path(rest), Some(&self.key.clone()), body).await
    }

    /// Refreshes the confirmation tokens from the sink's log (lines appended since the last read).
    fn read_tokens(&self) {
        let Some(path) = &self.sink else { return };
        let Ok(text) = std::fs::read(path) else { return };
        let mut t = self.tokens.lock().unwrap();
        let from = (t.0 as usize).min(text.len());
        let Some(end) = text[from..].iter().rposition(|b| *b == b'\n').map(|i| from + i + 1) else { return };
        for line in String::from_utf8_lossy(&text[from..end]).lines() {
            let Ok(m) = serde_json::from_str::<Value>(line) else { continue };
            if let (Some(token), Some(to)) = (token_in(m["text"].as_str().unwrap_or("")), m["rcpt"][0].as_str()) {
                t.1.insert(to.to_lowercase(), token);
            }
        }
        t.0 = end as u64;
    }
}

/// The `token=` of a confirmation link in a mail's text.
fn token_in(text: &str) -> Option<String> {
    let at = text.find("/audiences/confirm?token=")? + "/audiences/confirm?token=".len();
    let token: String =
        text[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '%').collect();
    (!token.is_empty()).then_some(token)
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

// ---- the mixed load ------------------------------------------------------------------------

async fn op(ctx: &Ctx, name: &str) {
    match name {
        // initialize, then an order link on the guest (admin).
        "guest" => {
            let a = ctx.call(Method::POST, &ctx.store_path("/profiles/initialize"), None, Some(json!({}))).await;
            let Some(v) = a.ok() else { return };
            let id = s(v, "profile_id");
            ctx.ack(json!({"op": "profile", "id": id}));
            let order = format!("o-{}-{}", ctx.tag, ctx.next());
            let a = ctx.admin(Method::POST, &format!("/profiles/{id}/orders"), Some(json!({"order_id": order}))).await;
            if a.ok().is_some() {
                ctx.ack(json!({"op": "order", "profile": id, "order": order}));
            }
        }
        // connect a new address, then a double opt-in subscribe by that session.
        "connect" => {
            let email = ctx.email("c");
            let a =
                ctx.call(Method::POST, &ctx.store_path("/profiles/connect"), None, Some(json!({"email": email}))).await;
            let Some(v) = a.ok() else { return };
            let (id, token) = (s(v, "profile_id"), s(v, "access_token"));
            ctx.ack(json!({"op": "connect", "id": id, "email": email}));
            let path = ctx.store_path(&format!("/audiences/{}/subscribe", ctx.audience));
            let a = ctx.call(Method::POST, &path, Some(&token), Some(json!({"profile_id": id}))).await;
            if a.ok().is_some() {
                ctx.ack(json!({"op": "subscribe", "profile": id, "email": email}));
                ctx.pending.lock().unwrap().push_back((id, email));
            }
        }
        "code" => {
            let email = ctx.email("k");
            let a = ctx
                .call(Method::POST, &ctx.store_path("/profiles/auth/code"), None, Some(json!({"email": email})))
                .await;
            if a.ok().is_some() {
                ctx.ack(json!({"op": "code", "email": email}));
            }
        }
        // confirm the oldest acknowledged subscribe whose mail has arrived.
        "confirm" => {
            ctx.read_tokens();
            let found = {
                let mut pending = ctx.pending.lock().unwrap();
                let tokens = ctx.tokens.lock().unwrap();
                let at = pending.iter().position(|(_, e)| tokens.1.contains_key(e));
                at.and_then(|i| pending.remove(i)).map(|(p, e)| (p, tokens.1[&e].clone()))
            };
            let Some((profile, token)) = found else { return };
            let a = ctx
                .call(Method::POST, &ctx.store_path("/audiences/confirm"), None, Some(json!({"token": token})))
                .await;
            if a.ok().is_some() {
                ctx.ack(json!({"op": "confirm", "profile": profile}));
            }
        }
        "merge" => {
            let Some((target, source, order)) = merge_pair(ctx).await else { return };
            ctx.ack(json!({"op": "merge_attempt", "target": target, "source": source, "order": order}));
            let a =
                ctx.admin(Method::POST, &format!("/profiles/{target}/merge"), Some(json!({"source_id": source}))).await;
            if a.ok().is_some() {
                ctx.ack(json!({"op": "merge", "target": target, "source": source, "order": order}));
            }
        }
        "update" => {
            let a = ctx.admin(Method::POST, "/profiles", Some(json!({"email": ctx.email("u")}))).await;
            let Some(v) = a.ok() else { return };
            let id = s(v, "id");
            ctx.ack(json!({"op": "profile", "id": id}));
            let email = ctx.email("u2");
            let a = ctx.admin(Method::PUT, &format!("/profiles/{id}"), Some(json!({"email": email}))).await;
            if a.ok().is_some() {
                ctx.ack(json!({"op": "update", "id": id, "email": email}));
            }
        }
        other => panic!("unknown op {other}"),
    }
}

/// Two admin-made profiles; the source gets an order link and an (admin-added, active)
/// subscription, so a merge has something to move. → (target, source, order)
async fn merge_pair(ctx: &Ctx) -> Option<(String, String, String)> {
    let target = s(ctx.admin(Method::POST, "/profiles", Some(json!({"email": ctx.email("t")}))).await.ok()?, "id");
    ctx.ack(json!({"op": "profile", "id": target}));
    let source = s(ctx.admin(Method::POST, "/profiles", Some(json!({"email": ctx.email("s")}))).await.ok()?, "id");
    let order = format!("m-{}-{}", ctx.tag, ctx.next());
    ctx.admin(Method::POST, &format!("/profiles/{source}/orders"), Some(json!({"order_id": order}))).await.ok()?;
    let path = format!("/audiences/{}/subscribers", ctx.audience);
    ctx.admin(Method::POST, &path, Some(json!({"profile_id": source}))).await.ok()?;
    Some((target, source, order))
}

fn summary(ctx: &Ctx, started: Instant) -> (Value, bool) {
    let st = &ctx.stats;
    let secs = started.elapsed().as_secs_f64();
    let sent = st.sent.load(Ordering::Relaxed);
    let answered = st.answered.load(Ordering::Relaxed);
    let mut by_status: Vec<(u16, u64)> = st.by_status.lock().unwrap().iter().map(|(k, v)| (*k, *v)).collect();
    by_status.sort();
    let (server_errors, bad_shape, too_slow) = (
        st.server_errors.load(Ordering::Relaxed),
        st.bad_shape.load(Ordering::Relaxed),
        st.too_slow.load(Ordering::Relaxed),
    );
    let v = json!({
        "requests": sent,
        "answered": answered,
        "unanswered": st.unanswered.load(Ordering::Relaxed),
        "seconds": (secs * 10.0).round() / 10.0,
        "answered_per_sec": (answered as f64 / secs).round(),
        "by_status": by_status.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "server_errors_not_503": server_errors,
        "error_bodies_without_shape": bad_shape,
        "slower_than_limit": too_slow,
        "max_latency_ms": st.max_latency_ms.load(Ordering::Relaxed),
        "samples": *st.samples.lock().unwrap(),
    });
    (v, server_errors == 0 && bad_shape == 0 && too_slow == 0)
}

async fn mixed(args: Args) -> bool {
    let ctx = Ctx::new(&args, true);
    let ops: Vec<String> =
        args.or("ops", "guest,connect,code,confirm,merge,update").split(',').map(String::from).collect();
    let (secs, max, workers) = (args.num("secs", 30), args.num("max", 100_000), args.num("concurrency", 8));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = vec![];
    for _ in 0..workers {
        let (ctx, ops, done) = (ctx.clone(), ops.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = done.fetch_add(1, Ordering::Relaxed);
                if n >= max || Instant::now() >= deadline {
                    break;
                }
                op(&ctx, &ops[n as usize % ops.len()]).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (mut v, ok) = summary(&ctx, started);
    v["operations"] = json!(done.load(Ordering::Relaxed).min(max));
    println!("{v}");
    ok
}

// ---- the checks ----------------------------------------------------------------------------

enum Db {
    Pg(sqlx::PgConnection),
    Lite(sqlx::SqliteConnection),
}

impl Db {
    async fn connect(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            Db::Lite(sqlx::SqliteConnection::connect(url).await.expect("open the SQLite database"))
        } else {
            Db::Pg(sqlx::PgConnection::connect(url).await.expect("connect to Postgres"))
        }
    }
    async fn int(&mut self, sql: &'static str) -> i64 {
        match self {
            Db::Pg(c) => sqlx::query_scalar::<_, i64>(sql).fetch_one(c).await.expect(sql),
            Db::Lite(c) => sqlx::query_scalar::<_, i64>(sql).fetch_one(c).await.expect(sql),
        }
    }
    async fn ids(&mut self, sql: &'static str) -> Vec<uuid::Uuid> {
        match self {
            Db::Pg(c) => sqlx::query_scalar::<_, uuid::Uuid>(sql).fetch_all(c).await.expect(sql),
            Db::Lite(c) => sqlx::query_scalar::<_, uuid::Uuid>(sql).fetch_all(c).await.expect(sql),
        }
    }
    /// The migration lock is free: Postgres' advisory lock can be taken at once; SQLite's
    /// write lock (what migrations hold) too.
    async fn migration_lock_free(&mut self) -> bool {
        match self {
            Db::Pg(c) => {
                let got: bool =
                    sqlx::query_scalar("SELECT pg_try_advisory_lock(7311240117)").fetch_one(&mut *c).await.unwrap();
                if got {
                    sqlx::query("SELECT pg_advisory_unlock(7311240117)").execute(&mut *c).await.unwrap();
                }
                got
            }
            Db::Lite(c) => {
                let ok = sqlx::query("BEGIN IMMEDIATE").execute(&mut *c).await.is_ok();
                let _ = sqlx::query("ROLLBACK").execute(&mut *c).await;
                ok
            }
        }
    }
}

async fn has_order(ctx: &Ctx, profile: &str, order: &str) -> Option<bool> {
    match ctx.admin(Method::GET, &format!("/profiles/{profile}/orders?limit=200"), None).await {
        Answer::Got(s, v) if s.is_success() => {
            Some(v["items"].as_array().is_some_and(|i| i.iter().any(|o| o["order_id"] == order)))
        }
        _ => None,
    }
}

async fn subscription(ctx: &Ctx, profile: &str) -> Option<String> {
    let v = ctx.admin(Method::GET, &format!("/profiles/{profile}/export"), None).await;
    let v = v.ok()?;
    v["subscriptions"].as_array()?.first().map(|s| s["status"].as_str().unwrap_or_default().to_string())
}

async fn exists(ctx: &Ctx, profile: &str) -> Option<Value> {
    ctx.admin(Method::GET, &format!("/profiles/{profile}"), None).await.ok().cloned()
}

/// Whether one acknowledged write (or merge attempt) is there and whole; Err names what is wrong.
async fn verify(ctx: &Ctx, ack: &Value, delivered_to: &HashSet<String>) -> Res<()> {
    let op = s(ack, "op");
    let fail = |what: &str| Err(format!("{op}: {what}: {ack}"));
    match op.as_str() {
        "profile" => exists(ctx, &s(ack, "id")).await.map(drop).ok_or("missing").or_else(fail),
        "connect" | "update" => match exists(ctx, &s(ack, "id")).await {
            Some(p) if p["email"].as_str().map(str::to_lowercase) == Some(s(ack, "email")) => Ok(()),
            Some(p) => fail(&format!("email is {}", p["email"])),
            None => fail("profile missing"),
        },
        "order" => match has_order(ctx, &s(ack, "profile"), &s(ack, "order")).await {
            Some(true) => Ok(()),
            _ => fail("order link missing"),
        },
        "subscribe" => match subscription(ctx, &s(ack, "profile")).await.as_deref() {
            Some("pending" | "active") if delivered_to.contains(&s(ack, "email")) => Ok(()),
            Some("pending" | "active") => fail("no confirmation mail delivered"),
            other => fail(&format!("subscription is {other:?}")),
        },
        "confirm" => match subscription(ctx, &s(ack, "profile")).await.as_deref() {
            Some("active") => Ok(()),
            other => fail(&format!("subscription is {other:?}")),
        },
        "code" => match delivered_to.contains(&s(ack, "email")) {
            true => Ok(()),
            false => fail("no code mail delivered"),
        },
        // Acknowledged: the source is gone and everything it had is on the target.
        "merge" => {
            let (t, src, order) = (s(ack, "target"), s(ack, "source"), s(ack, "order"));
            if exists(ctx, &src).await.is_some() {
                return fail("source still exists");
            }
            if has_order(ctx, &t, &order).await != Some(true) {
                return fail("order not on the target");
            }
            match subscription(ctx, &t).await.as_deref() {
                Some("active") => Ok(()),
                other => fail(&format!("target subscription is {other:?}")),
            }
        }
        // Any attempt, acknowledged or not: all or nothing.
        "merge_attempt" => {
            let (t, src, order) = (s(ack, "target"), s(ack, "source"), s(ack, "order"));
            let source_there = exists(ctx, &src).await.is_some();
            let on_target = has_order(ctx, &t, &order).await == Some(true);
            let on_source = source_there && has_order(ctx, &src, &order).await == Some(true);
            match (source_there, on_target, on_source) {
                (false, true, false) => Ok(()),
                (true, false, true) => Ok(()), // not merged: the source keeps its order
                _ => fail(&format!("half-merged: source there {source_there}, order on target {on_target}")),
            }
        }
        other => fail(&format!("unknown op {other}")),
    }
}

/// The sink's log: (Message-ID → copies, recipients of every message).
fn read_sink(path: &str) -> (HashMap<String, u64>, HashSet<String>, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut ids, mut to, mut total) = (HashMap::new(), HashSet::new(), 0);
    for line in text.lines() {
        let Ok(m) = serde_json::from_str::<Value>(line) else { continue };
        total += 1;
        *ids.entry(s(&m, "message_id")).or_default() += 1;
        for r in m["rcpt"].as_array().into_iter().flatten() {
            to.insert(r.as_str().unwrap_or_default().to_lowercase());
        }
    }
    (ids, to, total)
}

async fn check(args: Args) -> bool {
    // The check reads --acks; the context's own ack file is unused.
    let mut own = args.0.clone();
    own.insert("acks".into(), "/dev/null".into());
    let ctx = Ctx::new(&Args(own), true);
    let acks_text = std::fs::read_to_string(args.get("acks")).expect("read --acks");
    let acks: Vec<Value> = acks_text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let sink = args.get("sink");
    let mut db = Db::connect(&args.get("db")).await;
    let mut ok = true;

    // 1. The outbox drains: every queued mail sent (bounded wait), none given up on.
    let wait = Duration::from_secs(args.num("mail-wait", 180));
    let started = Instant::now();
    let mut unsent = db.int("SELECT COUNT(*) FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL").await;
    while unsent > 0 && started.elapsed() < wait {
        tokio::time::sleep(Duration::from_millis(500)).await;
        unsent = db.int("SELECT COUNT(*) FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL").await;
    }
    let drained_in = started.elapsed().as_secs_f64();
    let failed = db.int("SELECT COUNT(*) FROM mail_outbox WHERE failed_at IS NOT NULL").await;
    let outbox: Vec<uuid::Uuid> = db.ids("SELECT id FROM mail_outbox").await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the sink's last lines
    let (copies, delivered_to, received) = read_sink(&sink);
    let by_outbox_id: HashMap<String, u64> = copies
        .iter()
        .filter_map(|(mid, n)| Some((mid.trim_start_matches('<').split('@').next()?.to_string(), *n)))
        .collect();
    // The Message-ID is `<outbox id (simple form)@sender domain>` (mail::outbox::message_id).
    let outbox_ids: HashSet<String> = outbox.iter().map(|u| u.simple().to_string()).collect();
    let missing = outbox_ids.iter().filter(|id| !by_outbox_id.contains_key(*id)).count();
    let duplicated: u64 =
        by_outbox_id.iter().filter(|(id, _)| outbox_ids.contains(*id)).map(|(_, n)| n.saturating_sub(1)).sum();
    let strays = by_outbox_id.keys().filter(|id| !outbox_ids.contains(*id)).count();
    // A kill -9 between the SMTP server's 250 and the row marked sent leaves the row leased; it is
    // sent again when the lease ends, with the same Message-ID (so receivers that dedupe drop it).
    // Only the kill script allows those, at most one claimed batch per kill.
    let allowed = args.num("allow-resends", 0);
    let mail_ok = unsent == 0 && failed == 0 && missing == 0 && duplicated <= allowed && strays == 0;
    ok &= mail_ok;
    println!(
        "mail: queued {} delivered {} duplicated {duplicated} (same Message-ID; allowed {allowed}) missing {missing} \
         unsent {unsent} failed {failed} strays {strays} (sink received {received} messages; outbox drained \
         {drained_in:.1}s after the check began) {}",
        outbox_ids.len(),
        outbox_ids.len() - missing,
        if mail_ok { "OK" } else { "FAIL" }
    );

    // 2. Every acknowledged write, and every merge attempt, read back through the API.
    let mut found: HashMap<String, (u64, u64)> = HashMap::new();
    let mut problems = vec![];
    let acks = Arc::new(acks);
    let results = Arc::new(Mutex::new(vec![]));
    let next = Arc::new(AtomicUsize::new(0));
    let delivered_to = Arc::new(delivered_to);
    let mut tasks = vec![];
    for _ in 0..8 {
        let (ctx, acks, results, next, delivered_to) =
            (ctx.clone(), acks.clone(), results.clone(), next.clone(), delivered_to.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(a) = acks.get(i) else { break };
                let r = verify(&ctx, a, &delivered_to).await;
                results.lock().unwrap().push((s(a, "op"), r));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for (op, r) in results.lock().unwrap().drain(..) {
        let e = found.entry(op).or_default();
        e.0 += 1;
        match r {
            Ok(()) => e.1 += 1,
            Err(p) => problems.push(p),
        }
    }
    let mut ops: Vec<_> = found.iter().collect();
    ops.sort();
    let writes = ops.iter().filter(|(op, _)| *op != "merge_attempt").fold((0, 0), |a, (_, (n, f))| (a.0 + n, a.1 + f));
    println!(
        "writes: acknowledged {} found {} ({}) {}",
        writes.0,
        writes.1,
        ops.iter().map(|(op, (n, f))| format!("{op} {f}/{n}")).collect::<Vec<_>>().join(", "),
        if problems.is_empty() { "OK" } else { "FAIL" }
    );
    for p in problems.iter().take(10) {
        println!("  {p}");
    }
    ok &= problems.is_empty();
    if ctx.stats.server_errors.load(Ordering::Relaxed) > 0 {
        println!("  5xx while checking: {:?}", ctx.stats.samples.lock().unwrap());
        ok = false;
    }

    // 3. subscriber_count equals the counted active subscriptions of every audience.
    let audiences = db.int("SELECT COUNT(*) FROM audiences").await;
    let wrong = db
        .int(
            "SELECT COUNT(*) FROM audiences a WHERE a.subscriber_count <> (SELECT COUNT(*) FROM subscriptions s
             WHERE s.store_id = a.store_id AND s.audience_id = a.id AND s.status IN ('active', 'cancellation_scheduled'))",
        )
        .await;
    let counted = db.int("SELECT CAST(COALESCE(SUM(subscriber_count), 0) AS BIGINT) FROM audiences").await;
    println!(
        "subscriber_count: {audiences} audiences, {counted} counted, {wrong} wrong {}",
        if wrong == 0 { "OK" } else { "FAIL" }
    );
    ok &= wrong == 0;

    // 4. The migration lock is free.
    let free = db.migration_lock_free().await;
    println!("migration lock: {}", if free { "free OK" } else { "HELD FAIL" });
    ok &= free;
    ok
}

// ---- limits and merge races across instances -----------------------------------------------

fn window(secs: u64) -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / secs
}

/// Fires `n` requests at once, alternating instances, all from `addr`; → statuses.
async fn burst(ctx: &Arc<Ctx>, n: usize, addr: &str, path: &str, body: impl Fn(usize) -> Value) -> Vec<Option<u16>> {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = vec![];
    for i in 0..n {
        let (ctx, barrier, addr, path, body) =
            (ctx.clone(), barrier.clone(), addr.to_string(), path.to_string(), body(i));
        tasks.push(tokio::spawn(async move {
            let base = ctx.bases[i % ctx.bases.len()].clone();
            barrier.wait().await;
            ctx.call_at(&base, Method::POST, &path, None, Some(body), Some(&addr)).await.status()
        }));
    }
    let mut out = vec![];
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn limits(args: Args) -> bool {
    let ctx = Ctx::new(&args, false);
    let (per_email, per_ip, per_session) = (
        args.num("code-per-email", 5) as usize,
        args.num("code-per-ip", 30) as usize,
        args.num("session-per-address", 60) as usize,
    );
    let (code_window, session_window) = (args.num("code-window", 900), args.num("session-window", 60));
    let rounds = args.num("rounds", 10);
    let started = Instant::now();
    let mut ok = true;
    let code = ctx.store_path("/profiles/auth/code");

    // Per email: per_email + 7 requests for one address at once, over both instances.
    let mut accepted = vec![];
    let mut r = 0;
    while r < rounds && started.elapsed() < Duration::from_secs(120) {
        let (w, email, addr) = (window(code_window), ctx.email("e"), format!("10.1.{}.{}", r / 250, r % 250 + 1));
        let got = burst(&ctx, per_email + 7, &addr, &code, |_| json!({"email": email})).await;
        if window(code_window) != w {
            continue; // a window boundary passed during the burst: its count proves nothing
        }
        let n = got.iter().filter(|s| **s == Some(202)).count();
        let refused = got.iter().filter(|s| **s == Some(429)).count();
        if n != per_email || refused != 7 {
            println!("  per email: round {r}: {n} accepted, {refused} refused of {} ({got:?})", got.len());
            ok = false;
        }
        for _ in 0..n {
            ctx.ack(json!({"op": "code", "email": email}));
        }
        accepted.push(n);
        r += 1;
    }
    println!(
        "per-email code limit ({per_email}): {} bursts of {} over {} instances, accepted per burst {:?} {}",
        accepted.len(),
        per_email + 7,
        ctx.bases.len(),
        accepted,
        if accepted.iter().all(|n| *n == per_email) { "OK" } else { "FAIL" }
    );

    // Per address: per_ip + 15 code requests for distinct emails from one address.
    loop {
        let (w, addr) = (window(code_window), format!("10.2.0.{}", ctx.next() % 250 + 1));
        let emails: Vec<String> = (0..per_ip + 15).map(|_| ctx.email("ip")).collect();
        let got = burst(&ctx, emails.len(), &addr, &code, |i| json!({"email": emails[i]})).await;
        if window(code_window) != w && started.elapsed() < Duration::from_secs(150) {
            continue;
        }
        let n = got.iter().filter(|s| **s == Some(202)).count();
        for (i, st) in got.iter().enumerate() {
            if *st == Some(202) {
                ctx.ack(json!({"op": "code", "email": emails[i]}));
            }
        }
        println!(
            "per-address code limit ({per_ip}): {n} of {} accepted {}",
            got.len(),
            if n == per_ip { "OK" } else { "FAIL" }
        );
        ok &= n == per_ip;
        break;
    }

    // Sessions per address: per_session + 30 initializes at once.
    loop {
        let (w, addr) = (window(session_window), format!("10.3.0.{}", ctx.next() % 250 + 1));
        let got = burst(&ctx, per_session + 30, &addr, &ctx.store_path("/profiles/initialize"), |_| json!({})).await;
        if window(session_window) != w && started.elapsed() < Duration::from_secs(150) {
            continue;
        }
        let n = got.iter().filter(|s| s.is_some_and(|s| (200..300).contains(&s))).count();
        println!(
            "per-address session limit ({per_session}): {n} of {} accepted {}",
            got.len(),
            if n == per_session { "OK" } else { "FAIL" }
        );
        ok &= n == per_session;
        break;
    }

    // Two merges of one pair at once, one per instance: one wins, the other 404/409.
    let merges = args.num("merges", 20);
    let (mut won, mut lost, mut bad) = (0, 0, 0);
    for _ in 0..merges {
        if started.elapsed() > Duration::from_secs(170) {
            break;
        }
        let Some((target, source, order)) = merge_pair(&ctx).await else {
            bad += 1;
            continue;
        };
        ctx.ack(json!({"op": "merge_attempt", "target": target, "source": source, "order": order}));
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mut tasks = vec![];
        for i in 0..2 {
            let (ctx, barrier, path) =
                (ctx.clone(), barrier.clone(), ctx.store_path(&format!("/profiles/{target}/merge")));
            let body = json!({"source_id": source});
            tasks.push(tokio::spawn(async move {
                let base = ctx.bases[i % ctx.bases.len()].clone();
                barrier.wait().await;
                ctx.call_at(&base, Method::POST, &path, Some(&ctx.key.clone()), Some(body), None).await.status()
            }));
        }
        let mut got = vec![];
        for t in tasks {
            got.push(t.await.unwrap());
        }
        got.sort();
        match got.as_slice() {
            [Some(200), Some(404 | 409)] => {
                won += 1;
                lost += 1;
                ctx.ack(json!({"op": "merge", "target": target, "source": source, "order": order}));
            }
            other => {
                bad += 1;
                println!("  merge race: {other:?}");
            }
        }
    }
    println!(
        "concurrent merges of one pair on two instances: {merges} races, {won} won, {lost} answered 404/409, {bad} otherwise {}",
        if bad == 0 { "OK" } else { "FAIL" }
    );
    ok &= bad == 0;
    let (v, clean) = summary(&ctx, started);
    println!("{v}");
    ok && clean
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (mode, args) = Args::parse();
    let ok = match mode.as_str() {
        "mixed" => mixed(args).await,
        "check" => check(args).await,
        "limits" => limits(args).await,
        _ => {
            eprintln!("usage: fault_load mixed|check|limits --key value ... (see the file's doc comment)");
            std::process::exit(2);
        }
    };
    std::process::exit(if ok { 0 } else { 1 });
}
