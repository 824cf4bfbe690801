//! The `storecrm` binary: `serve` (the default), `migrate`, and the operator's commands (CONTRACT
//! §10). Each command prints one JSON object on stdout, so scripts can read it; errors are one
//! line on stderr that names the fix. Commands log warnings only, unless `-v`.

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use storecrm::app::{self, AppState};
use storecrm::config::{Config, DatabaseUrl, LogFormat};
use storecrm::domain::{Keyset, MailStatus};
use storecrm::error::AppError;
use storecrm::http::auth::Account;
use storecrm::http::mail::Mail;
use storecrm::http::stores::{ApiKey, MemberStore, Store};
use tokio::net::TcpListener;
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "storecrm", version, about = "The CRM of an online store platform")]
struct Cli {
    /// Log at info level (commands other than serve log warnings only).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations, then serve HTTP (the default).
    Serve,
    /// Apply pending migrations and exit (needs no SECRET_KEY).
    Migrate,
    /// Print the OpenAPI document (the one served at /openapi.json); needs no configuration.
    Openapi,
    /// Exit 0 when the server on LISTEN_ADDR answers /readyz with 200 (a container health check).
    Ready,
    /// First run: an account, a store it owns and an API key, in one step
    /// → {"account", "store", "api_key"}; with --env, `export` lines to paste instead.
    Init {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        password: PasswordArgs,
        #[arg(long)]
        store_name: String,
        #[arg(long, default_value = "default")]
        key_name: String,
        /// Print `export STORECRM_STORE_ID=... STORECRM_API_KEY=...` lines instead of JSON.
        #[arg(long)]
        env: bool,
    },
    /// Platform accounts.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Stores.
    Stores {
        #[command(subcommand)]
        command: StoresCommand,
    },
    /// Store API keys.
    ApiKeys {
        #[command(subcommand)]
        command: ApiKeysCommand,
    },
    /// The mail outbox, read from the database: a local mail viewer.
    Mail {
        #[command(subcommand)]
        command: MailCommand,
    },
    /// Export profiles (find's filters or a segment) or an audience's subscribers, streamed from
    /// one snapshot, to standard output or a file; the summary goes to standard error.
    Export {
        #[arg(long)]
        store: Uuid,
        /// `ndjson` or `csv`.
        #[arg(long, value_enum, default_value = "ndjson")]
        format: ExportFormatArg,
        /// As find's `query`.
        #[arg(long)]
        query: Option<String>,
        /// As find's `taxonomy_query` (JSON).
        #[arg(long)]
        taxonomy_query: Option<String>,
        /// `active` or `archived`.
        #[arg(long)]
        status: Option<String>,
        /// A segment's id or key (instead of the filters).
        #[arg(long, conflicts_with_all = ["query", "taxonomy_query", "status"])]
        segment: Option<String>,
        /// Export this audience's subscribers (id or key) instead of profiles.
        #[arg(long, conflicts_with_all = ["query", "taxonomy_query", "segment"])]
        audience: Option<String>,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Import profiles (with taxonomy values and subscriptions) from a CSV or NDJSON file, in
    /// batches of 1,000; progress on standard error, the summary as JSON on standard output.
    Import {
        #[arg(long)]
        store: Uuid,
        /// The file; `-` reads standard input.
        file: std::path::PathBuf,
        /// `csv` or `ndjson`; by default from the file's extension.
        #[arg(long, value_enum)]
        format: Option<ImportFormatArg>,
        /// A JSON file mapping CSV headers: {"columns": {"E-Mail": "email", "Tags": "traits.tags"}}.
        #[arg(long)]
        mapping: Option<std::path::PathBuf>,
        /// Validate and count only; nothing is written.
        #[arg(long)]
        dry_run: bool,
        /// What to do with a row whose email is a profile already.
        #[arg(long, value_enum, default_value = "update")]
        on_existing: OnExistingArg,
    },
    /// Insert synthetic profiles with taxonomy values (benchmarks, load tests) → {"seeded": {...}}
    Seed {
        #[arg(long)]
        store: Uuid,
        #[arg(long, default_value_t = 10_000)]
        profiles: u64,
        /// Profiles per transaction.
        #[arg(long, default_value_t = 2_000)]
        batch: usize,
        /// Transactions in flight at once, each on its own connection (Postgres; SQLite takes one).
        #[arg(long, default_value_t = 2)]
        parallel: usize,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ImportFormatArg {
    Csv,
    Ndjson,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnExistingArg {
    Update,
    Skip,
}

/// The CLI's import progress: a line redrawn in place on a terminal, a plain line per 10,000
/// rows otherwise.
struct CliProgress {
    total: Option<u64>,
    terminal: bool,
    started: std::time::Instant,
}

#[async_trait::async_trait]
impl storecrm::services::imports::Progress for CliProgress {
    async fn batch(
        &mut self,
        importer: &mut storecrm::services::imports::Importer,
        bytes: u64,
    ) -> Result<(), AppError> {
        importer.flush().await?;
        let s = &importer.summary;
        let rate = s.rows as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let pct = self.total.filter(|t| *t > 0).map(|t| format!(" {:5.1}%", bytes as f64 * 100.0 / t as f64));
        let line = format!(
            "{}{} rows: {} created, {} updated, {} skipped, {} failed ({rate:.0} rows/s)",
            pct.unwrap_or_default(),
            s.rows,
            s.created,
            s.updated,
            s.skipped,
            s.failed
        );
        if self.terminal {
            eprint!("\r{line}\x1b[K");
        } else if s.rows.is_multiple_of(10_000) {
            eprintln!("{}", line.trim_start());
        }
        Ok(())
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormatArg {
    Ndjson,
    Csv,
}

/// A password: on standard input (`--password-stdin`), or, visible in the process list, `--password`.
#[derive(clap::Args)]
struct PasswordArgs {
    /// The password (visible in the process list; prefer --password-stdin).
    #[arg(long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
}

impl PasswordArgs {
    fn read(self) -> anyhow::Result<String> {
        match (self.password, self.password_stdin) {
            (Some(p), _) => Ok(p),
            (None, true) => {
                let mut buf = String::new();
                std::io::stdin().read_to_string(&mut buf)?;
                Ok(buf.trim_end_matches(['\r', '\n']).to_string())
            }
            (None, false) => anyhow::bail!(
                "no password: pipe it in with --password-stdin (echo 'a long password' | storecrm ... --password-stdin)"
            ),
        }
    }
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// Create an account → {"account": {...}}
    Create {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Give an account a new password → {"account": {...}}
    SetPassword {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
}

#[derive(Subcommand)]
enum StoresCommand {
    /// Create a store owned by an existing account → {"store": {...}}
    Create {
        #[arg(long)]
        name: String,
        /// The owner's account email.
        #[arg(long)]
        owner: String,
    },
    /// Every store, or an account's → {"stores": [...]}
    List {
        /// Only the stores of this account (with its role).
        #[arg(long)]
        owner: Option<String>,
    },
}

#[derive(Subcommand)]
enum ApiKeysCommand {
    /// Create an API key for a store → {"api_key": {"id", "name", "prefix", "key"}}
    Create {
        #[arg(long)]
        store: Uuid,
        #[arg(long)]
        name: String,
    },
    /// A store's keys, without secrets → {"api_keys": [...]}
    List {
        #[arg(long)]
        store: Uuid,
    },
    /// Revoke a key at once → {"revoked": true}
    Revoke {
        #[arg(long)]
        store: Uuid,
        #[arg(long)]
        id: Uuid,
    },
}

#[derive(Subcommand)]
enum MailCommand {
    /// The outbox, newest first → {"mail": [...]}
    List {
        /// queued, sent or failed.
        #[arg(long)]
        status: Option<MailStatus>,
        /// One store's mail only.
        #[arg(long)]
        store: Option<Uuid>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One mail, decoded; a delivered mail keeps no body → {"mail": {...}, "message": {...}|null}
    Show { id: Uuid },
}

fn init_tracing(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!("shutting down: draining in-flight requests");
}

fn print(value: Value) {
    println!("{value}");
}

/// An error of a service as one line for a person at a terminal.
fn describe(e: &AppError) -> String {
    match e {
        AppError::Internal(cause) => format!("internal error: {cause:#}"),
        other => other.to_string(),
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    if let Command::Migrate = command {
        let db = storecrm::repo::Database::connect(&config.database_url, 2).await?;
        let report = db.migrate().await?;
        print(json!({ "migrated": report }));
        return Ok(());
    }
    let state: AppState = app::build_state(config).await?;
    let services = &state.services;
    let fail = |e: AppError| anyhow::anyhow!(describe(&e));
    let no_store =
        |store: Uuid| move |_| anyhow::anyhow!("no store has the id {store} (storecrm stores list shows them)");
    match command {
        Command::Serve | Command::Migrate | Command::Openapi | Command::Ready => {
            let addr = state.config.listen_addr;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on LISTEN_ADDR {addr}: {e}"))?;
            tracing::info!(addr = %listener.local_addr()?, docs = %format!("{}/docs", state.config.public_base_url), "storecrm listening");
            app::serve(listener, state.clone(), shutdown_signal()).await?;
        }
        Command::Init { email, password, store_name, key_name, env } => {
            let password = password.read()?;
            let account = services.accounts.create(&email, &password).await.map_err(fail)?;
            let store = services.stores.create(account.id, &store_name).await.map_err(fail)?;
            let key = services.stores.create_api_key(store.id, &key_name).await.map_err(fail)?;
            if env {
                println!("export STORECRM_STORE_ID={}", store.id);
                println!("export STORECRM_API_KEY={}", key.secret);
            } else {
                let k = key.key;
                print(json!({
                    "account": Account::from(account),
                    "store": Store::from(store),
                    "api_key": { "id": k.id, "name": k.name, "prefix": k.prefix, "key": key.secret },
                }));
            }
        }
        Command::Accounts { command: AccountsCommand::Create { email, password } } => {
            let account = services.accounts.create(&email, &password.read()?).await.map_err(fail)?;
            print(json!({ "account": Account::from(account) }));
        }
        Command::Accounts { command: AccountsCommand::SetPassword { email, password } } => {
            let password = password.read()?;
            let account = services.accounts.set_password(&email, &password).await.map_err(|e| match e {
                AppError::NotFound(_) => anyhow::anyhow!("no account has the email {email}"),
                e => fail(e),
            })?;
            print(json!({ "account": Account::from(account) }));
        }
        Command::Stores { command: StoresCommand::Create { name, owner } } => {
            let account = services.accounts.by_email(&owner).await.map_err(|e| match e {
                AppError::NotFound(_) => anyhow::anyhow!("no account has the email {owner} (storecrm accounts create)"),
                e => fail(e),
            })?;
            let store = services.stores.create(account.id, &name).await.map_err(fail)?;
            print(json!({ "store": Store::from(store) }));
        }
        Command::Stores { command: StoresCommand::List { owner } } => {
            let stores: Vec<Value> = match owner {
                Some(owner) => {
                    let account = services.accounts.by_email(&owner).await.map_err(|e| match e {
                        AppError::NotFound(_) => anyhow::anyhow!("no account has the email {owner}"),
                        e => fail(e),
                    })?;
                    let rows = services.stores.of_account(account.id, None, 10_000).await.map_err(fail)?;
                    rows.into_iter().map(|r| json!(MemberStore::from(r))).collect()
                }
                None => {
                    let rows = services.stores.all(None, 10_000).await.map_err(fail)?;
                    rows.into_iter().map(|s| json!(Store::from(s))).collect()
                }
            };
            print(json!({ "stores": stores }));
        }
        Command::Export { store, format, query, taxonomy_query, status, segment, audience, output } => {
            use storecrm::services::exports::{ExportFormat, ProfileFilter};
            use tokio::io::AsyncWriteExt;
            services.stores.get(store).await.map_err(no_store(store))?;
            let format = match format {
                ExportFormatArg::Ndjson => ExportFormat::Ndjson,
                ExportFormatArg::Csv => ExportFormat::Csv,
            };
            let mut stream = match audience {
                Some(audience) => {
                    let status = status
                        .map(|s| s.parse().map_err(|_| anyhow::anyhow!("--status: not a subscription status: {s}")))
                        .transpose()?;
                    services.exports.subscribers(store, &audience, status, format).await.map_err(fail)?
                }
                None => {
                    let status = status
                        .map(|s| s.parse().map_err(|_| anyhow::anyhow!("--status: active or archived, not {s}")))
                        .transpose()?;
                    let filter = ProfileFilter { query, taxonomy_query, status, segment };
                    services.exports.profiles(store, filter, format).await.map_err(fail)?
                }
            };
            let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &output {
                Some(path) => Box::new(
                    tokio::fs::File::create(path)
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?,
                ),
                None => Box::new(tokio::io::stdout()),
            };
            let (mut bytes, mut lines) = (0u64, 0u64);
            while let Some(chunk) = stream.chunks.recv().await {
                let chunk = chunk.map_err(|e| anyhow::anyhow!("the export stopped: {e}"))?;
                bytes += chunk.len() as u64;
                lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                out.write_all(&chunk).await?;
            }
            out.flush().await?;
            // Lines, not rows: a CSV cell may hold a line break, and the header is a line.
            eprintln!("{}", json!({ "exported": { "lines": lines, "bytes": bytes, "format": format } }));
        }
        Command::Import { store, file, format, mapping, dry_run, on_existing } => {
            use std::io::IsTerminal;
            use storecrm::services::imports::{ImportFormat, ImportOptions, Importer, OnExisting, drive};
            services.stores.get(store).await.map_err(no_store(store))?;
            let format = match format {
                Some(ImportFormatArg::Csv) => ImportFormat::Csv,
                Some(ImportFormatArg::Ndjson) => ImportFormat::Ndjson,
                None => match file.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
                    Some("csv") => ImportFormat::Csv,
                    Some("ndjson" | "jsonl") => ImportFormat::Ndjson,
                    _ => anyhow::bail!("--format csv or --format ndjson: the file's extension does not say"),
                },
            };
            let mapping = match mapping {
                None => Default::default(),
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                    serde_json::from_str(&text)
                        .map_err(|e| anyhow::anyhow!("{}: not a mapping: {e}", path.display()))?
                }
            };
            let on_existing = match on_existing {
                OnExistingArg::Update => OnExisting::Update,
                OnExistingArg::Skip => OnExisting::Skip,
            };
            let options = ImportOptions { on_existing, dry_run, mapping };
            let mut importer = Importer::new(state.db.clone(), store, options).await.map_err(fail)?;
            let reader: Box<dyn std::io::Read + Send> = if file.as_os_str() == "-" {
                Box::new(std::io::stdin())
            } else {
                Box::new(
                    std::fs::File::open(&file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?,
                )
            };
            let total = std::fs::metadata(&file).ok().map(|m| m.len()).filter(|_| file.as_os_str() != "-");
            let terminal = std::io::stderr().is_terminal();
            let mut progress = CliProgress { total, terminal, started: std::time::Instant::now() };
            let started = std::time::Instant::now();
            drive(&mut importer, format, reader, &mut progress).await.map_err(fail)?;
            let summary = importer.finish().await.map_err(fail)?;
            if terminal {
                eprintln!();
            }
            let seconds = started.elapsed().as_secs_f64();
            print(
                json!({ "imported": summary, "seconds": seconds, "rows_per_second": summary.rows as f64 / seconds.max(1e-9) }),
            );
        }
        Command::Seed { store, profiles, batch, parallel } => {
            services.stores.get(store).await.map_err(no_store(store))?;
            let seeder = storecrm::services::seed::Seeder::new(state.db.clone());
            // SQLite takes one writer at a time: a second batch would only wait for the lock.
            let parallel = match state.config.database_url {
                DatabaseUrl::Sqlite { .. } => 1,
                DatabaseUrl::Postgres { .. } => parallel.clamp(1, 16),
            };
            let report = seeder.seed(store, profiles, batch.clamp(1, 10_000), parallel).await.map_err(fail)?;
            print(json!({ "seeded": report }));
        }
        Command::ApiKeys { command: ApiKeysCommand::Create { store, name } } => {
            services.stores.get(store).await.map_err(no_store(store))?;
            let created = services.stores.create_api_key(store, &name).await.map_err(fail)?;
            let k = created.key;
            print(json!({ "api_key": { "id": k.id, "name": k.name, "prefix": k.prefix, "key": created.secret } }));
        }
        Command::ApiKeys { command: ApiKeysCommand::List { store } } => {
            services.stores.get(store).await.map_err(no_store(store))?;
            let keys = services.stores.api_keys(store, None, 10_000).await.map_err(fail)?;
            print(json!({ "api_keys": keys.into_iter().map(ApiKey::from).collect::<Vec<_>>() }));
        }
        Command::ApiKeys { command: ApiKeysCommand::Revoke { store, id } } => {
            services.stores.revoke_api_key(store, id).await.map_err(|e| match e {
                AppError::NotFound(_) => {
                    anyhow::anyhow!("store {store} has no API key {id} (storecrm api-keys list --store {store})")
                }
                e => fail(e),
            })?;
            print(json!({ "revoked": true }));
        }
        Command::Mail { command: MailCommand::List { status, store, limit } } => {
            let keyset = Keyset::parse(Some(limit.clamp(1, 200)), None, String::new()).map_err(|e| {
                anyhow::anyhow!(e.iter().map(|f| format!("{}: {}", f.field, f.error)).collect::<Vec<_>>().join(", "))
            })?;
            let rows = services.outbox.list(store, status, &keyset).await.map_err(fail)?;
            print(json!({ "mail": rows.into_iter().take(keyset.limit as usize).map(Mail::from).collect::<Vec<_>>() }));
        }
        Command::Mail { command: MailCommand::Show { id } } => {
            let (summary, message) = services.outbox.get(None, id).await.map_err(|e| match e {
                AppError::NotFound(_) => anyhow::anyhow!("the outbox has no mail {id} (storecrm mail list)"),
                e => fail(e),
            })?;
            let delivered = summary.status == MailStatus::Sent;
            let mail = Mail::from(summary);
            match message {
                Some(message) => print(json!({ "mail": mail, "message": message })),
                // A delivered mail keeps no body in the database (it may hold a sign-in code); the
                // file transport's copy is read instead, decoded.
                None if delivered && state.config.smtp_url.is_none() => {
                    let dir = &state.config.mail_dir;
                    match storecrm::mail::file::read_delivered(dir, id) {
                        Ok(Some((path, message))) => {
                            print(json!({ "mail": mail, "message": message, "file": path.display().to_string() }))
                        }
                        Ok(None) => print(json!({ "mail": mail, "message": null,
                            "note": format!("no {id}.eml in MAIL_DIR {}: moved or deleted", dir.display()) })),
                        Err(e) => anyhow::bail!("cannot read {id}.eml in MAIL_DIR {}: {e}", dir.display()),
                    }
                }
                None => print(json!({ "mail": mail, "message": null,
                    "note": "a delivered mail keeps no body in the database (it may hold a sign-in code); with SMTP, read it in the mailbox" })),
            }
        }
    }
    Ok(())
}

/// `GET /readyz` on LISTEN_ADDR over plain HTTP/1.0: the image has no curl, and this needs none.
async fn ready() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = dotenvy::dotenv();
    let listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let mut addr: std::net::SocketAddr = listen.parse()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let answer = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
        let mut head = vec![0; 64];
        let n = stream.read(&mut head).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..n]).to_string())
    })
    .await??;
    anyhow::ensure!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "{}",
        answer.lines().next().unwrap_or("")
    );
    Ok(())
}

/// mimalloc instead of glibc's malloc: a request allocates many small, short-lived objects
/// (headers, JSON, rows), which glibc served at about 8 % of the server's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        println!("{}", storecrm::http::openapi_json());
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Ready) = cli.command {
        return match ready().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("storecrm: not ready: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let _ = dotenvy::dotenv();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("storecrm: {e}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    let level = if cli.verbose || matches!(command, Command::Serve) { "info" } else { "warn" };
    init_tracing(config.log_format, level);
    match run(command, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storecrm: {e:#}");
            ExitCode::FAILURE
        }
    }
}
