//! storecrm: the CRM of an online store platform, served as a REST API.
//!
//! Layers run one way only: `http` → `services` → `repo`.

/// Typed state, router construction and the serve loop shared by `main` and the tests.
pub mod app;
/// Configuration from the environment; secrets are wrapped so `Debug` never prints them.
pub mod config;
/// Key derivation, random secrets, hashes and access-token signing.
pub mod crypto;
/// Plain types valid by construction (emails, cursors, names), parsed at the edge.
pub mod domain;
/// The one error type and its JSON shape.
pub mod error;
/// Routes, extractors, middleware and the OpenAPI document.
pub mod http;
/// Mail: transports, the outbox worker, template rendering.
pub mod mail;
/// Prometheus request counters and latency histograms.
pub mod metrics;
/// Payment providers (Stripe) behind a trait: Checkout Sessions, webhook signatures and events.
pub mod payments;
/// Repository traits and the SQL implementation for Postgres and SQLite.
pub mod repo;
/// Business rules, one module per capability; no HTTP types, no SQL.
pub mod services;
/// The API's representation of records: answered by the routes, carried by events.
pub mod views;
/// Outgoing webhooks: signatures, the address rules, the delivery worker.
pub mod webhooks;

/// Seconds since the Unix epoch: the timestamp unit of the API and of every table.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}
