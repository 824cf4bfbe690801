//! The `storecrm` binary: `serve` (default), `migrate`, and bootstrap commands that print JSON.

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;
use storecrm::app::{self, AppState};
use storecrm::config::{Config, DatabaseUrl, LogFormat};
use storecrm::error::AppError;
use storecrm::http::auth::Account;
use storecrm::http::stores::Store;
use tokio::net::TcpListener;
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "storecrm", version, about = "The CRM of an online store platform")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations, then serve HTTP (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Print the OpenAPI document (the one served at /openapi.json); needs no configuration.
    Openapi,
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

#[derive(Subcommand)]
enum AccountsCommand {
    /// Create an account → {"account": {...}}
    Create {
        #[arg(long)]
        email: String,
        /// The password (visible in the process list; prefer --password-stdin).
        #[arg(long, conflicts_with = "password_stdin", required_unless_present = "password_stdin")]
        password: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
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
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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

fn print(value: serde_json::Value) {
    println!("{value}");
}

fn describe(e: &AppError) -> String {
    match e {
        AppError::Internal(cause) => format!("internal error: {cause:#}"),
        AppError::Validation { errors, .. } => {
            errors.iter().map(|f| format!("{}: {}", f.field, f.error)).collect::<Vec<_>>().join(", ")
        }
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
    match command {
        Command::Serve | Command::Migrate | Command::Openapi => {
            let addr = state.config.listen_addr;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on LISTEN_ADDR {addr}: {e}"))?;
            tracing::info!(addr = %listener.local_addr()?, docs = %format!("{}/docs", state.config.public_base_url), "storecrm listening");
            app::serve(listener, state.clone(), shutdown_signal()).await?;
        }
        Command::Accounts { command: AccountsCommand::Create { email, password, password_stdin } } => {
            let password = match (password, password_stdin) {
                (Some(p), _) => p,
                (None, _) => {
                    let mut buf = String::new();
                    std::io::stdin().read_to_string(&mut buf)?;
                    buf.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            let account = services.accounts.create(&email, &password).await.map_err(fail)?;
            print(json!({ "account": Account::from(account) }));
        }
        Command::Stores { command: StoresCommand::Create { name, owner } } => {
            let account = services.accounts.by_email(&owner).await.map_err(|e| match e {
                AppError::NotFound(_) => anyhow::anyhow!("no account has the email {owner}"),
                e => fail(e),
            })?;
            let store = services.stores.create(account.id, &name).await.map_err(fail)?;
            print(json!({ "store": Store::from(store) }));
        }
        Command::Seed { store, profiles, batch, parallel } => {
            services.stores.get(store).await.map_err(|_| anyhow::anyhow!("no store has the id {store}"))?;
            let seeder = storecrm::services::seed::Seeder::new(state.db.clone());
            // SQLite takes one writer at a time: a second batch would only wait for the lock.
            let parallel = match state.config.database_url {
                DatabaseUrl::Sqlite { .. } => 1,
                DatabaseUrl::Postgres(_) => parallel.clamp(1, 16),
            };
            let report = seeder.seed(store, profiles, batch.clamp(1, 10_000), parallel).await.map_err(fail)?;
            print(json!({ "seeded": report }));
        }
        Command::ApiKeys { command: ApiKeysCommand::Create { store, name } } => {
            services.stores.get(store).await.map_err(|_| anyhow::anyhow!("no store has the id {store}"))?;
            let created = services.stores.create_api_key(store, &name).await.map_err(fail)?;
            let k = created.key;
            print(json!({ "api_key": { "id": k.id, "name": k.name, "prefix": k.prefix, "key": created.secret } }));
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        println!("{}", storecrm::http::openapi_json());
        return ExitCode::SUCCESS;
    }
    let _ = dotenvy::dotenv();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("storecrm: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
    match run(cli.command.unwrap_or(Command::Serve), config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storecrm: {e:#}");
            ExitCode::FAILURE
        }
    }
}
