//! The black-box suite as one test binary (one link, one process): each module is a former
//! `tests/*.rs` file; `common` spawns the real app per backend and holds `backend_tests!`.

#[macro_use]
mod common;

mod abuse;
mod audiences;
mod concurrency;
mod data;
mod foundation;
mod mail;
mod payments;
mod profiles;
mod sessions;
mod templates;
mod webhooks;
