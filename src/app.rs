//! The application: state, router, background tasks and the serve loop, shared by `main` and the tests.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::config::{Config, DatabaseUrl};
use crate::crypto::Keys;
use crate::mail::{Mailer, OutboxSettings, OutboxWorker, mailer_from_config};
use crate::metrics::Metrics;
use crate::payments::{PaymentGateway, gateway_from_config};
use crate::repo::Database;
use crate::services::Services;
use crate::webhooks::{WebhookClient, WebhookSettings, WebhookWorker};

pub struct AppInner {
    pub config: Config,
    pub db: Database,
    pub services: Services,
    pub metrics: Metrics,
    pub mailer: Arc<dyn Mailer>,
    /// Stripe, when `STRIPE_SECRET_KEY` is set.
    pub payments: Option<Arc<dyn PaymentGateway>>,
    /// Wakes the outbox worker when a request has queued mail.
    pub mail_wake: Arc<Notify>,
    /// Wakes the webhook worker (a delivery retried by hand).
    pub webhook_wake: Arc<Notify>,
    pub keys: Keys,
}

/// Cheap to clone; every handler receives it.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// Connects to the database, applies pending migrations and builds the services.
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    let max_connections = match config.database_url {
        DatabaseUrl::Postgres { .. } => config.limits.db_max_connections,
        DatabaseUrl::Sqlite { .. } => config.limits.db_max_connections.min(8),
    };
    let db = Database::connect(&config.database_url, max_connections).await?;
    let report = db.migrate().await?;
    if !report.applied.is_empty() {
        tracing::info!(backend = report.backend, applied = ?report.applied, "migrations applied");
    }
    let keys = Keys::derive(&config.resolve_secret_key()?);
    let mailer = mailer_from_config(&config)?;
    let mail_wake = Arc::new(Notify::new());
    let payments = gateway_from_config(&config)?;
    let webhook_wake = Arc::new(Notify::new());
    let services =
        Services::new(db.clone(), keys.clone(), &config, mail_wake.clone(), webhook_wake.clone(), payments.clone());
    Ok(AppState(Arc::new(AppInner {
        config,
        db,
        services,
        metrics: Metrics::default(),
        mailer,
        mail_wake,
        webhook_wake,
        keys,
        payments,
    })))
}

pub fn build_router(state: AppState) -> Router {
    let timeout = state.config.limits.request_timeout;
    crate::http::router(state, timeout)
}

/// Starts the outbox worker, the webhook worker and the janitor; they stop when `shutdown` turns true.
pub fn spawn_background(state: &AppState, shutdown: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    let limits = &state.config.limits;
    let settings = OutboxSettings {
        poll_interval: limits.mail_poll_interval,
        backoff_base: limits.mail_retry_base,
        backoff_max: limits.mail_retry_max,
        max_attempts: limits.mail_max_attempts,
        ..OutboxSettings::default()
    };
    let worker = state.config.mail_worker.then(|| {
        OutboxWorker::new(state.db.clone(), state.mailer.clone(), settings)
            .with_wake(state.mail_wake.clone())
            .with_metrics(state.metrics.mail.clone())
            .spawn(shutdown.clone())
    });
    let webhooks = state.config.webhook_worker.then(|| {
        let settings = WebhookSettings {
            poll_interval: limits.webhook_poll_interval,
            schedule: limits.webhook_retry_schedule.clone(),
            disable_after: limits.webhook_disable_after,
            ..WebhookSettings::default()
        };
        let client = WebhookClient::new(state.config.webhooks_allow_private, limits.webhook_timeout);
        WebhookWorker::new(state.db.clone(), state.keys.clone(), client, settings, state.webhook_wake.clone())
            .spawn(shutdown.clone())
    });
    let janitor_state = state.clone();
    let mut janitor_shutdown = shutdown.clone();
    let janitor = tokio::spawn(async move {
        let interval = janitor_state.config.limits.janitor_interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                changed = janitor_shutdown.changed() => if changed.is_err() || *janitor_shutdown.borrow() { break },
            }
            match janitor_state.services.sessions.sweep(crate::now()).await {
                Ok(report) => tracing::info!(?report, "janitor pass"),
                Err(e) => tracing::warn!(error = %e, "janitor pass failed"),
            }
        }
    });
    worker.into_iter().chain(webhooks).chain([janitor]).collect()
}

/// Serves until `shutdown` resolves, drains in-flight requests, then stops the background tasks.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let background = spawn_background(&state, stopped);
    let app = build_router(state);
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = stop.send(true);
    for task in background {
        // A mail being sent stays leased and is retried (here or elsewhere) when the lease ends.
        if tokio::time::timeout(std::time::Duration::from_secs(10), task).await.is_err() {
            tracing::warn!("a background task was still busy at shutdown; leaving it");
        }
    }
    served
}
