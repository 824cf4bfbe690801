//! The yardstick of scripts/bench-hot.sh: a bare axum + sqlx server with no auth, no middleware
//! and one statement per request, on the same Postgres database and pool size as storecrm.
//!   DATABASE_URL=postgres://... bench_baseline 127.0.0.1:18090
//! `GET  /profiles/{store}/{id}`: one point select on `profiles` by primary key, as JSON.
//! `POST /profiles/{store}`: one single-row INSERT of a guest profile, its id as JSON.
//! `GET  /me-statement/{store}/{session}/{profile}`: storecrm's getMe statement (no auth, no
//! decoding: its columns passed through as JSON), to tell the statement's cost from the server's.
//! `POST /initialize-statement/{store}`: storecrm's initialize statement (limit bucket, guest
//! profile, its event, session and refresh token) with fresh ids and the client's own bucket.
//! BASELINE_PING_EVERY_ACQUIRE=1 restores sqlx's default ping before every pool checkout.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, Row};
use uuid::Uuid;

type Answer = Result<Json<Value>, StatusCode>;

async fn point_select(State(pool): State<PgPool>, Path((store, id)): Path<(Uuid, Uuid)>) -> Answer {
    let row = sqlx::query(
        "SELECT store_id, id, email, verified, status, created_at, updated_at FROM profiles WHERE store_id = $1 AND id = $2",
    )
    .bind(store)
    .bind(id)
    .fetch_optional(&pool)
    .await
    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
    .ok_or(StatusCode::NOT_FOUND)?;
    let get = |e: sqlx::Error| {
        eprintln!("decode: {e}");
        StatusCode::INTERNAL_SERVER_ERROR
    };
    Ok(Json(json!({
        "id": row.try_get::<Uuid, _>("id").map_err(get)?,
        "store_id": row.try_get::<Uuid, _>("store_id").map_err(get)?,
        "email": row.try_get::<Option<String>, _>("email").map_err(get)?,
        "verified": row.try_get::<bool, _>("verified").map_err(get)?,
        "status": row.try_get::<String, _>("status").map_err(get)?,
        "created_at": row.try_get::<i64, _>("created_at").map_err(get)?,
        "updated_at": row.try_get::<i64, _>("updated_at").map_err(get)?,
    })))
}

async fn me_statement(State(pool): State<PgPool>, Path((store, session, profile)): Path<(Uuid, Uuid, Uuid)>) -> Answer {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let row = sqlx::query(storecrm::repo::ME_POSTGRES)
        .bind(store)
        .bind(session)
        .bind(profile)
        .bind(now)
        .bind(10_i64)
        .fetch_optional(&pool)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .ok_or(StatusCode::NOT_FOUND)?;
    let mut out = json!({
        "id": row.try_get::<Uuid, _>("id").map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?,
        "email": row.try_get::<Option<String>, _>("email").map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?,
    });
    for c in ["taxonomy_values", "promo_usage", "sessions", "codes"] {
        out[c] = row.try_get::<sqlx::types::Json<Value>, _>(c).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?.0;
    }
    Ok(Json(out))
}

async fn single_insert(State(pool): State<PgPool>, Path(store): Path<Uuid>) -> Answer {
    let id = Uuid::now_v7();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    sqlx::query(
        "INSERT INTO profiles (store_id, id, email, email_key, verified, status, search_text, created_at, updated_at)
         VALUES ($1, $2, NULL, NULL, FALSE, 'active', '', $3, $3)",
    )
    .bind(store)
    .bind(id)
    .bind(now)
    .execute(&pool)
    .await
    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(Json(json!({ "id": id })))
}

async fn initialize_statement(State(pool): State<PgPool>, Path(store): Path<Uuid>) -> Answer {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let (profile, session, event) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let data = json!({"object": {"id": profile, "email": null, "verified": false, "status": "active"}});
    // A bucket per request, as the benchmark's random client addresses give.
    let bucket = format!("session:ip:{}", Uuid::now_v7());
    let hash: [u8; 32] = rand::random();
    let (store_ok, ok): (bool, bool) = sqlx::query_as(sqlx::AssertSqlSafe(storecrm::repo::GUEST_POSTGRES.as_str()))
        .bind(store)
        .bind(profile)
        .bind(now)
        .bind(session)
        .bind(None::<String>)
        .bind(now + 30 * 86_400)
        .bind(&hash[..])
        .bind("active")
        .bind(event)
        .bind("profile.created")
        .bind(data.to_string())
        .bind(bucket)
        .bind(now - now % 3600)
        .bind(100_000_000_i64)
        .fetch_one(&pool)
        .await
        .map_err(|e| {
            eprintln!("initialize statement: {e}");
            StatusCode::INTERNAL_SERVER_ERROR
        })?;
    Ok(Json(json!({ "ok": store_ok && ok, "id": profile })))
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18090".into());
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL (postgres) is required");
    let connections = std::env::var("DB_MAX_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    // The pool settings of src/repo/postgres.rs, so both servers make one round trip per request.
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .test_before_acquire(std::env::var("BASELINE_PING_EVERY_ACQUIRE").is_ok_and(|v| v == "1"))
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for.as_secs() >= 30 {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect(&url)
        .await
        .expect("connect");
    let app = Router::new()
        .route("/profiles/{store}/{id}", get(point_select))
        .route("/profiles/{store}", post(single_insert))
        .route("/me-statement/{store}/{session}/{profile}", get(me_statement))
        .route("/initialize-statement/{store}", post(initialize_statement))
        .with_state(pool);
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
