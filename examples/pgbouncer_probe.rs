//! What sqlx's ways of sending a statement do through a pooler in transaction mode (docs/scaling.md,
//! "PgBouncer"): 20 tasks on a pool of 10 connections each run 300 one-row queries of one shape,
//! half of them `SELECT 'A' || $1` and half `SELECT 'B' || $1`, and count right answers, wrong
//! answers (the other statement's) and errors.
//!
//!   cargo run --example pgbouncer_probe -- 'postgres://postgres@127.0.0.1:6432/test' MODE
//!
//! MODE: `named` (sqlx's default: cached named statements), `named-nocache`
//! (`statement_cache_capacity(0)`), `unnamed` (`persistent(false)`), `unnamed-tx` (unnamed, each in
//! a transaction: what the server does with `?pgbouncer=true`). Exits 1 unless every answer was
//! right. Bounded: 6,000 queries against the URL given (loopback).

use std::collections::BTreeMap;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

async fn one(pool: &PgPool, mode: &str, sql: &'static str, i: i64) -> Result<String, sqlx::Error> {
    match mode {
        "unnamed-tx" => {
            let mut tx = pool.begin().await?;
            let v = sqlx::query_scalar(sql).bind(i).persistent(false).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(v)
        }
        "unnamed" => sqlx::query_scalar(sql).bind(i).persistent(false).fetch_one(pool).await,
        _ => sqlx::query_scalar(sql).bind(i).fetch_one(pool).await,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(mode)) = (args.get(1), args.get(2).map(String::as_str)) else {
        eprintln!("usage: pgbouncer_probe URL named|named-nocache|unnamed|unnamed-tx");
        std::process::exit(2);
    };
    assert!(["named", "named-nocache", "unnamed", "unnamed-tx"].contains(&mode), "unknown mode {mode}");
    let mut options = PgConnectOptions::from_str(url).expect("a postgres:// URL");
    if mode == "named-nocache" {
        options = options.statement_cache_capacity(0);
    }
    let pool = PgPoolOptions::new().max_connections(10).connect_with(options).await.expect("connect");
    let mut tasks = vec![];
    for t in 0..20 {
        let (pool, mode) = (pool.clone(), mode.to_string());
        tasks.push(tokio::spawn(async move {
            let (letter, sql) =
                if t % 2 == 0 { ('A', "SELECT 'A' || $1::int8::text") } else { ('B', "SELECT 'B' || $1::int8::text") };
            let (mut right, mut wrong, mut errors) = (0u32, 0u32, BTreeMap::<String, u32>::new());
            for i in 0..300 {
                match one(&pool, &mode, sql, i).await {
                    Ok(v) if v == format!("{letter}{i}") => right += 1,
                    Ok(_) => wrong += 1,
                    // Statement names differ by their number only: count them as one error.
                    Err(e) => *errors.entry(e.to_string().replace(|c: char| c.is_ascii_digit(), "")).or_default() += 1,
                }
            }
            (right, wrong, errors)
        }));
    }
    let (mut right, mut wrong, mut errors) = (0, 0, BTreeMap::<String, u32>::new());
    for t in tasks {
        let (r, w, e) = t.await.expect("task");
        right += r;
        wrong += w;
        for (k, n) in e {
            *errors.entry(k).or_default() += n;
        }
    }
    println!("{mode}: {right} right, {wrong} wrong answers, errors {errors:?}");
    if wrong > 0 || !errors.is_empty() {
        std::process::exit(1);
    }
}
