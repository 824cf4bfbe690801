//! The webhook receiver of scripts/bench-events.sh: answers every `POST /hook` with 204 and
//! counts them; `GET /count` answers the count. No signature check (the benchmark measures the
//! sender).
//!   bench_receiver 127.0.0.1:18095

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18095".into());
    let count = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route(
            "/hook",
            post(|State(c): State<Arc<AtomicU64>>, _body: axum::body::Bytes| async move {
                c.fetch_add(1, Ordering::Relaxed);
                StatusCode::NO_CONTENT
            }),
        )
        .route("/count", get(|State(c): State<Arc<AtomicU64>>| async move { c.load(Ordering::Relaxed).to_string() }))
        .with_state(count);
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
