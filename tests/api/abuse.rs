//! Abuse stories: what an attacker who knows only a shopper's email address, or a hostile client,
//! must not be able to do (§1 unknown fields, U+0000, CORS; §4 proof and claims, limits; §6 link
//! targets). Each case starts its own server (some with env overrides) on both backends.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::common::{self, Admin, Backend, TestApp, expect_error};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    run = own_app;
    a_claim_cannot_list_or_revoke_the_profiles_sessions,
    holding_sessions_keep_their_rights,
    a_claims_subscribe_answer_leaks_nothing,
    admin_created_profiles_are_claims_too,
    link_targets_must_be_allowed_origins,
    one_confirmation_mail_per_subscription_per_minute,
    confirmation_mails_are_capped_per_recipient_per_day,
    session_creation_is_limited_per_address,
    cors_echoes_only_allowed_origins,
    forwarded_for_counts_the_entry_the_proxy_appended,
    address_bucket_is_checked_before_email_bucket,
    ipv6_addresses_are_limited_per_64,
    profile_refresh_reuse_inside_grace_answers_the_same_successor,
    account_refresh_reuse_inside_grace_answers_the_same_successor,
    login_failures_are_limited_per_email,
    login_failures_are_limited_per_address,
    nul_characters_are_refused_as_invalid_text,
    unknown_body_fields_are_refused,
    stored_files_are_private,
);

/// Each case spawns its own app, with the env overrides it needs.
async fn own_app(backend: Backend, case: impl AsyncFnOnce(Backend)) {
    case(backend).await
}

type Reply = (StatusCode, Value, HeaderMap);

/// Sends a request and keeps the headers next to the checked status and body.
async fn send(r: RequestBuilder) -> Reply {
    let resp = r.send().await.expect("request sent");
    let headers = resp.headers().clone();
    let (status, body) = common::read(resp).await;
    (status, body, headers)
}

/// 429 `rate_limited` with a `Retry-After` header of at least one second.
#[track_caller]
fn expect_limited(got: &Reply, what: &str) {
    assert_eq!(got.0, StatusCode::TOO_MANY_REQUESTS, "{what}: {}", got.1);
    assert_eq!(got.1["error"], "rate_limited", "{what}: {}", got.1);
    let retry = got.2.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    assert!(retry.is_some_and(|r| r >= 1), "{what}: Retry-After {:?}", got.2.get("retry-after"));
}

/// 422 whose `validation_errors` name `field` with `error`.
#[track_caller]
fn expect_field_error(got: &(StatusCode, Value), field: &str, error: &str) {
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{field}/{error}: {}", got.1);
    let errors = got.1["validation_errors"].as_array().unwrap_or_else(|| panic!("no validation_errors: {}", got.1));
    assert!(
        errors.iter().any(|e| e["field"] == field && e["error"] == error),
        "{{field: {field}, error: {error}}} not in {}",
        got.1
    );
}

/// 422 with some `validation_errors[].error == "invalid_text"` (never a 500).
#[track_caller]
fn expect_invalid_text(got: &(StatusCode, Value), what: &str) {
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {}", got.1);
    let errors = got.1["validation_errors"].as_array().unwrap_or_else(|| panic!("{what}: {}", got.1));
    assert!(errors.iter().any(|e| e["error"] == "invalid_text"), "{what}: {}", got.1);
}

fn tok(t: &Value) -> &str {
    t["access_token"].as_str().unwrap()
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}"))
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect();
    k.sort();
    k
}

async fn initialize(app: &TestApp, admin: &Admin) -> Value {
    let (status, t) = app.post(&admin.store("/profiles/initialize"), None, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    t
}

async fn connect(app: &TestApp, admin: &Admin, email: &str, bearer: Option<&str>) -> Value {
    let (status, t) = app.post(&admin.store("/profiles/connect"), bearer, json!({"email": email})).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["is_verified"], false, "{t}");
    t
}

/// Signs in with a magic code: request, read the mail, verify → a verified session.
async fn sign_in(app: &TestApp, admin: &Admin, email: &str) -> Value {
    let n = app.mails_to(email).len() + 1;
    let sent = app.post(&admin.store("/profiles/auth/code"), None, json!({"email": email})).await;
    assert_eq!(sent, (StatusCode::ACCEPTED, json!({"sent": true})));
    let code = app.code_for(email, n).await;
    let (status, t) =
        app.post(&admin.store("/profiles/auth/verify"), None, json!({"email": email, "code": code})).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["is_verified"], true);
    t
}

async fn admin_profile(app: &TestApp, admin: &Admin, body: Value) -> Value {
    let (status, p) = app.post(&admin.store("/profiles"), Some(&admin.token), body).await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    p
}

