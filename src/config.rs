use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A secret value; `Debug` and `Display` print a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Where the data lives. `Debug` hides a password in a Postgres URL.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite {
        path: PathBuf,
    },
    /// `url` without the `pgbouncer` parameter, which is ours, not the driver's.
    Postgres {
        url: Secret,
        /// `?pgbouncer=true`: the URL points at a pooler in transaction mode (PgBouncer's
        /// `pool_mode = transaction`), where a connection is a different server session from one
        /// transaction to the next; see `repo::db` for what the server does about it.
        pgbouncer: bool,
    },
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (base, query) = url.split_once('?').unwrap_or((url, ""));
            let mut pgbouncer = false;
            let mut rest = vec![];
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=').unwrap_or((pair, "")) {
                    ("pgbouncer", "true") => pgbouncer = true,
                    ("pgbouncer", "false") => pgbouncer = false,
                    ("pgbouncer", _) => return Err("pgbouncer= must be true or false".into()),
                    _ => rest.push(pair),
                }
            }
            let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
            return Ok(Self::Postgres { url: Secret::new(url), pgbouncer });
        }
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| "must start with sqlite:// or postgres://".to_string())?;
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path.starts_with(":memory:") {
            return Err("needs a file path (an in-memory database is not shared between connections)".into());
        }
        Ok(Self::Sqlite { path: PathBuf::from(path) })
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite { path } => write!(f, "sqlite://{}", path.display()),
            Self::Postgres { url, pgbouncer } => {
                let shown = match (url.0.find("://"), url.0.rfind('@')) {
                    (Some(s), Some(at)) if at > s => format!("{}://[redacted]@{}", &url.0[..s], &url.0[at + 1..]),
                    _ => url.0.clone(),
                };
                f.write_str(&shown)?;
                if *pgbouncer {
                    f.write_str(if shown.contains('?') { "&pgbouncer=true" } else { "?pgbouncer=true" })?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Tunable limits; each has an environment variable listed in `.env.example`.
#[derive(Clone, Debug)]
pub struct Limits {
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    pub request_timeout: Duration,
    pub db_max_connections: u32,
    pub code_ttl: Duration,
    pub code_max_attempts: u32,
    pub code_limit_per_email: u32,
    pub code_limit_per_ip: u32,
    pub code_limit_window: Duration,
    pub guest_ttl: Duration,
    pub janitor_interval: Duration,
    pub mail_poll_interval: Duration,
    /// Outbox retries: first delay, ceiling, attempts before a mail is parked.
    pub mail_retry_base: Duration,
    pub mail_retry_max: Duration,
    pub mail_max_attempts: u32,
    /// How long a delivered mail's summary (no body) stays listed.
    pub mail_keep_sent: Duration,
    /// How many trusted proxies append to `X-Forwarded-For`; the client address is the entry this
    /// many places from the right. 0: the socket peer, and the header is ignored.
    pub trusted_proxy_hops: u32,
    /// `POST /v1/auth/login` failures allowed per email and per client address in one window.
    pub login_limit_per_email: u32,
    pub login_limit_per_address: u32,
    pub login_limit_window: Duration,
    /// Password hashes (argon2id, 19 MiB each) running at once; more wait their turn.
    pub password_hash_concurrency: usize,
    /// `initialize` and `connect` per client address in one window.
    pub session_limit_per_address: u32,
    pub session_limit_window: Duration,
    /// A subscription gets at most one confirmation mail in this interval.
    pub confirm_mail_interval: Duration,
    /// Confirmation mails one recipient address may get from one store per day.
    pub confirm_mail_limit_per_recipient: u32,
    /// Budget of one Stripe API call; past it a paid subscribe answers 502 and writes nothing.
    pub stripe_timeout: Duration,
    /// Webhooks (§9.1): how often the worker looks for work, one attempt's deadline, the waits
    /// between attempts, how long an endpoint may fail before it is disabled.
    pub webhook_poll_interval: Duration,
    pub webhook_timeout: Duration,
    pub webhook_retry_schedule: Vec<Duration>,
    pub webhook_disable_after: Duration,
    /// Events older than this are deleted by the janitor (the feed's horizon).
    pub event_retention: Duration,
    /// The feed lists events at least this old (a late commit cannot land behind a cursor).
    pub event_feed_delay: Duration,
    /// getMe answers an instance keeps in memory (Postgres; 0: none), each served again only
    /// after a one-row check that the profile's version has not moved.
    pub me_cache_entries: usize,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub database_url: DatabaseUrl,
    pub public_base_url: String,
    /// Unset is allowed only with SQLite: the key is then generated beside the database file.
    pub secret_key: Option<Secret>,
    pub smtp_url: Option<Secret>,
    pub mail_dir: PathBuf,
    pub mail_from: String,
    /// Whether this instance runs the outbox worker (`MAIL_WORKER`, default true).
    pub mail_worker: bool,
    /// Whether this instance runs the webhook worker (`WEBHOOK_WORKER`, default true).
    pub webhook_worker: bool,
    /// Webhook URLs may be http and point at loopback/private addresses (development, tests).
    pub webhooks_allow_private: bool,
    pub stripe_secret_key: Option<Secret>,
    pub stripe_webhook_secret: Option<Secret>,
    pub stripe_api_base: Option<String>,
    pub log_format: LogFormat,
    /// Origins allowed by CORS on every route (admin dashboards), besides each store's own.
    pub cors_allowed_origins: Vec<String>,
    /// How long a store's `allowed_origins` are cached for CORS; 0 reads them on every request.
    pub cors_origin_cache: Duration,
    pub limits: Limits,
}

/// A bad configuration value: the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

fn bad(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError { var, reason: reason.into() }
}

pub const MIN_SECRET_KEY_BYTES: usize = 32;

impl Config {
    /// Reads the process environment (after `.env`, which `main` loads).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Builds the configuration from any key → value lookup; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| lookup(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let secs_from = |var: &'static str, default: u64, min: u64| -> Result<Duration, ConfigError> {
            match get(var) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if n >= min => Ok(Duration::from_secs(n)),
                    _ if min == 0 => Err(bad(var, "must be a whole number of seconds")),
                    _ => Err(bad(var, "must be a positive whole number of seconds")),
                },
            }
        };
        let secs = |var: &'static str, default: u64| secs_from(var, default, 1);

        let listen_addr: SocketAddr = get("LISTEN_ADDR")
            .unwrap_or_else(|| "127.0.0.1:8080".into())
            .parse()
            .map_err(|_| bad("LISTEN_ADDR", "must be HOST:PORT, e.g. 127.0.0.1:8080"))?;
        let database_url = DatabaseUrl::parse(&get("DATABASE_URL").unwrap_or_else(|| "sqlite://storecrm.db".into()))
            .map_err(|e| bad("DATABASE_URL", e))?;
        let public_base_url = match get("PUBLIC_BASE_URL") {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => u.trim_end_matches('/').to_string(),
            Some(_) => return Err(bad("PUBLIC_BASE_URL", "must be an absolute http(s) URL")),
            None => format!("http://{listen_addr}"),
        };
        let secret_key = get("SECRET_KEY").map(Secret::new);
        if let Some(key) = &secret_key
            && key.expose().len() < MIN_SECRET_KEY_BYTES
        {
            return Err(bad("SECRET_KEY", format!("must be at least {MIN_SECRET_KEY_BYTES} bytes")));
        }
        let smtp_url = get("SMTP_URL").map(Secret::new);
        if let Some(url) = &smtp_url
            && !(url.expose().starts_with("smtp://") || url.expose().starts_with("smtps://"))
        {
            return Err(bad("SMTP_URL", "must start with smtp:// or smtps://"));
        }
        let log_format = match get("LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(bad("LOG_FORMAT", "must be pretty or json")),
        };
        let stripe_api_base = get("STRIPE_API_BASE");
        if let Some(base) = &stripe_api_base
            && !(base.starts_with("http://") || base.starts_with("https://"))
        {
            return Err(bad("STRIPE_API_BASE", "must be an absolute http(s) URL"));
        }

        let count = |var: &'static str, default: u32| -> Result<u32, ConfigError> {
            match get(var) {
                None => Ok(default),
                Some(v) => {
                    v.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| bad(var, "must be a positive whole number"))
                }
            }
        };
        if get("TRUST_FORWARDED_FOR").is_some() {
            return Err(bad(
                "TRUST_FORWARDED_FOR",
                "was replaced by TRUSTED_PROXY_HOPS (the number of proxies in front of the server, e.g. 1)",
            ));
        }
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let limits = Limits {
            access_token_ttl: secs("ACCESS_TOKEN_TTL_SECS", 15 * 60)?,
            refresh_token_ttl: secs("REFRESH_TOKEN_TTL_SECS", 30 * 24 * 3600)?,
            refresh_reuse_grace: secs_from("REFRESH_REUSE_GRACE_SECS", 10, 0)?,
            request_timeout: secs("REQUEST_TIMEOUT_SECS", 30)?,
            db_max_connections: match get("DB_MAX_CONNECTIONS") {
                None => 10,
                Some(v) => v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| bad("DB_MAX_CONNECTIONS", "must be a whole number from 1 to 1000"))?,
            },
            code_ttl: secs("CODE_TTL_SECS", 600)?,
            code_max_attempts: count("CODE_MAX_ATTEMPTS", 5)?,
            code_limit_per_email: count("CODE_LIMIT_PER_EMAIL", 5)?,
            code_limit_per_ip: count("CODE_LIMIT_PER_IP", 30)?,
            code_limit_window: secs("CODE_LIMIT_WINDOW_SECS", 900)?,
            guest_ttl: secs("GUEST_TTL_SECS", 30 * 24 * 3600)?,
            janitor_interval: secs("JANITOR_INTERVAL_SECS", 3600)?,
            mail_poll_interval: match get("MAIL_POLL_INTERVAL_MS") {
                None => Duration::from_millis(500),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 10)
                    .map(Duration::from_millis)
                    .ok_or_else(|| bad("MAIL_POLL_INTERVAL_MS", "must be at least 10 (milliseconds)"))?,
            },
            mail_retry_base: secs("MAIL_RETRY_BASE_SECS", 30)?,
            mail_retry_max: secs("MAIL_RETRY_MAX_SECS", 3600)?,
            mail_max_attempts: match get("MAIL_MAX_ATTEMPTS") {
                None => 12,
                Some(v) => v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| bad("MAIL_MAX_ATTEMPTS", "must be a whole number from 1 to 100"))?,
            },
            mail_keep_sent: secs("MAIL_KEEP_SENT_SECS", 7 * 24 * 3600)?,
            trusted_proxy_hops: match get("TRUSTED_PROXY_HOPS") {
                None => 0,
                Some(v) => v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n <= 10)
                    .ok_or_else(|| bad("TRUSTED_PROXY_HOPS", "must be a whole number from 0 to 10"))?,
            },
            login_limit_per_email: count("LOGIN_LIMIT_PER_EMAIL", 10)?,
            login_limit_per_address: count("LOGIN_LIMIT_PER_ADDRESS", 10)?,
            login_limit_window: secs("LOGIN_LIMIT_WINDOW_SECS", 900)?,
            password_hash_concurrency: count("PASSWORD_HASH_CONCURRENCY", cpus as u32)? as usize,
            session_limit_per_address: count("SESSION_LIMIT_PER_ADDRESS", 60)?,
            session_limit_window: secs("SESSION_LIMIT_WINDOW_SECS", 60)?,
            confirm_mail_interval: secs_from("CONFIRM_MAIL_INTERVAL_SECS", 60, 0)?,
            confirm_mail_limit_per_recipient: count("CONFIRM_MAIL_LIMIT_PER_RECIPIENT", 10)?,
            stripe_timeout: secs("STRIPE_TIMEOUT_SECS", 10)?,
            webhook_poll_interval: match get("WEBHOOK_POLL_INTERVAL_MS") {
                None => Duration::from_millis(1000),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 10)
                    .map(Duration::from_millis)
                    .ok_or_else(|| bad("WEBHOOK_POLL_INTERVAL_MS", "must be at least 10 (milliseconds)"))?,
            },
            webhook_timeout: match secs("WEBHOOK_TIMEOUT_SECS", 10)? {
                t if t <= Duration::from_secs(25) => t,
                _ => return Err(bad("WEBHOOK_TIMEOUT_SECS", "must be from 1 to 25 seconds")),
            },
            webhook_retry_schedule: match get("WEBHOOK_RETRY_SCHEDULE_SECS") {
                None => crate::webhooks::DEFAULT_SCHEDULE_SECS.iter().copied().map(Duration::from_secs).collect(),
                Some(list) => list
                    .split(',')
                    .map(|n| n.trim().parse::<u64>().ok().filter(|n| *n > 0).map(Duration::from_secs))
                    .collect::<Option<Vec<_>>>()
                    .filter(|l| (1..=30).contains(&l.len()))
                    .ok_or_else(|| {
                        bad(
                            "WEBHOOK_RETRY_SCHEDULE_SECS",
                            "must be 1 to 30 comma-separated positive numbers of seconds",
                        )
                    })?,
            },
            webhook_disable_after: secs("WEBHOOK_DISABLE_AFTER_SECS", 5 * 24 * 3600)?,
            event_retention: secs("EVENT_RETENTION_SECS", 30 * 24 * 3600)?,
            event_feed_delay: secs_from("EVENT_FEED_DELAY_SECS", 2, 0)?,
            me_cache_entries: match get("ME_CACHE_ENTRIES") {
                None => 4096,
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= 10_000_000)
                    .ok_or_else(|| bad("ME_CACHE_ENTRIES", "must be a whole number from 0 to 10000000"))?,
            },
        };
        let flag = |var: &'static str, default: bool| match get(var).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(_) => Err(bad(var, "must be true or false")),
        };
        let mail_worker = flag("MAIL_WORKER", true)?;
        let webhook_worker = flag("WEBHOOK_WORKER", true)?;
        let webhooks_allow_private = flag("WEBHOOKS_ALLOW_PRIVATE", false)?;

        let cors_allowed_origins = match get("CORS_ALLOWED_ORIGINS") {
            None => vec![],
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(|o| {
                    crate::domain::OriginPattern::parse(o).map(|p| p.to_string()).map_err(|_| {
                        bad("CORS_ALLOWED_ORIGINS", format!("{o:?} is not an origin such as https://admin.example.com"))
                    })
                })
                .collect::<Result<_, _>>()?,
        };

        Ok(Self {
            listen_addr,
            database_url,
            public_base_url,
            secret_key,
            smtp_url,
            mail_dir: PathBuf::from(get("MAIL_DIR").unwrap_or_else(|| "./mail".into())),
            mail_from: get("MAIL_FROM").unwrap_or_else(|| "storecrm <no-reply@localhost>".into()),
            mail_worker,
            webhook_worker,
            webhooks_allow_private,
            stripe_secret_key: get("STRIPE_SECRET_KEY").map(Secret::new),
            stripe_webhook_secret: get("STRIPE_WEBHOOK_SECRET").map(Secret::new),
            stripe_api_base,
            log_format,
            cors_allowed_origins,
            cors_origin_cache: secs_from("CORS_ORIGIN_CACHE_SECS", 30, 0)?,
            limits,
        })
    }

    /// The master secret: configured, or (SQLite only) read from / generated into
    /// `storecrm.secret` beside the database file with mode 0600.
    pub fn resolve_secret_key(&self) -> anyhow::Result<Secret> {
        if let Some(key) = &self.secret_key {
            return Ok(key.clone());
        }
        let DatabaseUrl::Sqlite { path } = &self.database_url else {
            anyhow::bail!(
                "invalid SECRET_KEY: is required with Postgres (all instances must share it); \
                 generate one with `openssl rand -hex 32`"
            );
        };
        let file = path.parent().unwrap_or(Path::new(".")).join("storecrm.secret");
        match std::fs::read_to_string(&file) {
            Ok(existing) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(&file)?.permissions().mode();
                    anyhow::ensure!(
                        mode & 0o077 == 0,
                        "invalid SECRET_KEY: {} is readable by group or others (mode {:o}); run chmod 600 {0}",
                        file.display(),
                        mode & 0o777
                    );
                }
                let existing = existing.trim().to_string();
                anyhow::ensure!(
                    existing.len() >= MIN_SECRET_KEY_BYTES,
                    "invalid SECRET_KEY: {} holds fewer than {MIN_SECRET_KEY_BYTES} bytes",
                    file.display()
                );
                Ok(Secret::new(existing))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = crate::crypto::random_hex(32);
                write_private(&file, &key)?;
                tracing::info!(file = %file.display(), "generated a new SECRET_KEY");
                Ok(Secret::new(key))
            }
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", file.display())),
        }
    }
}

