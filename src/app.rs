//! The application: state, router and serve loop, shared by `main` and the tests.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

use crate::config::{Config, DatabaseUrl};
use crate::crypto::Keys;
use crate::metrics::Metrics;
use crate::repo::{Repo, SqlRepo};
use crate::services::Services;

pub struct AppInner {
    pub config: Config,
    pub repo: Arc<dyn Repo>,
    pub services: Services,
    pub metrics: Metrics,
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
        DatabaseUrl::Postgres(_) => config.limits.db_max_connections,
        DatabaseUrl::Sqlite { .. } => config.limits.db_max_connections.min(8),
    };
    let sql = SqlRepo::connect(&config.database_url, max_connections).await?;
    let report = sql.migrate().await?;
    if !report.applied.is_empty() {
        tracing::info!(backend = report.backend, applied = ?report.applied, "migrations applied");
    }
    let keys = Keys::derive(&config.resolve_secret_key()?);
    let repo: Arc<dyn Repo> = Arc::new(sql);
    let services = Services::new(repo.clone(), keys, config.limits.clone());
    Ok(AppState(Arc::new(AppInner { config, repo, services, metrics: Metrics::default() })))
}

pub fn build_router(state: AppState) -> Router {
    let timeout = state.config.limits.request_timeout;
    crate::http::router(state, timeout)
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = build_router(state);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