async fn text_taxonomy(app: &TestApp, admin: &Admin) -> String {
    let (status, t) = app
        .post(
            &admin.store("/taxonomies"),
            Some(&admin.token),
            json!({"key": "seg", "schema": [{"key": "tags", "type": "text"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    id(&t).to_string()
}

fn tags(tax: &str, values: Value) -> Value {
    json!([{"taxonomy_id": tax, "fields": [{"key": "tags", "type": "text", "value": values}]}])
}

async fn audience(app: &TestApp, admin: &Admin, body: Value) -> Value {
    let (status, a) = app.post(&admin.store("/audiences"), Some(&admin.token), body).await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    a
}

/// A double opt-in template; its mails' subjects start with "Confirm ".
async fn confirm_template(app: &TestApp, admin: &Admin) -> String {
    let (status, t) = app
        .post(
            &admin.store("/email-templates"),
            Some(&admin.token),
            json!({"key": "confirm", "subject": "Confirm {{ audience_name }}",
                   "body": "<p><a href=\"{{ confirm_url }}\">Yes, subscribe me</a></p>"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    id(&t).to_string()
}

/// Confirmation mails (not code mails) delivered to `to` so far.
fn confirmation_mails(app: &TestApp, to: &str) -> usize {
    app.mails_to(to).iter().filter(|m| m.lines().any(|l| l.starts_with("Subject: Confirm "))).count()
}

/// Waits until `at_least` confirmation mails reached `to` (up to 5 s), then 1.5 s more so that any
/// extra mail would have arrived too; returns the count.
async fn settled_confirmation_mails(app: &TestApp, to: &str, at_least: usize) -> usize {
    for _ in 0..100 {
        if confirmation_mails(app, to) >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    confirmation_mails(app, to)
}

// ---------------------------------------------------------------------------------------------
// 1. Proof vs claim: naming a shopper's address gives no power over their sessions.

async fn a_claim_cannot_list_or_revoke_the_profiles_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin("claim").await;
    let victim = "victim@example.com";
    let v = sign_in(&app, &admin, victim).await;
    let pid = v["profile_id"].as_str().unwrap();

    // The attacker knows only the address: connect without a bearer.
    let a = connect(&app, &admin, victim, None).await;
    assert_eq!(a["profile_id"], pid, "connect reaches the existing profile");
    let list = admin.store(&format!("/profiles/{pid}/sessions"));
    expect_error(&app.get(&list, Some(tok(&a))).await, 403, "verification_required");
    expect_error(&app.delete(&format!("{list}/{}", id(&v)), Some(tok(&a))).await, 403, "verification_required");
    expect_error(&app.delete(&list, Some(tok(&a))).await, 403, "verification_required");

    // The victim's session is untouched and still sees everything.
    let (status, me) = app.get(&admin.store("/profiles/me"), Some(tok(&v))).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert!(me["taxonomies"].is_array(), "{me}");
    let sessions = me["auth_tokens"].as_array().unwrap_or_else(|| panic!("{me}"));
    assert!(sessions.iter().any(|t| t["id"] == v["id"]), "{me}");
    assert_eq!(app.get(&list, Some(&admin.token)).await.0, StatusCode::OK);

    // Same when the profile was created by someone else's connect (never verified): a later
    // connect of that address is a claim, not the owner.
    let owner = connect(&app, &admin, "owner@example.com", None).await;
    let other = connect(&app, &admin, "owner@example.com", None).await;
    assert_eq!(other["profile_id"], owner["profile_id"]);
    let list = admin.store(&format!("/profiles/{}/sessions", owner["profile_id"].as_str().unwrap()));
    expect_error(&app.get(&list, Some(tok(&other))).await, 403, "verification_required");
    expect_error(&app.delete(&format!("{list}/{}", id(&owner)), Some(tok(&other))).await, 403, "verification_required");
    expect_error(&app.delete(&list, Some(tok(&other))).await, 403, "verification_required");
    assert_eq!(app.get(&admin.store("/profiles/me"), Some(tok(&owner))).await.0, StatusCode::OK);
    app.stop().await;
}

/// Contrast (holds on today's code too): sessions that hold their profile keep their rights.
async fn holding_sessions_keep_their_rights(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin("holding").await;
    let tax = text_taxonomy(&app, &admin).await;

    // A profile created by this very connect (new email).
    let c = connect(&app, &admin, "newcomer@example.com", None).await;
    let pid = c["profile_id"].as_str().unwrap();
    let (status, _) = app
        .put(
            &admin.store(&format!("/profiles/{pid}")),
            Some(&admin.token),
            json!({"taxonomies": tags(&tax, json!(["mine"]))}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, me) = app.get(&admin.store("/profiles/me"), Some(tok(&c))).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["taxonomies"][0]["fields"][0]["value"], json!(["mine"]), "{me}");
    assert!(me["auth_tokens"].as_array().unwrap().iter().any(|t| t["id"] == c["id"]), "{me}");
    let (status, list) = app.get(&admin.store(&format!("/profiles/{pid}/sessions")), Some(tok(&c))).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(list["items"].as_array().unwrap().iter().any(|t| t["id"] == c["id"]), "{list}");

    // A guest that attached a new email with its guest bearer.
    let g = initialize(&app, &admin).await;
    let gc = connect(&app, &admin, "guest-upgrade@example.com", Some(tok(&g))).await;
    assert_eq!(gc["profile_id"], g["profile_id"], "the upgrade keeps the profile id");
    let gid = gc["profile_id"].as_str().unwrap();
    let (status, me) = app.get(&admin.store("/profiles/me"), Some(tok(&gc))).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert!(me["auth_tokens"].as_array().unwrap().iter().any(|t| t["id"] == gc["id"]), "{me}");
    assert_eq!(app.get(&admin.store(&format!("/profiles/{gid}/sessions")), Some(tok(&gc))).await.0, StatusCode::OK);

    // A verified session lists and revokes.
    let v1 = sign_in(&app, &admin, "verified@example.com").await;
    let v2 = sign_in(&app, &admin, "verified@example.com").await;
    let list = admin.store(&format!("/profiles/{}/sessions", v1["profile_id"].as_str().unwrap()));
    let (status, sessions) = app.get(&list, Some(tok(&v1))).await;
    assert_eq!(status, StatusCode::OK, "{sessions}");
    assert_eq!(sessions["items"].as_array().unwrap().len(), 2, "{sessions}");
    assert_eq!(
        app.delete(&format!("{list}/{}", id(&v2)), Some(tok(&v1))).await,
        (StatusCode::OK, json!({"deleted": true}))
    );
    assert_eq!(app.delete(&list, Some(tok(&v1))).await, (StatusCode::OK, json!({"deleted": true})));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. A claim's subscribe answer carries nothing but {id, audience_id, status}.

async fn a_claims_subscribe_answer_leaks_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin("leak").await;
    let victim = "member@example.com";
    let v = sign_in(&app, &admin, victim).await;
    let pid = v["profile_id"].as_str().unwrap();
    let news = audience(&app, &admin, json!({"key": "news"})).await;
    let (status, added) =
        app.post(&admin.store("/audiences/news/subscribers"), Some(&admin.token), json!({"profile_id": pid})).await;
    assert_eq!(status, StatusCode::OK, "{added}");

    let a = connect(&app, &admin, victim, None).await;
    let (status, sub) =
        app.post(&admin.store("/audiences/news/subscribe"), Some(tok(&a)), json!({"profile_id": pid})).await;
    assert_eq!(status, StatusCode::OK, "{sub}");
    assert_eq!(keys(&sub), ["subscription"], "{sub}");
    assert_eq!(keys(&sub["subscription"]), ["audience_id", "id", "status"], "{sub}");
    assert_eq!(sub["subscription"]["audience_id"], news["id"]);
    assert_eq!(sub["subscription"]["status"], "active");

    // A subscription the claim creates is answered the same way.
    let extra = audience(&app, &admin, json!({"key": "extra"})).await;
    let (status, sub) =
        app.post(&admin.store("/audiences/extra/subscribe"), Some(tok(&a)), json!({"profile_id": pid})).await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    assert_eq!(keys(&sub), ["subscription"], "{sub}");
    assert_eq!(keys(&sub["subscription"]), ["audience_id", "id", "status"], "{sub}");
    assert_eq!(sub["subscription"]["audience_id"], extra["id"]);

    let (status, access) = app.get(&admin.store("/audiences/news/access"), Some(tok(&a))).await;
    assert_eq!(status, StatusCode::OK, "{access}");
    assert_eq!(access["has_access"], false, "{access}");
    assert_eq!(access["reason"], "verification_required", "{access}");
    assert!(access.get("subscription").is_none(), "{access}");
    // The owner's verified session has access.
    assert_eq!(app.get(&admin.store("/audiences/news/access"), Some(tok(&v))).await.1["has_access"], true);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. A profile an admin (or an import) created was never proven by anyone: connect is a claim.

async fn admin_created_profiles_are_claims_too(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin("imported").await;
    let tax = text_taxonomy(&app, &admin).await;
    let email = "imported@example.com";
    let p =
        admin_profile(&app, &admin, json!({"email": email, "taxonomies": tags(&tax, json!(["secret-segment"]))})).await;
    assert_eq!(p["verified"], false);

    let a = connect(&app, &admin, email, None).await;
    assert_eq!(a["profile_id"], p["id"]);
    let (status, me) = app.get(&admin.store("/profiles/me"), Some(tok(&a))).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    for c in ["taxonomies", "auth_tokens", "verification_codes", "promo_usage"] {
        assert_eq!(me[c], json!([]), "{c}: {me}");
    }
    assert!(!me.to_string().contains("secret-segment"), "{me}");
    let (_, by_admin) = app.get(&admin.store(&format!("/profiles/{}", id(&p))), Some(&admin.token)).await;
    for f in ["id", "store_id", "email", "verified", "status", "created_at", "updated_at"] {
        assert_eq!(me[f], by_admin[f], "{f}: {me}");
    }
    let list = admin.store(&format!("/profiles/{}/sessions", id(&p)));
    expect_error(&app.get(&list, Some(tok(&a))).await, 403, "verification_required");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Link targets and mail floods.

async fn link_targets_must_be_allowed_origins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin("links").await;
    let tpl = confirm_template(&app, &admin).await;
    for key in ["a1", "a2", "a3", "a4", "target"] {
        audience(&app, &admin, json!({"key": key, "confirm_template_id": tpl})).await;
    }
    audience(&app, &admin, json!({"key": "plain"})).await;
    let victim = "target@example.com";
    let p = admin_profile(&app, &admin, json!({"email": victim})).await;
    let pid = id(&p);
    let a = connect(&app, &admin, victim, None).await;
    let subscribe = |key: &str, extra: Value| {
        let mut body = json!({"profile_id": pid});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let path = admin.store(&format!("/audiences/{key}/subscribe"));
        let token = tok(&a).to_string();
        let app = &app;
        async move { app.post(&path, Some(&token), body).await }
    };

    // (a) Empty allowed_origins: a stranger's link is refused and nothing is queued.
    for url in ["https://evil.example/login", "http://localhost.evil.example/c", "https://127.0.0.1.evil.example/"] {
        expect_field_error(
            &subscribe("target", json!({"confirm_url": url})).await,
            "confirm_url",
            "origin_not_allowed",
        );
    }
    expect_field_error(
        &subscribe("plain", json!({"success_url": "https://evil.example/ok"})).await,
        "success_url",
        "origin_not_allowed",
    );
    expect_field_error(
        &subscribe("plain", json!({"cancel_url": "https://evil.example/no"})).await,
        "cancel_url",
        "origin_not_allowed",
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM subscriptions", &[]).await, 0, "nothing written");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM mail_outbox", &[]).await, 0, "nothing queued");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.mails_to(victim).len(), 0, "no mail to the victim");

    // (b) Empty allowed_origins: local development origins pass.
    for (key, url) in [("a1", "http://localhost:3000/confirm"), ("a2", "http://127.0.0.1:8080/c")] {
        let (status, sub) = subscribe(key, json!({"confirm_url": url})).await;
        assert_eq!(status, StatusCode::CREATED, "{url}: {sub}");
        assert_eq!(sub["subscription"]["status"], "pending");
    }

    // (c) With a list: its origins and wildcard subdomains pass, everything else is refused.
    let (status, store) = app
        .put(
            &admin.store(""),
            Some(&admin.token),
            json!({"allowed_origins": ["https://shop.example", "https://*.brand.example"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{store}");
    for (key, url) in [("a3", "https://shop.example/confirm"), ("a4", "https://eu.brand.example/c")] {
        let (status, sub) = subscribe(key, json!({"confirm_url": url})).await;
        assert_eq!(status, StatusCode::CREATED, "{url}: {sub}");
    }
    for url in [
        "https://evil.example/x",
        "https://shop.example.evil.example/",
        "http://localhost:3000/",
        "http://shop.example/confirm",
        "https://evil.example/?next=https://shop.example/",
    ] {
        expect_field_error(
            &subscribe("target", json!({"confirm_url": url})).await,
            "confirm_url",
            "origin_not_allowed",
        );
    }
    assert_eq!(settled_confirmation_mails(&app, victim, 4).await, 4, "one mail per accepted subscribe");
    app.stop().await;
}

async fn one_confirmation_mail_per_subscription_per_minute(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin("flood").await;
    let tpl = confirm_template(&app, &admin).await;
    audience(&app, &admin, json!({"key": "news", "confirm_template_id": tpl})).await;
    let victim = "flooded@example.com";
    let v = sign_in(&app, &admin, victim).await;
    let pid = v["profile_id"].as_str().unwrap();
    let a = connect(&app, &admin, victim, None).await;
    let path = admin.store("/audiences/news/subscribe");
    let body = json!({"profile_id": pid, "confirm_url": "http://localhost:3000/confirm"});
    let (status, first) = app.post(&path, Some(tok(&a)), body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["subscription"]["status"], "pending");
    for i in 2..=6 {
        let (status, again) = app.post(&path, Some(tok(&a)), body.clone()).await;
        assert_eq!(status, StatusCode::OK, "subscribe #{i}: {again}");
        assert_eq!(again["subscription"]["status"], "pending", "{again}");
        assert_eq!(again["subscription"]["id"], first["subscription"]["id"], "{again}");
    }
    assert_eq!(settled_confirmation_mails(&app, victim, 1).await, 1, "six subscribes, one confirmation mail");
    app.stop().await;
}

async fn confirmation_mails_are_capped_per_recipient_per_day(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin("cap").await;
    let tpl = confirm_template(&app, &admin).await;
    let victim = "capped@example.com";
    let p = admin_profile(&app, &admin, json!({"email": victim})).await;
    let a = connect(&app, &admin, victim, None).await;
    for i in 0..11 {
        audience(&app, &admin, json!({"key": format!("list{i}"), "confirm_template_id": tpl})).await;
    }
    for i in 0..10 {
        let (status, sub) = app
            .post(
                &admin.store(&format!("/audiences/list{i}/subscribe")),
                Some(tok(&a)),
                json!({"profile_id": p["id"], "confirm_url": "http://localhost:3000/confirm"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "list{i}: {sub}");
    }
    let eleventh = send(
        app.req(Method::POST, &admin.store("/audiences/list10/subscribe"))
            .bearer_auth(tok(&a))
            .json(&json!({"profile_id": p["id"], "confirm_url": "http://localhost:3000/confirm"})),
    )
    .await;
    expect_limited(&eleventh, "the 11th confirmation mail of the day");
    assert_eq!(settled_confirmation_mails(&app, victim, 10).await, 10);
    app.stop().await;
}

async fn session_creation_is_limited_per_address(backend: Backend) {
    let app =
        TestApp::spawn_with(backend, &[("SESSION_LIMIT_PER_ADDRESS", "5"), ("SESSION_LIMIT_WINDOW_SECS", "3600")])
            .await;
    let admin = app.admin("guests").await;
    for _ in 0..5 {
        initialize(&app, &admin).await;
    }
    let sixth = send(app.req(Method::POST, &admin.store("/profiles/initialize")).json(&json!({}))).await;
    expect_limited(&sixth, "the 6th initialize from one address");
    app.stop().await;

    let app =
        TestApp::spawn_with(backend, &[("SESSION_LIMIT_PER_ADDRESS", "5"), ("SESSION_LIMIT_WINDOW_SECS", "3600")])
            .await;
    let admin = app.admin("connects").await;
    for i in 0..5 {
        connect(&app, &admin, &format!("c{i}@example.com"), None).await;
    }
    let sixth =
        send(app.req(Method::POST, &admin.store("/profiles/connect")).json(&json!({"email": "c5@example.com"}))).await;
    expect_limited(&sixth, "the 6th connect from one address");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. CORS: an origin is echoed only when allowed; `*` never.

struct Cors {
    status: StatusCode,
    allow_origin: Option<String>,
}

async fn cors(app: &TestApp, method: Method, path: &str, origin: &str, body: Option<Value>) -> Cors {
    let mut r = app.req(method.clone(), path).header("origin", origin);
    if method == Method::OPTIONS {
        r = r
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type, authorization");
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request sent");
    let allow_origin = resp.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_string());
    assert_ne!(allow_origin.as_deref(), Some("*"), "{method} {path} from {origin}: `*` is never sent");
    Cors { status: resp.status(), allow_origin }
}

async fn cors_echoes_only_allowed_origins(backend: Backend) {
    let vars = [("CORS_ORIGIN_CACHE_SECS", "0"), ("CORS_ALLOWED_ORIGINS", "https://admin.example")];
    let app = TestApp::spawn_with(backend, &vars).await;
    let admin = app.admin("cors").await;
    let other = app.admin("cors2").await;
    let init = admin.store("/profiles/initialize");
    let evil = "https://evil.example";
    let shop = "https://shop.example";

    let pre = cors(&app, Method::OPTIONS, &init, evil, None).await;
    assert_eq!(pre.allow_origin, None, "preflight from a stranger (status {})", pre.status);
    let post = cors(&app, Method::POST, &init, evil, Some(json!({}))).await;
    assert_eq!(post.status, StatusCode::OK);
    assert_eq!(post.allow_origin, None, "POST from a stranger");

    let (status, store) = app.put(&admin.store(""), Some(&admin.token), json!({"allowed_origins": [shop]})).await;
    assert_eq!(status, StatusCode::OK, "{store}");
    // CORS_ORIGIN_CACHE_SECS=0 disables the cache; a few seconds of slack anyway.
    let mut echoed = None;
    for _ in 0..30 {
        echoed = cors(&app, Method::OPTIONS, &init, shop, None).await.allow_origin;
        if echoed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(echoed.as_deref(), Some(shop), "preflight from the store's own origin");
    let post = cors(&app, Method::POST, &init, shop, Some(json!({}))).await;
    assert_eq!((post.status, post.allow_origin.as_deref()), (StatusCode::OK, Some(shop)));
    assert_eq!(cors(&app, Method::POST, &init, evil, Some(json!({}))).await.allow_origin, None);
    // One store's origins are not another store's.
    let other_init = other.store("/profiles/initialize");
    assert_eq!(cors(&app, Method::OPTIONS, &other_init, shop, None).await.allow_origin, None);
    assert_eq!(cors(&app, Method::POST, &other_init, shop, Some(json!({}))).await.allow_origin, None);
    // CORS_ALLOWED_ORIGINS (admin dashboards) holds on store routes too.
    let dash = "https://admin.example";
    assert_eq!(cors(&app, Method::OPTIONS, &init, dash, None).await.allow_origin.as_deref(), Some(dash));

    // Platform routes: only CORS_ALLOWED_ORIGINS.
    let email = app.account("corslogin").await;
    let login = json!({"email": email, "password": common::PASSWORD});
    assert_eq!(cors(&app, Method::OPTIONS, "/v1/auth/login", dash, None).await.allow_origin.as_deref(), Some(dash));
    let post = cors(&app, Method::POST, "/v1/auth/login", dash, Some(login.clone())).await;
    assert_eq!((post.status, post.allow_origin.as_deref()), (StatusCode::OK, Some(dash)));
    assert_eq!(cors(&app, Method::OPTIONS, "/v1/auth/login", shop, None).await.allow_origin, None);
    let post = cors(&app, Method::POST, "/v1/auth/login", shop, Some(login)).await;
    assert_eq!(post.allow_origin, None, "a store's origin is no admin dashboard");
    assert_eq!(cors(&app, Method::POST, "/v1/auth/login", evil, Some(json!({}))).await.allow_origin, None);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Client address: the entry the trusted proxy appended, per /64 for IPv6, checked first.

#[test]
fn trust_forwarded_for_is_refused() {
    let err = match storecrm::config::Config::from_lookup(|k| (k == "TRUST_FORWARDED_FOR").then(|| "true".into())) {
        Ok(_) => panic!("TRUST_FORWARDED_FOR=true was accepted"),
        Err(e) => e,
    };
    assert_eq!(err.var, "TRUST_FORWARDED_FOR");
    assert!(err.to_string().contains("TRUSTED_PROXY_HOPS"), "{err}");
}

async fn request_code(app: &TestApp, admin: &Admin, email: &str, forwarded_for: Option<&str>) -> Reply {
    let mut r = app.req(Method::POST, &admin.store("/profiles/auth/code")).json(&json!({"email": email}));
    if let Some(xff) = forwarded_for {
        r = r.header("x-forwarded-for", xff);
    }
    send(r).await
}

#[track_caller]
fn expect_sent(got: &Reply, what: &str) {
    assert_eq!((got.0, &got.1), (StatusCode::ACCEPTED, &json!({"sent": true})), "{what}");
}

async fn forwarded_for_counts_the_entry_the_proxy_appended(backend: Backend) {
    let vars = [("TRUSTED_PROXY_HOPS", "1"), ("CODE_LIMIT_PER_IP", "3")];
    let app = TestApp::spawn_with(backend, &vars).await;
    let admin = app.admin("xff").await;
    // The client forges the leftmost entries; the proxy appends the real address.
    for (i, forged) in ["10.0.0.1", "192.0.2.55", "8.8.8.8"].into_iter().enumerate() {
        let got =
            request_code(&app, &admin, &format!("x{i}@example.com"), Some(&format!("{forged}, 203.0.113.7"))).await;
        expect_sent(&got, forged);
    }
    let fourth = request_code(&app, &admin, "x3@example.com", Some("198.18.0.1, 203.0.113.7")).await;
    expect_limited(&fourth, "the 4th request from 203.0.113.7 whatever it forges");
    expect_limited(&request_code(&app, &admin, "x4@example.com", Some("203.0.113.7")).await, "plain 203.0.113.7");
    // Another real client (same socket peer: the proxy) has its own bucket.
    expect_sent(&request_code(&app, &admin, "x5@example.com", Some("203.0.113.7, 203.0.113.8")).await, "203.0.113.8");
    app.stop().await;
}

async fn address_bucket_is_checked_before_email_bucket(backend: Backend) {
    let vars = [("TRUSTED_PROXY_HOPS", "1"), ("CODE_LIMIT_PER_IP", "2"), ("CODE_LIMIT_PER_EMAIL", "3")];
    let app = TestApp::spawn_with(backend, &vars).await;
    let admin = app.admin("order").await;
    let victim = "quota@example.com";
    let a = Some("198.51.100.1");
    expect_sent(&request_code(&app, &admin, "other1@example.com", a).await, "A, 1st");
    expect_sent(&request_code(&app, &admin, "other2@example.com", a).await, "A, 2nd");
    for i in 0..5 {
        expect_limited(&request_code(&app, &admin, victim, a).await, &format!("A blocked, victim #{i}"));
    }
    // The blocked address spent none of the victim's quota: three codes from fresh addresses
    // (two per address at most), then the email's own limit.
    expect_sent(&request_code(&app, &admin, victim, Some("198.51.100.2")).await, "B, 1st for the victim");
    expect_sent(&request_code(&app, &admin, victim, Some("198.51.100.2")).await, "B, 2nd for the victim");
    expect_sent(&request_code(&app, &admin, victim, Some("198.51.100.3")).await, "C, 3rd for the victim");
    expect_limited(&request_code(&app, &admin, victim, Some("198.51.100.4")).await, "the victim's 4th");
    app.code_for(victim, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.mails_to(victim).len(), 3);
    app.stop().await;
}

async fn ipv6_addresses_are_limited_per_64(backend: Backend) {
    let vars = [("TRUSTED_PROXY_HOPS", "1"), ("CODE_LIMIT_PER_IP", "3")];
    let app = TestApp::spawn_with(backend, &vars).await;
    let admin = app.admin("v6").await;
    for (i, addr) in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"].into_iter().enumerate() {
        expect_sent(&request_code(&app, &admin, &format!("v{i}@example.com"), Some(addr)).await, addr);
    }
    let same_64 = request_code(&app, &admin, "v3@example.com", Some("2001:db8:1:2:abcd:ef01:2345:6789")).await;
    expect_limited(&same_64, "a 4th address of 2001:db8:1:2::/64");
    expect_sent(&request_code(&app, &admin, "v4@example.com", Some("2001:db8:1:3::1")).await, "another /64");
    app.stop().await;

    // Without TRUSTED_PROXY_HOPS the header is ignored: varying it does not escape the peer's limit.
    let app = TestApp::spawn_with(backend, &[("CODE_LIMIT_PER_IP", "3")]).await;
    let admin = app.admin("noxff").await;
    for i in 0..3 {
        let xff = format!("10.1.0.{i}");
        expect_sent(&request_code(&app, &admin, &format!("n{i}@example.com"), Some(&xff)).await, &xff);
    }
    expect_limited(&request_code(&app, &admin, "n3@example.com", Some("10.1.0.99")).await, "forged XFF, no proxy");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 7. Refresh grace: a concurrent tab gets the same successor, never a second chain.

async fn profile_refresh_reuse_inside_grace_answers_the_same_successor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin("grace").await;
    let t0 = sign_in(&app, &admin, "tabs@example.com").await;
    let path = admin.store("/profiles/auth/refresh");
    let me = admin.store("/profiles/me");
    let refresh = |r: &Value| {
        let body = json!({"refresh_token": r["refresh_token"]});
        let (app, path) = (&app, path.clone());
        async move { app.post(&path, None, body).await }
    };
    let (s1, r1a) = refresh(&t0).await;
    let (s2, r1b) = refresh(&t0).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{r1a} {r1b}");
    assert_eq!((&r1a["id"], &r1b["id"]), (&t0["id"], &t0["id"]), "same session");
    assert_ne!(r1a["refresh_token"], t0["refresh_token"]);
    assert_eq!(r1a["refresh_token"], r1b["refresh_token"], "the same successor, not a second chain");
    for t in [&r1a, &r1b] {
        assert_eq!(app.get(&me, Some(tok(t))).await.0, StatusCode::OK);
    }
    let (status, r2) = refresh(&r1a).await;
    assert_eq!(status, StatusCode::OK, "{r2}");
    assert_ne!(r2["refresh_token"], r1a["refresh_token"]);
    let (status, r2b) = refresh(&r1a).await;
    assert_eq!(status, StatusCode::OK, "{r2b}");
    assert_eq!(r2b["refresh_token"], r2["refresh_token"], "R1 again inside the grace: R2 again");
    assert_eq!(app.get(&me, Some(tok(&r2b))).await.0, StatusCode::OK);
    assert_eq!(refresh(&r2).await.0, StatusCode::OK, "the one chain goes on");
    app.stop().await;

    // After the window, reuse is theft: the session is revoked.
    let app = TestApp::spawn_with(backend, &[("REFRESH_REUSE_GRACE_SECS", "1")]).await;
    let admin = app.admin("stale").await;
    let path = admin.store("/profiles/auth/refresh");
    let t0 = sign_in(&app, &admin, "thief@example.com").await;
    let (status, r1) = app.post(&path, None, json!({"refresh_token": t0["refresh_token"]})).await;
    assert_eq!(status, StatusCode::OK, "{r1}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    expect_error(
        &app.post(&path, None, json!({"refresh_token": t0["refresh_token"]})).await,
        401,
        "refresh_token_reused",
    );
    expect_error(
        &app.post(&path, None, json!({"refresh_token": r1["refresh_token"]})).await,
        401,
        "invalid_refresh_token",
    );
    expect_error(&app.get(&admin.store("/profiles/me"), Some(tok(&r1))).await, 401, "unauthorized");
    app.stop().await;
}

async fn account_refresh_reuse_inside_grace_answers_the_same_successor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = app.account("tabs").await;
    let t0 = app.login(&email).await;
    let refresh = |r: &Value| app.post("/v1/auth/refresh", None, json!({"refresh_token": r["refresh_token"]}));
    let (s1, r1a) = refresh(&t0).await;
    let (s2, r1b) = refresh(&t0).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{r1a} {r1b}");
    assert_eq!((&r1a["id"], &r1b["id"]), (&t0["id"], &t0["id"]), "same session");
    assert_ne!(r1a["refresh_token"], t0["refresh_token"]);
    assert_eq!(r1a["refresh_token"], r1b["refresh_token"], "the same successor, not a second chain");
    for t in [&r1a, &r1b] {
        assert_eq!(app.get("/v1/auth/me", Some(tok(t))).await.0, StatusCode::OK);
    }
    let (status, r2) = refresh(&r1a).await;
    assert_eq!(status, StatusCode::OK, "{r2}");
    assert_ne!(r2["refresh_token"], r1a["refresh_token"]);
    let (status, r2b) = refresh(&r1a).await;
    assert_eq!(status, StatusCode::OK, "{r2b}");
    assert_eq!(r2b["refresh_token"], r2["refresh_token"], "R1 again inside the grace: R2 again");
    assert_eq!(app.get("/v1/auth/me", Some(tok(&r2b))).await.0, StatusCode::OK);
    assert_eq!(refresh(&r2).await.0, StatusCode::OK, "the one chain goes on");
    app.stop().await;

    let app = TestApp::spawn_with(backend, &[("REFRESH_REUSE_GRACE_SECS", "1")]).await;
    let email = app.account("stale").await;
    let t0 = app.login(&email).await;
    let (status, r1) = app.post("/v1/auth/refresh", None, json!({"refresh_token": t0["refresh_token"]})).await;
    assert_eq!(status, StatusCode::OK, "{r1}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    expect_error(
        &app.post("/v1/auth/refresh", None, json!({"refresh_token": t0["refresh_token"]})).await,
        401,
        "refresh_token_reused",
    );
    expect_error(
        &app.post("/v1/auth/refresh", None, json!({"refresh_token": r1["refresh_token"]})).await,
        401,
        "invalid_refresh_token",
    );
    expect_error(&app.get("/v1/auth/me", Some(tok(&r1))).await, 401, "unauthorized");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 8. Login throttle.

async fn login(app: &TestApp, email: &str, password: &str) -> Reply {
    send(app.req(Method::POST, "/v1/auth/login").json(&json!({"email": email, "password": password}))).await
}

async fn login_failures_are_limited_per_email(backend: Backend) {
    let vars = [("LOGIN_LIMIT_PER_EMAIL", "3"), ("LOGIN_LIMIT_PER_ADDRESS", "5")];
    let app = TestApp::spawn_with(backend, &vars).await;
    let email = app.account("guessed").await;
    // Successful logins are no failures.
    for i in 0..5 {
        assert_eq!(login(&app, &email, common::PASSWORD).await.0, StatusCode::OK, "success #{i}");
    }
    for _ in 0..3 {
        let got = login(&app, &email, "wrong password!").await;
        expect_error(&(got.0, got.1), 401, "invalid_credentials");
    }
    expect_limited(&login(&app, &email, common::PASSWORD).await, "4th attempt, right password");
    app.stop().await;
}

async fn login_failures_are_limited_per_address(backend: Backend) {
    let vars = [("LOGIN_LIMIT_PER_EMAIL", "3"), ("LOGIN_LIMIT_PER_ADDRESS", "5"), ("PASSWORD_HASH_CONCURRENCY", "1")];
    let app = TestApp::spawn_with(backend, &vars).await;
    let email = app.account("busy").await;
    // Hashing is capped: a burst queues, nobody fails.
    let right = || login(&app, &email, common::PASSWORD);
    let burst = tokio::join!(right(), right(), right(), right(), right(), right());
    for (i, got) in [burst.0, burst.1, burst.2, burst.3, burst.4, burst.5].iter().enumerate() {
        assert_eq!(got.0, StatusCode::OK, "concurrent login #{i}: {}", got.1);
    }
    for i in 0..5 {
        let got = login(&app, &format!("nobody{i}@example.com"), "guess-guess").await;
        expect_error(&(got.0, got.1), 401, "invalid_credentials");
    }
    expect_limited(&login(&app, "nobody5@example.com", "guess-guess").await, "a 6th email from the same address");
    expect_limited(&login(&app, &email, common::PASSWORD).await, "the right password from a blocked address");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 9. Inputs: U+0000 is invalid text; unknown fields are refused.

async fn nul_characters_are_refused_as_invalid_text(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin("nul").await;
    let nul = "a\u{0}b";
    let got = app.post(&admin.store("/audiences"), Some(&admin.token), json!({"key": "news", "name": nul})).await;
    expect_invalid_text(&got, "audience name");
    let got = app
        .post(
            &admin.store("/email-templates"),
            Some(&admin.token),
            json!({"key": "t", "subject": nul, "body": "<p>hi</p>"}),
        )
        .await;
    expect_invalid_text(&got, "template subject");
    let tax = text_taxonomy(&app, &admin).await;
    let got = app
        .post(
            &admin.store("/profiles"),
            Some(&admin.token),
            json!({"email": "nul@example.com", "taxonomies": tags(&tax, json!([nul]))}),
        )
        .await;
    expect_invalid_text(&got, "taxonomy text value");

    let p = admin_profile(&app, &admin, json!({"email": "orders@example.com"})).await;
    let orders = admin.store(&format!("/profiles/{}/orders", id(&p)));
    expect_invalid_text(&app.post(&orders, Some(&admin.token), json!({"order_id": nul})).await, "order id");
    let got = app.post(&orders, Some(&admin.token), json!({"order_id": "o1", "metadata": {"note": nul}})).await;
    expect_invalid_text(&got, "order metadata value");
    let got = app.post(&orders, Some(&admin.token), json!({"order_id": "o2", "metadata": {nul: 1}})).await;
    expect_invalid_text(&got, "order metadata key");

    // Query and path text: refused or not found, never a 500.
    for path in [admin.store("/profiles?query=a%00b"), admin.store("/audiences/a%00b")] {
        let (status, body) = app.get(&path, Some(&admin.token)).await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::NOT_FOUND,
            "{path}: {status} {body}"
        );
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            expect_invalid_text(&(status, body), &path);
        }
    }

    // Nothing was written.
    assert_eq!(app.get(&orders, Some(&admin.token)).await.1["items"], json!([]));
    assert_eq!(app.get(&admin.store("/audiences"), Some(&admin.token)).await.1["items"], json!([]));
    let (status, _) =
        app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "nul@example.com"})).await;
    assert_eq!(status, StatusCode::CREATED, "the refused profile was not created");
    app.stop().await;
}

async fn unknown_body_fields_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin("typo").await;
    let email = "typo@example.com";
    let got = app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": email, "first_name": "X"})).await;
    expect_field_error(&got, "first_name", "unknown_field");
    let (status, p) = app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": email})).await;
    assert_eq!(status, StatusCode::CREATED, "the refused create wrote nothing: {p}");

    let profiles = || app.scalar("SELECT COUNT(*) FROM profiles", &[]);
    let before = profiles().await;
    let got =
        app.post(&admin.store("/profiles/connect"), None, json!({"email": "new@example.com", "first_name": "X"})).await;
    expect_field_error(&got, "first_name", "unknown_field");
    assert_eq!(profiles().await, before, "connect created nothing");

    let account = app.account("typo").await;
    let got = app
        .post("/v1/auth/login", None, json!({"email": account, "password": common::PASSWORD, "first_name": "X"}))
        .await;
    expect_field_error(&got, "first_name", "unknown_field");

    let got = app.put(&admin.store(""), Some(&admin.token), json!({"name": "Renamed", "first_name": "X"})).await;
    expect_field_error(&got, "first_name", "unknown_field");
    assert_ne!(app.get(&admin.store(""), Some(&admin.token)).await.1["name"], "Renamed", "the store is unchanged");

    let got = app.post(&admin.store("/audiences"), Some(&admin.token), json!({"key": "news", "first_name": "X"})).await;
    expect_field_error(&got, "first_name", "unknown_field");
    assert_eq!(app.get(&admin.store("/audiences"), Some(&admin.token)).await.1["items"], json!([]));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 10. Files: mail, database and secret are readable by the server's user only.

#[track_caller]
fn assert_mode(path: &Path, mode: u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        meta.permissions().mode() & 0o777,
        mode,
        "{} has mode {:o}",
        path.display(),
        meta.permissions().mode() & 0o777
    );
}

async fn stored_files_are_private(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin("files").await;
    let sent = app.post(&admin.store("/profiles/auth/code"), None, json!({"email": "files@example.com"})).await;
    assert_eq!(sent.0, StatusCode::ACCEPTED);
    app.code_for("files@example.com", 1).await;
    let dir = app.mail_dir();
    assert_mode(&dir, 0o700);
    let mut mails = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "eml") {
            assert_mode(&path, 0o600);
            mails += 1;
        }
    }
    assert!(mails >= 1);
    if backend == Backend::Sqlite {
        let db = dir.parent().unwrap().join("crm.db");
        assert_mode(&db, 0o600);
        for sibling in ["crm.db-wal", "crm.db-shm"] {
            let path = dir.parent().unwrap().join(sibling);
            if path.exists() {
                assert_mode(&path, 0o600);
            }
        }
    }
    app.stop().await;
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("storecrm-abuse-{name}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sqlite_config(dir: &Path) -> storecrm::config::Config {
    let db = format!("sqlite://{}", dir.join("x.db").display());
    let mail = dir.join("mail").display().to_string();
    storecrm::config::Config::from_lookup(|k| match k {
        "DATABASE_URL" => Some(db.clone()),
        "MAIL_DIR" => Some(mail.clone()),
        _ => None,
    })
    .expect("config without SECRET_KEY")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_file_must_be_private() {
    let dir = temp_dir("secret");
    let file = dir.join("storecrm.secret");
    std::fs::write(&file, format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    match storecrm::app::build_state(sqlite_config(&dir)).await {
        Ok(_) => panic!("a world-readable storecrm.secret was accepted"),
        Err(e) => assert!(format!("{e:#}").contains("chmod 600"), "{e:#}"),
    }
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    if let Err(e) = storecrm::app::build_state(sqlite_config(&dir)).await {
        panic!("a 0600 storecrm.secret was refused: {e:#}");
    }

    // Generated when missing: 0600.
    let fresh = temp_dir("secret-new");
    if let Err(e) = storecrm::app::build_state(sqlite_config(&fresh)).await {
        panic!("no secret file and no SECRET_KEY: {e:#}");
    }
    assert_mode(&fresh.join("storecrm.secret"), 0o600);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&fresh);
}