fn write_private(file: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(file)?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, DatabaseUrl::Sqlite { path: "storecrm.db".into() });
        assert_eq!(c.public_base_url, "http://127.0.0.1:8080");
        assert_eq!(c.limits.access_token_ttl, Duration::from_secs(900));
    }

    #[test]
    fn bad_values_name_the_variable() {
        assert_eq!(cfg(&[("LISTEN_ADDR", "nope")]).unwrap_err().var, "LISTEN_ADDR");
        assert_eq!(cfg(&[("DATABASE_URL", "mysql://x")]).unwrap_err().var, "DATABASE_URL");
        assert_eq!(cfg(&[("SECRET_KEY", "short")]).unwrap_err().var, "SECRET_KEY");
        // Migrating needs no key: it is asked for when the server starts (resolve_secret_key).
        let pg = cfg(&[("DATABASE_URL", "postgres://u:p@h/db")]).unwrap();
        assert!(pg.resolve_secret_key().unwrap_err().to_string().contains("SECRET_KEY"));
        assert_eq!(cfg(&[("LOG_FORMAT", "xml")]).unwrap_err().var, "LOG_FORMAT");
        assert_eq!(cfg(&[("ACCESS_TOKEN_TTL_SECS", "-1")]).unwrap_err().var, "ACCESS_TOKEN_TTL_SECS");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = cfg(&[
            ("DATABASE_URL", "postgres://user:hunter2@db:5432/crm"),
            ("SECRET_KEY", "0123456789abcdef0123456789abcdef-topsecret"),
            ("SMTP_URL", "smtp://u:mailpass@mail:587"),
            ("STRIPE_SECRET_KEY", "sk_test_stripesecret"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        for secret in ["hunter2", "topsecret", "mailpass", "stripesecret"] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        assert!(shown.contains("db:5432/crm"));
    }

    #[test]
    fn pgbouncer_is_read_from_the_url_and_not_passed_to_the_driver() {
        let url = |v: &str| cfg(&[("DATABASE_URL", v)]).map(|c| c.database_url);
        let pg = |u: &str, pgbouncer| DatabaseUrl::Postgres { url: Secret::new(u), pgbouncer };
        assert_eq!(url("postgres://h:6432/crm").unwrap(), pg("postgres://h:6432/crm", false));
        assert_eq!(url("postgres://h:6432/crm?pgbouncer=true").unwrap(), pg("postgres://h:6432/crm", true));
        assert_eq!(
            url("postgres://h:6432/crm?sslmode=require&pgbouncer=true&application_name=x").unwrap(),
            pg("postgres://h:6432/crm?sslmode=require&application_name=x", true)
        );
        assert_eq!(url("postgres://h/crm?pgbouncer=false").unwrap(), pg("postgres://h/crm", false));
        assert_eq!(url("postgres://h/crm?pgbouncer=1").unwrap_err().var, "DATABASE_URL");
        let shown = format!("{:?}", url("postgres://u:secret@h:6432/crm?pgbouncer=true").unwrap());
        assert_eq!(shown, "postgres://[redacted]@h:6432/crm?pgbouncer=true");
    }
}
