//! Foundation: operations routes, the error model, accounts, stores, API keys and the CLI,
//! over HTTP against both backends.

use std::time::{Duration, Instant};

use crate::common::{self, Backend, PASSWORD, TestApp, expect_error, read};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use storecrm::crypto::{AccountClaims, Keys};

backend_tests!(
    operations_routes_answer,
    the_cli_an_operator_lives_in,
    the_outbox_is_visible_and_a_failed_mail_can_be_retried,
    openapi_lists_every_route_and_docs_work_offline,
    every_error_path_has_the_json_shape,
    request_ids_are_echoed_or_generated,
    internal_errors_carry_no_internal_text,
    login_me_logout,
    login_failures_do_not_reveal_accounts,
    refresh_rotates_and_detects_reuse,
    concurrent_refresh_inside_grace_keeps_the_session,
    forged_expired_and_foreign_tokens_are_refused,
    stores_create_list_get_update,
    store_settings_are_validated,
    api_keys_lifecycle,
    stores_are_isolated_from_each_other,
    revocation_holds_across_instances,
    secrets_are_stored_hashed,
    cli_bootstraps_account_store_and_key,
);

async fn operations_routes_answer(app: &TestApp) {
    assert_eq!(app.get("/healthz", None).await, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(app.get("/readyz", None).await, (StatusCode::OK, json!({"status": "ready"})));
    let _ = app.get("/nowhere", None).await;
    let metrics = app.req(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = metrics.text().await.unwrap();
    assert!(text.contains(r#"storecrm_http_requests_total{method="GET",route="/healthz",status="200"} 1"#), "{text}");
    assert!(text.contains(r#"storecrm_http_requests_total{method="GET",route="unmatched",status="404"} 1"#), "{text}");
    assert!(text.contains(
        r#"storecrm_http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/readyz",status="200"} 1"#
    ));
    // CORS preflight from an origin nobody allowed: answered, but without permission (§1)
    let pre = app
        .req(Method::OPTIONS, "/v1/auth/login")
        .header("origin", "https://shop.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success());
    assert!(!pre.headers().contains_key("access-control-allow-origin"));
}

async fn openapi_lists_every_route_and_docs_work_offline(app: &TestApp) {
    let (status, spec) = app.get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    // The served document names this server (PUBLIC_BASE_URL), so generated clients reach it.
    let named = TestApp::spawn_with(app.backend, &[("PUBLIC_BASE_URL", "https://crm.example.com/")]).await;
    let (_, served) = named.get("/openapi.json", None).await;
    assert_eq!(
        served["servers"][0]["variables"]["baseUrl"]["default"], "https://crm.example.com",
        "{}",
        served["servers"]
    );
    assert_eq!(served["servers"][0]["url"], "{baseUrl}");
    let expected = [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/v1/auth/login", "post"),
        ("/v1/auth/refresh", "post"),
        ("/v1/auth/logout", "post"),
        ("/v1/auth/me", "get"),
        ("/v1/stores", "post"),
        ("/v1/stores", "get"),
        ("/v1/stores/{storeId}", "get"),
        ("/v1/stores/{storeId}", "put"),
        ("/v1/stores/{storeId}/api-keys", "post"),
        ("/v1/stores/{storeId}/api-keys", "get"),
        ("/v1/stores/{storeId}/api-keys/{id}", "delete"),
        ("/v1/stores/{storeId}/taxonomies", "post"),
        ("/v1/stores/{storeId}/taxonomies", "get"),
        ("/v1/stores/{storeId}/taxonomies/{id}", "get"),
        ("/v1/stores/{storeId}/taxonomies/{id}", "put"),
        ("/v1/stores/{storeId}/taxonomies/{id}", "delete"),
        ("/v1/stores/{storeId}/profiles", "post"),
        ("/v1/stores/{storeId}/profiles", "get"),
        ("/v1/stores/{storeId}/profiles/{id}", "get"),
        ("/v1/stores/{storeId}/profiles/{id}", "put"),
        ("/v1/stores/{storeId}/profiles/{id}", "delete"),
        ("/v1/stores/{storeId}/profiles/{id}/merge", "post"),
        ("/v1/stores/{storeId}/profiles/{id}/export", "get"),
        ("/v1/stores/{storeId}/profiles/{id}/orders", "post"),
        ("/v1/stores/{storeId}/profiles/{id}/orders", "get"),
        ("/v1/stores/{storeId}/profiles/initialize", "post"),
        ("/v1/stores/{storeId}/profiles/connect", "post"),
        ("/v1/stores/{storeId}/profiles/auth/code", "post"),
        ("/v1/stores/{storeId}/profiles/auth/verify", "post"),
        ("/v1/stores/{storeId}/profiles/auth/refresh", "post"),
        ("/v1/stores/{storeId}/profiles/auth/logout", "post"),
        ("/v1/stores/{storeId}/profiles/me", "get"),
        ("/v1/stores/{storeId}/profiles/{id}/sessions", "get"),
        ("/v1/stores/{storeId}/profiles/{id}/sessions", "delete"),
        ("/v1/stores/{storeId}/profiles/{id}/sessions/{tokenId}", "delete"),
        ("/v1/stores/{storeId}/audiences", "post"),
        ("/v1/stores/{storeId}/audiences", "get"),
        ("/v1/stores/{storeId}/audiences/{id}", "get"),
        ("/v1/stores/{storeId}/audiences/{id}", "put"),
        ("/v1/stores/{storeId}/audiences/{id}/subscribe", "post"),
        ("/v1/stores/{storeId}/audiences/{id}/access", "get"),
        ("/v1/stores/{storeId}/audiences/{id}/subscribers", "get"),
        ("/v1/stores/{storeId}/audiences/{id}/subscribers", "post"),
        ("/v1/stores/{storeId}/audiences/{id}/subscribers/{profileId}", "delete"),
        ("/v1/stores/{storeId}/audiences/confirm", "post"),
        ("/v1/stores/{storeId}/audiences/unsubscribe", "post"),
    ];
    for (path, method) in expected {
        assert!(spec["paths"][path][method].is_object(), "{method} {path} missing from the spec");
    }
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());
    // One bearer scheme per credential, so a client knows which token an operation wants.
    for scheme in ["accountToken", "apiKey", "profileToken"] {
        assert_eq!(spec["components"]["securitySchemes"][scheme]["scheme"], "bearer", "{scheme}");
    }
    assert_eq!(spec["paths"]["/v1/stores/{storeId}/profiles/me"]["get"]["security"], json!([{"profileToken": []}]));

    let docs = app.req(Method::GET, "/docs/").send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // Everything the page loads comes from this server.
    for line in html.lines().filter(|l| l.contains("src=") || l.contains("href=")) {
        assert!(!line.contains("http://") && !line.contains("https://"), "external asset: {line}");
    }
    // Every operation documents its error responses with the one error schema.
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path} has no responses"));
            assert!(responses.keys().any(|k| k.starts_with('2')), "{method} {path} documents no success");
        }
    }
    assert!(operations >= expected.len());

    // Large responses are compressed for clients that ask.
    let gz = app.req(Method::GET, "/openapi.json").header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(gz.headers().get("content-encoding").map(|v| v.to_str().unwrap()), Some("gzip"));

    let init = app.req(Method::GET, "/docs/swagger-initializer.js").send().await.unwrap();
    assert_eq!(init.status(), StatusCode::OK);
    assert!(init.text().await.unwrap().contains("/openapi.json"));
}

async fn every_error_path_has_the_json_shape(app: &TestApp) {
    expect_error(&app.get("/v1/nope", None).await, 404, "not_found");
    let wrong = app.req(Method::PATCH, "/v1/auth/login").send().await.unwrap();
    assert_eq!(wrong.headers()["allow"], "POST");
    expect_error(&read(wrong).await, 405, "method_not_allowed");

    let raw = |body: &'static str, ct: Option<&'static str>| {
        let mut r = app.req(Method::POST, "/v1/auth/login").body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r
    };
    expect_error(&read(raw("{\"email\": ", Some("application/json")).send().await.unwrap()).await, 400, "invalid_json");
    expect_error(
        &read(
            raw(r#"{"email": "a@example.com", "password": "x"} trailing"#, Some("application/json"))
                .send()
                .await
                .unwrap(),
        )
        .await,
        400,
        "invalid_json",
    );
    expect_error(&read(raw("{}", None).send().await.unwrap()).await, 415, "unsupported_media_type");
    expect_error(&read(raw("{}", Some("text/plain")).send().await.unwrap()).await, 415, "unsupported_media_type");

    let missing = read(raw(r#"{"email": "a@example.com"}"#, Some("application/json")).send().await.unwrap()).await;
    expect_error(&missing, 422, "validation_failed");
    assert_eq!(missing.1["validation_errors"], json!([{"field": "password", "error": "required"}]));
    let typed = read(raw(r#"{"email": 7, "password": "x"}"#, Some("application/json")).send().await.unwrap()).await;
    assert_eq!(typed.1["validation_errors"], json!([{"field": "email", "error": "invalid_type"}]));
    let bad_email = app.post("/v1/auth/login", None, json!({"email": "not-an-email", "password": "x"})).await;
    assert_eq!(bad_email.1["validation_errors"], json!([{"field": "email", "error": "invalid_email"}]));

    let huge = format!(r#"{{"email": "a@example.com", "password": "{}"}}"#, "x".repeat(1024 * 1024 + 10));
    let resp = app
        .req(Method::POST, "/v1/auth/login")
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    expect_error(&read(resp).await, 413, "payload_too_large");

    let unauth = app.req(Method::GET, "/v1/auth/me").send().await.unwrap();
    assert_eq!(unauth.headers()["www-authenticate"], "Bearer");
    expect_error(&read(unauth).await, 401, "unauthorized");

    let admin = app.admin("errs").await;
    expect_error(&app.get("/v1/stores/not-a-uuid", Some(&admin.token)).await, 404, "not_found");
    expect_error(&app.get(&admin.store("/nothing-here"), Some(&admin.token)).await, 404, "not_found");
    expect_error(&app.get("/v1/stores?limit=500", Some(&admin.token)).await, 422, "validation_failed");
    expect_error(&app.get("/v1/stores?limit=abc", Some(&admin.token)).await, 422, "validation_failed");
    expect_error(&app.get("/v1/stores?cursor=garbage", Some(&admin.token)).await, 422, "validation_failed");
    expect_error(&app.delete(&admin.store("/api-keys/not-a-uuid"), Some(&admin.token)).await, 404, "not_found");
}

async fn request_ids_are_echoed_or_generated(app: &TestApp) {
    let r = app.req(Method::GET, "/healthz").header("x-request-id", "trace-abc-123").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-abc-123");
    let r = app.req(Method::GET, "/v1/missing").header("x-request-id", "trace-err-9").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-err-9");
    assert_eq!(r.json::<Value>().await.unwrap()["request_id"], "trace-err-9");
    let a = app.req(Method::GET, "/healthz").send().await.unwrap();
    let b = app.req(Method::GET, "/healthz").send().await.unwrap();
    assert_ne!(a.headers()["x-request-id"], b.headers()["x-request-id"]);
}

async fn internal_errors_carry_no_internal_text(app: &TestApp) {
    let admin = app.admin("boom").await;
    // Break the schema underneath the running server.
    match app.backend {
        Backend::Sqlite => {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&app.database_url).await.unwrap();
            sqlx::query("DROP TABLE api_keys").execute(&mut c).await.unwrap();
        }
        Backend::Postgres => {
            let mut c = common::pg_connect(&app.database_url).await;
            sqlx::raw_sql("DROP TABLE api_keys").execute(&mut c).await.unwrap();
        }
    }
    let got = app.get(&admin.store("/api-keys"), Some(&admin.token)).await;
    expect_error(&got, 500, "internal_error");
    assert_eq!(got.1["message"], "internal error");
    let text = got.1.to_string().to_lowercase();
    for leak in ["api_keys", "table", "sqlite", "relation", "select"] {
        assert!(!text.contains(leak), "{leak} leaked: {text}");
    }
}

async fn login_me_logout(app: &TestApp) {
    let email = app.account("ann").await;
    let r = app
        .req(Method::POST, "/v1/auth/login")
        .header("user-agent", "dashboard/1.0")
        .json(&json!({"email": format!("  {}  ", email.to_uppercase()), "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let (status, tokens) = read(r).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    for field in ["id", "access_token", "refresh_token", "account_id"] {
        assert!(tokens[field].as_str().is_some_and(|s| !s.is_empty()), "{field}");
    }
    let now = storecrm::now();
    let access_exp = tokens["access_expires_at"].as_i64().unwrap();
    assert!((now + 850..=now + 950).contains(&access_exp), "15 minutes by default");
    assert!(tokens["refresh_expires_at"].as_i64().unwrap() > now + 29 * 86400);
    assert!(tokens.get("is_verified").is_none());
    let token = tokens["access_token"].as_str().unwrap();

    let (status, me) = app.get("/v1/auth/me", Some(token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["account"]["id"], tokens["account_id"]);
    assert_eq!(me["account"]["email"], email);
    assert!(me["account"].get("password_hash").is_none());
    assert_eq!(me["stores"], json!([]));

    let (status, store) = app.post("/v1/stores", Some(token), json!({"name": "Ann's"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, me) = app.get("/v1/auth/me", Some(token)).await;
    assert_eq!(me["stores"][0]["id"], store["id"]);
    assert_eq!(me["stores"][0]["role"], "owner");

    assert_eq!(
        app.post("/v1/auth/logout", Some(token), json!({})).await,
        (StatusCode::OK, json!({"logged_out": true}))
    );
    expect_error(&app.get("/v1/auth/me", Some(token)).await, 401, "unauthorized");
    expect_error(
        &app.get(&format!("/v1/stores/{}", store["id"].as_str().unwrap()), Some(token)).await,
        401,
        "unauthorized",
    );
    let again = app.post("/v1/auth/refresh", None, json!({"refresh_token": tokens["refresh_token"]})).await;
    expect_error(&again, 401, "invalid_refresh_token");
}

async fn login_failures_do_not_reveal_accounts(app: &TestApp) {
    let email = app.account("bob").await;
    let wrong = app.post("/v1/auth/login", None, json!({"email": email, "password": "not the password"})).await;
    let unknown =
        app.post("/v1/auth/login", None, json!({"email": "nobody@example.com", "password": "whatever1"})).await;
    expect_error(&wrong, 401, "invalid_credentials");
    expect_error(&unknown, 401, "invalid_credentials");
    assert_eq!(wrong.1["message"], unknown.1["message"]);
    expect_error(
        &app.post("/v1/auth/login", None, json!({"email": email, "password": ""})).await,
        422,
        "validation_failed",
    );
}

/// The database going away (its sessions terminated, then new ones refused, as while Postgres
/// restarts or a DBA closes it) answers 503 `database_unavailable` with the error shape, never a
/// 500; `/readyz` says so; and the same server serves again once it is back (docs/reliability.md,
/// fault 3). Before, a refused connection (FATAL 55000) surfaced as a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "Postgres half: set TEST_DATABASE_URL and pass -- --include-ignored"]
async fn postgres_going_away_answers_503_and_the_server_recovers() {
    use sqlx::AssertSqlSafe;
    let app = TestApp::spawn(Backend::Postgres).await;
    let admin = app.admin("away").await;
    let db = app.database_url.rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
    let mut pg = common::pg_connect(&std::env::var("TEST_DATABASE_URL").unwrap()).await;
    let terminate = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    );
    // Every session killed: each request answers, with a 503 or (on a fresh connection) a 200.
    sqlx::raw_sql(AssertSqlSafe(terminate.clone())).execute(&mut pg).await.unwrap();
    for _ in 0..8 {
        let (status, body) = app.get(&admin.store(""), Some(&admin.token)).await;
        assert!(status == 200 || status == 503, "{status} {body}");
    }
    // New sessions refused.
    sqlx::raw_sql(AssertSqlSafe(format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS false")))
        .execute(&mut pg)
        .await
        .unwrap();
    sqlx::raw_sql(AssertSqlSafe(terminate)).execute(&mut pg).await.unwrap();
    for _ in 0..3 {
        expect_error(&app.get(&admin.store(""), Some(&admin.token)).await, 503, "database_unavailable");
        expect_error(
            &app.post(&admin.store("/profiles/initialize"), None, json!({})).await,
            503,
            "database_unavailable",
        );
    }
    expect_error(&app.get("/readyz", None).await, 503, "not_ready");
    // A 503 that clears by itself says when to retry, in the header and the body.
    let answer = app.req(Method::GET, &admin.store("")).bearer_auth(&admin.token).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers()["retry-after"], "1");
    assert_eq!(answer.json::<Value>().await.unwrap()["retry_after"], 1);
    sqlx::raw_sql(AssertSqlSafe(format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS true")))
        .execute(&mut pg)
        .await
        .unwrap();
    // Back: the same server serves again, without a restart.
    let started = Instant::now();
    while app.get("/readyz", None).await.0 != StatusCode::OK {
        assert!(started.elapsed() < Duration::from_secs(15), "not ready 15 s after the database returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = app.get(&admin.store(""), Some(&admin.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.stop().await;
}

/// An unknown email is refused only after a verify against a dummy hash, so it costs what a wrong
/// password costs and timing does not tell which emails have accounts. Backend-independent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_emails_take_as_long_to_refuse_as_wrong_passwords() {
    let limits = [("LOGIN_LIMIT_PER_EMAIL", "1000"), ("LOGIN_LIMIT_PER_ADDRESS", "1000")];
    let app = TestApp::spawn_with(Backend::Sqlite, &limits).await;
    let email = app.account("timing").await;
    let refuse = async |email: &str| {
        let started = Instant::now();
        let refused = app.post("/v1/auth/login", None, json!({"email": email, "password": "not the password"})).await;
        let took = started.elapsed();
        expect_error(&refused, 401, "invalid_credentials");
        took
    };
    // The dummy hash is made on first use: warm both paths up before measuring.
    refuse("nobody@example.com").await;
    refuse(&email).await;
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..7 {
        unknown.push(refuse(&format!("nobody{i}@example.com")).await);
        wrong.push(refuse(&email).await);
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (unknown, wrong) = (median(unknown), median(wrong));
    eprintln!("median refusal: unknown email {unknown:?}, wrong password {wrong:?}");
    assert!(unknown * 2 >= wrong, "an unknown email is refused in {unknown:?}, a wrong password in {wrong:?}");
    app.stop().await;
}

async fn refresh_rotates_and_detects_reuse(app: &TestApp) {
    let strict = TestApp::spawn_with(app.backend, &[("REFRESH_REUSE_GRACE_SECS", "0")]).await;
    let email = strict.account("rot").await;
    let first = strict.login(&email).await;
    let (status, second) =
        strict.post("/v1/auth/refresh", None, json!({"refresh_token": first["refresh_token"]})).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["id"], first["id"], "same session");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(strict.get("/v1/auth/me", second["access_token"].as_str()).await.0, StatusCode::OK);
    let (status, third) =
        strict.post("/v1/auth/refresh", None, json!({"refresh_token": second["refresh_token"]})).await;
    assert_eq!(status, StatusCode::OK);

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // The first token was rotated: presenting it again is theft and ends the whole session.
    let reuse = strict.post("/v1/auth/refresh", None, json!({"refresh_token": first["refresh_token"]})).await;
    expect_error(&reuse, 401, "refresh_token_reused");
    expect_error(&strict.get("/v1/auth/me", third["access_token"].as_str()).await, 401, "unauthorized");
    let after = strict.post("/v1/auth/refresh", None, json!({"refresh_token": third["refresh_token"]})).await;
    expect_error(&after, 401, "invalid_refresh_token");

    expect_error(
        &strict.post("/v1/auth/refresh", None, json!({"refresh_token": "nope"})).await,
        401,
        "invalid_refresh_token",
    );
    expect_error(&strict.post("/v1/auth/refresh", None, json!({"refresh_token": ""})).await, 422, "validation_failed");
    expect_error(&strict.post("/v1/auth/refresh", None, json!({"refresh_token": 12})).await, 422, "validation_failed");
    strict.stop().await;
}

async fn concurrent_refresh_inside_grace_keeps_the_session(app: &TestApp) {
    let email = app.account("tabs").await;
    let tokens = app.login(&email).await;
    let body = json!({"refresh_token": tokens["refresh_token"]});
    let (a, b) =
        tokio::join!(app.post("/v1/auth/refresh", None, body.clone()), app.post("/v1/auth/refresh", None, body));
    assert_eq!(a.0, StatusCode::OK, "{}", a.1);
    assert_eq!(b.0, StatusCode::OK, "{}", b.1);
    assert_eq!(a.1["refresh_token"], b.1["refresh_token"], "one successor: never two refresh chains");
    let mut next = vec![];
    for t in [&a.1, &b.1] {
        assert_eq!(app.get("/v1/auth/me", t["access_token"].as_str()).await.0, StatusCode::OK);
        let (status, body) = app.post("/v1/auth/refresh", None, json!({"refresh_token": t["refresh_token"]})).await;
        assert_eq!(status, StatusCode::OK, "both tabs keep working");
        next.push(body["refresh_token"].clone());
    }
    assert_eq!(next[0], next[1]);
}

async fn forged_expired_and_foreign_tokens_are_refused(app: &TestApp) {
    let admin = app.admin("forge").await;
    let (_, me) = app.get("/v1/auth/me", Some(&admin.token)).await;
    let account_id: uuid::Uuid = me["account"]["id"].as_str().unwrap().parse().unwrap();
    let session_id: uuid::Uuid = {
        let payload = admin.token.split('.').nth(1).unwrap();
        let bytes = storecrm::crypto::unb64(payload).unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()["sid"].as_str().unwrap().parse().unwrap()
    };
    let now = storecrm::now();
    let claims =
        |exp: i64, typ: &str| AccountClaims { sub: account_id, sid: session_id, typ: typ.into(), iat: now - 10, exp };
    let ours = Keys::derive(&storecrm::config::Secret::new(common::SECRET_KEY));
    let theirs = Keys::derive(&storecrm::config::Secret::new("another-deployment-secret-key-0123456789"));

    // Control: a token we sign ourselves with the server's key works.
    assert_eq!(app.get("/v1/auth/me", Some(&ours.sign(&claims(now + 60, "account")))).await.0, StatusCode::OK);
    let cases = [
        ("expired", ours.sign(&claims(now - 1, "account"))),
        ("other key", theirs.sign(&claims(now + 60, "account"))),
        ("garbage", "not.a.jwt".to_string()),
        ("alg none", {
            let h = storecrm::crypto::b64(br#"{"alg":"none","typ":"JWT"}"#);
            let p = storecrm::crypto::b64(serde_json::to_string(&claims(now + 60, "account")).unwrap().as_bytes());
            format!("{h}.{p}.")
        }),
        ("alg HS512", {
            let key = jsonwebtoken::EncodingKey::from_secret(b"guess");
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
                &claims(now + 60, "account"),
                &key,
            )
            .unwrap()
        }),
        ("tampered", {
            let mut parts: Vec<String> = admin.token.split('.').map(str::to_string).collect();
            let mut payload: Value = serde_json::from_slice(&storecrm::crypto::unb64(&parts[1]).unwrap()).unwrap();
            payload["exp"] = json!(now + 999_999);
            parts[1] = storecrm::crypto::b64(payload.to_string().as_bytes());
            parts.join(".")
        }),
    ];
    for (what, token) in cases {
        expect_error(&app.get("/v1/auth/me", Some(&token)).await, 401, "unauthorized");
        let on_store = app.get(&admin.store(""), Some(&token)).await;
        assert_eq!(on_store.0, StatusCode::UNAUTHORIZED, "{what}: {}", on_store.1);
    }
    // A valid credential of the wrong kind is a 403.
    let profile_typed = ours.sign(&claims(now + 60, "profile"));
    expect_error(&app.get("/v1/auth/me", Some(&profile_typed)).await, 403, "forbidden");
    let key = app.post(&admin.store("/api-keys"), Some(&admin.token), json!({"name": "k"})).await.1;
    expect_error(&app.get("/v1/auth/me", key["key"].as_str()).await, 403, "forbidden");
    expect_error(&app.post("/v1/stores", key["key"].as_str(), json!({"name": "x"})).await, 403, "forbidden");
}

async fn stores_create_list_get_update(app: &TestApp) {
    let admin = app.admin("lister").await;
    let mut ids = vec![admin.store_id.clone()];
    for i in 0..4 {
        let (status, s) = app.post("/v1/stores", Some(&admin.token), json!({"name": format!("  Shop {i} ")})).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(s["name"], format!("Shop {i}"));
        assert_eq!(s["allowed_origins"], json!([]));
        assert!(s["from_email"].is_null());
        ids.push(s["id"].as_str().unwrap().to_string());
    }
    // Keyset pages of 2: every store exactly once, and a store created between pages shows up.
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/stores?limit=2&cursor={c}"),
            None => "/v1/stores?limit=2".to_string(),
        };
        let (status, page) = app.get(&path, Some(&admin.token)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item["role"], "owner");
            seen.push(item["id"].as_str().unwrap().to_string());
        }
        pages += 1;
        if pages == 1 {
            let (_, late) = app.post("/v1/stores", Some(&admin.token), json!({"name": "late"})).await;
            ids.push(late["id"].as_str().unwrap().to_string());
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);

    let other = app.admin("other").await;
    let (_, first) = app.get("/v1/stores?limit=1", Some(&admin.token)).await;
    let foreign =
        app.get(&format!("/v1/stores?cursor={}", first["cursor"].as_str().unwrap()), Some(&other.token)).await;
    expect_error(&foreign, 422, "validation_failed");
    assert_eq!(foreign.1["validation_errors"][0]["field"], "cursor");

    let (status, got) = app.get(&admin.store(""), Some(&admin.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["id"], admin.store_id.as_str());

    let (status, updated) = app
        .put(
            &admin.store(""),
            Some(&admin.token),
            json!({"name": "Renamed", "from_email": "Shop@Example.COM", "from_name": "The Shop",
                   "allowed_origins": ["https://Shop.example.com/", "http://localhost:3000"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Renamed");
    assert_eq!(updated["from_email"], "Shop@example.com");
    assert_eq!(updated["allowed_origins"], json!(["https://shop.example.com", "http://localhost:3000"]));
    let (_, partial) = app.put(&admin.store(""), Some(&admin.token), json!({"from_name": null})).await;
    assert!(partial["from_name"].is_null());
    assert_eq!(partial["from_email"], "Shop@example.com", "absent fields stay");
    assert_eq!(partial["name"], "Renamed");
    assert_eq!(app.get(&admin.store(""), Some(&admin.token)).await.1, partial);
}

async fn store_settings_are_validated(app: &TestApp) {
    let admin = app.admin("valid").await;
    let before = app.get(&admin.store(""), Some(&admin.token)).await.1;
    let bad = app
        .put(
            &admin.store(""),
            Some(&admin.token),
            json!({"name": "ok", "from_email": "nope", "allowed_origins": ["ftp://x"]}),
        )
        .await;
    expect_error(&bad, 422, "validation_failed");
    assert_eq!(
        bad.1["validation_errors"],
        json!([{"field": "from_email", "error": "invalid_email"}, {"field": "allowed_origins[0]", "error": "invalid_origin"}])
    );
    assert_eq!(app.get(&admin.store(""), Some(&admin.token)).await.1, before, "nothing written");
    expect_error(&app.put(&admin.store(""), Some(&admin.token), json!({"name": "  "})).await, 422, "validation_failed");
    expect_error(
        &app.put(&admin.store(""), Some(&admin.token), json!({"allowed_origins": "x"})).await,
        422,
        "validation_failed",
    );
    expect_error(&app.post("/v1/stores", Some(&admin.token), json!({})).await, 422, "validation_failed");
    expect_error(
        &app.post("/v1/stores", Some(&admin.token), json!({"name": "x".repeat(201)})).await,
        422,
        "validation_failed",
    );
}

async fn api_keys_lifecycle(app: &TestApp) {
    let admin = app.admin("keys").await;
    let (status, created) = app.post(&admin.store("/api-keys"), Some(&admin.token), json!({"name": "server"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk_") && key.len() > 40);
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));

    let (status, store) = app.get(&admin.store(""), Some(&key)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(store["id"], admin.store_id.as_str());
    // The key is a full admin of its store: it can change settings and list keys.
    assert_eq!(app.put(&admin.store(""), Some(&key), json!({"name": "by key"})).await.0, StatusCode::OK);

    let (status, list) = app.get(&admin.store("/api-keys"), Some(&key)).await;
    assert_eq!(status, StatusCode::OK);
    let listed = &list["items"][0];
    assert_eq!(listed["id"], created["id"]);
    assert!(listed.get("key").is_none(), "no secret in lists");
    assert!(listed["last_used_at"].as_i64().is_some(), "use is recorded");
    assert!(listed["revoked_at"].is_null());
    assert!(!list.to_string().contains(&key[12..]));

    let path = admin.store(&format!("/api-keys/{}", created["id"].as_str().unwrap()));
    assert_eq!(app.delete(&path, Some(&admin.token)).await, (StatusCode::OK, json!({"deleted": true})));
    expect_error(&app.get(&admin.store(""), Some(&key)).await, 401, "unauthorized");
    let (_, list) = app.get(&admin.store("/api-keys"), Some(&admin.token)).await;
    assert!(list["items"][0]["revoked_at"].as_i64().is_some());

    expect_error(
        &app.delete(&admin.store(&format!("/api-keys/{}", uuid::Uuid::now_v7())), Some(&admin.token)).await,
        404,
        "not_found",
    );
    expect_error(&app.get(&admin.store(""), Some("sk_not-a-real-key")).await, 401, "unauthorized");
    let forged = format!(
        "sk_{}",
        storecrm::crypto::b64(
            &[[7u8; 32].as_slice(), uuid::Uuid::parse_str(&admin.store_id).unwrap().as_bytes()].concat()
        )
    );
    expect_error(&app.get(&admin.store(""), Some(&forged)).await, 401, "unauthorized");
    expect_error(
        &app.post(&admin.store("/api-keys"), Some(&admin.token), json!({"name": ""})).await,
        422,
        "validation_failed",
    );

    // Paging over keys.
    for i in 0..3 {
        app.post(&admin.store("/api-keys"), Some(&admin.token), json!({"name": format!("k{i}")})).await;
    }
    let (_, p1) = app.get(&admin.store("/api-keys?limit=3"), Some(&admin.token)).await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 3);
    let (_, p2) = app
        .get(&admin.store(&format!("/api-keys?limit=3&cursor={}", p1["cursor"].as_str().unwrap())), Some(&admin.token))
        .await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert!(p2["cursor"].is_null());
}

async fn stores_are_isolated_from_each_other(app: &TestApp) {
    let a = app.admin("alice").await;
    let b = app.admin("bert").await;
    let a_key = app.post(&a.store("/api-keys"), Some(&a.token), json!({"name": "a"})).await.1;
    let b_key = app.post(&b.store("/api-keys"), Some(&b.token), json!({"name": "b"})).await.1;
    let a_key_secret = a_key["key"].as_str().unwrap();

    // Another store's records answer 404, whichever credential is used.
    for token in [a.token.as_str(), a_key_secret] {
        expect_error(&app.get(&b.store(""), Some(token)).await, 404, "not_found");
        expect_error(&app.put(&b.store(""), Some(token), json!({"name": "pwned"})).await, 404, "not_found");
        expect_error(&app.get(&b.store("/api-keys"), Some(token)).await, 404, "not_found");
        let b_key_path = b.store(&format!("/api-keys/{}", b_key["id"].as_str().unwrap()));
        expect_error(&app.delete(&b_key_path, Some(token)).await, 404, "not_found");
        // Even addressed under its own store, another store's key id is unknown.
        let cross = a.store(&format!("/api-keys/{}", b_key["id"].as_str().unwrap()));
        expect_error(&app.delete(&cross, Some(token)).await, 404, "not_found");
    }
    expect_error(&app.get(&format!("/v1/stores/{}", uuid::Uuid::now_v7()), Some(&a.token)).await, 404, "not_found");
    assert_eq!(app.get(&b.store(""), b_key["key"].as_str()).await.1["name"], "bert's shop");
    let (_, a_list) = app.get("/v1/stores", Some(&a.token)).await;
    assert_eq!(a_list["items"].as_array().unwrap().len(), 1);
}

async fn revocation_holds_across_instances(app: &TestApp) {
    let other = app.sibling().await;
    let admin = app.admin("multi").await;
    let key = app.post(&admin.store("/api-keys"), Some(&admin.token), json!({"name": "k"})).await.1;
    let key = key["key"].as_str().unwrap();
    assert_eq!(other.get(&admin.store(""), Some(key)).await.0, StatusCode::OK);
    assert_eq!(other.get("/v1/auth/me", Some(&admin.token)).await.0, StatusCode::OK);

    let keys = app.get(&admin.store("/api-keys"), Some(&admin.token)).await.1;
    app.delete(&admin.store(&format!("/api-keys/{}", keys["items"][0]["id"].as_str().unwrap())), Some(&admin.token))
        .await;
    expect_error(&other.get(&admin.store(""), Some(key)).await, 401, "unauthorized");

    assert_eq!(other.post("/v1/auth/logout", Some(&admin.token), json!({})).await.0, StatusCode::OK);
    expect_error(&app.get("/v1/auth/me", Some(&admin.token)).await, 401, "unauthorized");
    other.stop().await;
}

async fn secrets_are_stored_hashed(app: &TestApp) {
    let admin = app.admin("hash").await;
    let key = app.post(&admin.store("/api-keys"), Some(&admin.token), json!({"name": "k"})).await.1;
    let key = key["key"].as_str().unwrap().to_string();
    let dump = dump_database(app).await;
    assert!(!dump.contains(&key), "API key stored in clear");
    assert!(!dump.contains(&admin.refresh_token), "refresh token stored in clear");
    assert!(!dump.contains(PASSWORD), "password stored in clear");
    assert!(dump.contains("$argon2id$"), "passwords are argon2id hashes");
}

/// Every text and blob cell of the tables this issue owns, as one string (blobs as base64url).
async fn dump_database(app: &TestApp) -> String {
    use sqlx::{Column, Connection, Row, TypeInfo};
    let tables = ["accounts", "account_sessions", "account_refresh_tokens", "stores", "store_members", "api_keys"];
    let mut out = String::new();
    macro_rules! dump {
        ($conn:expr) => {
            for t in tables {
                let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SELECT * FROM {t}")))
                    .fetch_all(&mut $conn)
                    .await
                    .unwrap();
                for r in rows {
                    for (i, c) in r.columns().iter().enumerate() {
                        let ty = c.type_info().name().to_ascii_uppercase();
                        if ty.contains("TEXT") {
                            if let Ok(Some(v)) = r.try_get::<Option<String>, _>(i) {
                                out.push_str(&v);
                                out.push('\n');
                            }
                        } else if ty.contains("BLOB") || ty.contains("BYTEA") {
                            if let Ok(Some(v)) = r.try_get::<Option<Vec<u8>>, _>(i) {
                                out.push_str(&storecrm::crypto::b64(&v));
                                out.push_str(&String::from_utf8_lossy(&v));
                                out.push('\n');
                            }
                        }
                    }
                }
            }
        };
    }
    match app.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&app.database_url).await.unwrap();
            dump!(c);
        }
        Backend::Postgres => {
            let mut c = common::pg_connect(&app.database_url).await;
            dump!(c);
        }
    }
    out
}

async fn cli_bootstraps_account_store_and_key(app: &TestApp) {
    let run = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_storecrm"))
            .args(args)
            .env("DATABASE_URL", &app.database_url)
            .env("SECRET_KEY", common::SECRET_KEY)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (ok, out, err) = run(&["migrate"], None);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["migrated"]["applied"], json!([]));

    let email = format!("cli-{}@example.com", uuid::Uuid::now_v7().simple());
    let (ok, out, err) = run(&["accounts", "create", "--email", &email, "--password-stdin"], Some("from stdin pw\n"));
    assert!(ok, "{err}");
    let account: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(account["account"]["email"], email.as_str());
    assert_eq!(out.trim().lines().count(), 1, "one JSON object");

    let (ok, _, err) = run(&["accounts", "create", "--email", &email, "--password", "another pw"], None);
    assert!(!ok && err.contains("email"), "duplicate refused: {err}");
    let (ok, _, err) = run(&["stores", "create", "--name", "X", "--owner", "ghost@example.com"], None);
    assert!(!ok && err.contains("ghost@example.com"), "{err}");

    let (ok, out, err) = run(&["stores", "create", "--name", "CLI shop", "--owner", &email], None);
    assert!(ok, "{err}");
    let store: Value = serde_json::from_str(out.trim()).unwrap();
    let store_id = store["store"]["id"].as_str().unwrap();
    let (ok, out, err) = run(&["api-keys", "create", "--store", store_id, "--name", "bootstrap"], None);
    assert!(ok, "{err}");
    let key: Value = serde_json::from_str(out.trim()).unwrap();
    let secret = key["api_key"]["key"].as_str().unwrap();
    for f in ["id", "name", "prefix", "key"] {
        assert!(key["api_key"][f].is_string(), "{f}");
    }

    // The running server accepts what the CLI made.
    let (status, got) = app.get(&format!("/v1/stores/{store_id}"), Some(secret)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["name"], "CLI shop");
    let tokens = app.post("/v1/auth/login", None, json!({"email": email, "password": "from stdin pw"})).await;
    assert_eq!(tokens.0, StatusCode::OK);

    let (ok, _, err) = {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_storecrm"))
            .arg("migrate")
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .env_remove("SECRET_KEY")
            .output()
            .unwrap();
        (out.status.success(), (), String::from_utf8(out.stderr).unwrap())
    };
    // Migrating needs no SECRET_KEY: what fails here is the database, said in one line.
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(err.contains("DATABASE_URL") && !err.contains("SECRET_KEY"), "{err}");
}

async fn the_outbox_is_visible_and_a_failed_mail_can_be_retried(app: &TestApp) {
    let admin = app.admin("outbox").await;
    let (status, _) = app.post(&admin.store("/profiles/auth/code"), None, json!({"email": "box@example.com"})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let code = app.code_for("box@example.com", 1).await;
    let mut sent = Value::Null;
    for _ in 0..100 {
        sent = app.get(&admin.store("/mail?status=sent"), Some(&admin.token)).await.1;
        if sent["items"].as_array().is_some_and(|i| !i.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mail = &sent["items"][0];
    assert_eq!((mail["kind"].as_str(), mail["to"].as_str()), (Some("sign_in_code"), Some("box@example.com")), "{sent}");
    let subject = mail["subject"].as_str().unwrap();
    assert!(subject.contains("••••••") && !subject.contains(&code), "the code never shows in a list: {subject}");
    assert!(mail["sent_at"].is_i64() && mail.get("html").is_none() && mail.get("text").is_none(), "{mail}");

    // A mail given up on is listed as failed and can be queued again, once. Its message is a
    // real one: queued again, the worker may send it before the second retry (which then finds
    // it queued or sent, not failed, either way).
    let failed = uuid::Uuid::now_v7();
    let message = serde_json::to_string(&storecrm::mail::OutgoingMail {
        message_id: None,
        from: "shop@example.com".into(),
        to: "gone@example.com".into(),
        reply_to: None,
        subject: "Hello".into(),
        html: "<p>Hello</p>".into(),
        text: "Hello".into(),
        headers: vec![],
    })
    .unwrap();
    assert!(!message.contains('\''));
    app.exec(
        &format!(
            "INSERT INTO mail_outbox (store_id, id, to_key, message, attempts, next_attempt_at, created_at, failed_at, last_error, kind, subject)
             VALUES ($1, $2, 'gone@example.com', '{message}', 12, 1, 1, 1, '550 no such user', 'other', 'Hello')"
        ),
        &[common::Bind::U(common::uuid(&json!(admin.store_id))), common::Bind::U(failed)],
    )
    .await;
    let (_, list) = app.get(&admin.store("/mail?status=failed"), Some(&admin.token)).await;
    assert_eq!(list["items"][0]["id"], json!(failed), "{list}");
    assert_eq!(list["items"][0]["last_error"], "550 no such user");
    let retry = admin.store(&format!("/mail/{failed}/retry"));
    let (status, again) = app.post(&retry, Some(&admin.token), json!({})).await;
    assert_eq!(
        (status, again["status"].as_str(), again["attempts"].as_i64()),
        (StatusCode::OK, Some("queued"), Some(0)),
        "{again}"
    );
    expect_error(&app.post(&retry, Some(&admin.token), json!({})).await, 409, "not_failed");
    let other = app.admin("outbox2").await;
    expect_error(
        &app.post(&other.store(&format!("/mail/{failed}/retry")), Some(&other.token), json!({})).await,
        404,
        "not_found",
    );
    expect_error(&app.get(&admin.store("/mail?status=lost"), Some(&admin.token)).await, 422, "validation_failed");

    // The mail queued again goes out too: then this instance has sent two.
    for _ in 0..200 {
        let sent = app.get(&admin.store("/mail?status=sent"), Some(&admin.token)).await.1;
        if sent["items"].as_array().is_some_and(|i| i.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = app.req(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    assert!(text.contains("storecrm_mail_sent_total 2"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("storecrm_mail_queued ")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("storecrm_mail_delivery_seconds_count 2")), "{text}");
}

/// Runs the binary against the app's database; (success, stdout, stderr).
pub(crate) fn cli(app: &TestApp, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_storecrm"))
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .env("SECRET_KEY", common::SECRET_KEY)
        .env_remove("RUST_LOG")
        .env("MAIL_DIR", app.mail_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn one_json(out: &str) -> Value {
    assert_eq!(out.trim().lines().count(), 1, "one JSON object: {out}");
    serde_json::from_str(out.trim()).unwrap()
}

async fn the_cli_an_operator_lives_in(app: &TestApp) {
    // init: account, store and key in one step; quiet on stderr (warnings only).
    let email = format!("op-{}@example.com", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let (ok, out, err) = cli(
        app,
        &["init", "--email", &email, "--password-stdin", "--store-name", "Op shop"],
        Some("a long password\n"),
    );
    assert!(ok && err.is_empty(), "{err}");
    let init = one_json(&out);
    let (store_id, key) =
        (init["store"]["id"].as_str().unwrap().to_string(), init["api_key"]["key"].as_str().unwrap().to_string());
    assert_eq!(init["account"]["email"], email.as_str());
    assert_eq!(app.get(&format!("/v1/stores/{store_id}"), Some(&key)).await.0, StatusCode::OK);
    let other = format!("op2-{}@example.com", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let (ok, out, _) = cli(
        app,
        &["init", "--email", &other, "--password", "a long password", "--store-name", "Second", "--env"],
        None,
    );
    assert!(ok);
    assert!(
        out.lines().next().unwrap().starts_with("export STORECRM_STORE_ID=")
            && out.contains("export STORECRM_API_KEY=sk_"),
        "{out}"
    );

    // stores list, all or one owner's
    let (ok, out, _) = cli(app, &["stores", "list"], None);
    assert!(ok);
    assert!(one_json(&out)["stores"].as_array().unwrap().iter().any(|s| s["id"] == store_id.as_str()));
    let (_, out, _) = cli(app, &["stores", "list", "--owner", &email], None);
    let mine = one_json(&out);
    assert_eq!((mine["stores"].as_array().unwrap().len(), &mine["stores"][0]["role"]), (1, &json!("owner")));

    // api-keys list shows no secret; revoke takes effect at once
    let (_, out, _) = cli(app, &["api-keys", "list", "--store", &store_id], None);
    let keys = one_json(&out);
    let key_id = keys["api_keys"][0]["id"].as_str().unwrap().to_string();
    assert!(!out.contains(&key) && keys["api_keys"][0].get("key").is_none(), "{out}");
    let (ok, out, err) = cli(app, &["api-keys", "revoke", "--store", &store_id, "--id", &key_id], None);
    assert!(ok, "{err}");
    assert_eq!(one_json(&out), json!({"revoked": true}));
    assert_eq!(app.get(&format!("/v1/stores/{store_id}"), Some(&key)).await.0, StatusCode::UNAUTHORIZED);
    let (ok, _, err) =
        cli(app, &["api-keys", "revoke", "--store", &store_id, "--id", &uuid::Uuid::now_v7().to_string()], None);
    assert!(!ok && err.lines().count() == 1 && err.contains("api-keys list"), "{err}");

    // set-password, and the password rules said in full
    let (ok, _, err) =
        cli(app, &["accounts", "set-password", "--email", &email, "--password-stdin"], Some("a new long password\n"));
    assert!(ok, "{err}");
    let login = app.post("/v1/auth/login", None, json!({"email": email, "password": "a new long password"})).await;
    assert_eq!(login.0, StatusCode::OK, "{}", login.1);
    let (ok, _, err) = cli(app, &["accounts", "set-password", "--email", &email, "--password-stdin"], Some("short\n"));
    assert!(!ok && err.contains("at least 8"), "{err}");
    let (ok, _, err) = cli(app, &["accounts", "create", "--email", "x@example.com"], None);
    assert!(!ok && err.lines().count() == 1 && err.contains("--password-stdin"), "{err}");

    // mail list / show: the local mail viewer
    let (status, _) = app
        .post(&format!("/v1/stores/{store_id}/profiles/auth/code"), None, json!({"email": "viewer@example.com"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (ok, out, err) = cli(app, &["mail", "list", "--store", &store_id], None);
    assert!(ok, "{err}");
    let listed = one_json(&out);
    let mail = &listed["mail"][0];
    assert_eq!(
        (mail["kind"].as_str(), mail["to"].as_str()),
        (Some("sign_in_code"), Some("viewer@example.com")),
        "{listed}"
    );
    // Delivered (the file transport): the viewer shows the mail decoded, read from its .eml.
    let code = app.code_for("viewer@example.com", 1).await;
    let mut shown = Value::Null;
    for _ in 0..100 {
        let (ok, out, err) = cli(app, &["mail", "show", mail["id"].as_str().unwrap()], None);
        assert!(ok, "{err}");
        shown = one_json(&out);
        if shown["mail"]["status"] == "sent" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shown["mail"]["id"], mail["id"]);
    assert_eq!(shown["message"]["to"], "viewer@example.com", "{shown}");
    assert!(shown["message"]["text"].as_str().unwrap().contains(&code), "{shown}");
    assert!(shown["file"].as_str().unwrap().ends_with(&format!("{}.eml", mail["id"].as_str().unwrap())), "{shown}");
    let (ok, _, _) = cli(app, &["mail", "list", "--status", "lost"], None);
    assert!(!ok);

    // ready: the container health check asks /readyz
    let ready = |addr: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_storecrm"))
            .arg("ready")
            .env("LISTEN_ADDR", addr)
            .status()
            .unwrap()
    };
    assert!(ready(app.base.trim_start_matches("http://")).success());
    assert!(!ready("127.0.0.1:1").success());

    // -v brings the info lines back
    let (ok, _, err) = cli(app, &["-v", "stores", "list"], None);
    assert!(ok && !err.is_empty(), "verbose logs: {err}");
}

/// A SQLite path in a folder that does not exist is refused in one line that names the folder,
/// instead of the folder being created.
#[test]
fn a_sqlite_path_in_a_missing_folder_is_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_storecrm"))
        .arg("migrate")
        .env("DATABASE_URL", "sqlite:///nonexistent-storecrm-dir/sub/x.db")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("mkdir -p /nonexistent-storecrm-dir/sub"), "{err}");
    assert!(!std::path::Path::new("/nonexistent-storecrm-dir").exists());
}
