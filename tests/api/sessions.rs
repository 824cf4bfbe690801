//! Profile sessions (§4): the guest → connect → code → verify → refresh → revoke story and every
//! rule around it, over HTTP on both backends. Code mails are read back from the file transport.

use crate::common::{self, Admin, Bind, TestApp, expect_error, uuid};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use storecrm::crypto::{Keys, ProfileClaims};

backend_tests!(
    guest_connect_code_verify_refresh_revoke_story,
    connecting_a_known_email_merges_the_guest,
    connect_without_guest_and_new_profiles,
    codes_obey_attempts_expiry_and_replacement,
    code_requests_look_the_same_for_known_and_unknown_emails,
    code_requests_are_rate_limited_per_email_and_ip,
    rate_limits_hold_across_instances,
    unverified_sessions_on_verified_profiles_see_the_redacted_profile,
    me_shows_what_the_admin_view_shows,
    profile_tokens_are_checked,
    refresh_rotates_detects_reuse_and_tolerates_concurrent_tabs,
    tokens_issued_before_sessions_held_them_keep_working,
    sessions_are_listed_and_revoked_by_admin_or_self,
    revocation_holds_across_instances,
    me_is_never_stale_whichever_instance_writes,
    me_drops_a_session_when_it_ends,
    bad_input_is_refused_and_writes_nothing,
    guests_without_email_are_swept,
    a_session_is_written_only_for_a_live_profile,
    janitor_sweeps_a_backlog_in_batches,
    code_mail_is_complete,
    codes_requested_during_an_smtp_outage_arrive_once_after_it,
);

fn store_path(store: &str, rest: &str) -> String {
    format!("/v1/stores/{store}{rest}")
}

async fn initialize(app: &TestApp, store: &str) -> Value {
    let (status, t) = app.post(&store_path(store, "/profiles/initialize"), None, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    t
}

fn tok(t: &Value) -> &str {
    t["access_token"].as_str().unwrap()
}

async fn request_code(app: &TestApp, store: &str, email: &str) {
    let got = app.post(&store_path(store, "/profiles/auth/code"), None, json!({"email": email})).await;
    assert_eq!(got, (StatusCode::ACCEPTED, json!({"sent": true})));
}

async fn verify(app: &TestApp, store: &str, email: &str, code: &str, bearer: Option<&str>) -> (StatusCode, Value) {
    app.post(&store_path(store, "/profiles/auth/verify"), bearer, json!({"email": email, "code": code})).await
}

/// Signs in with a code: request, read the mail, verify.
async fn sign_in(app: &TestApp, store: &str, email: &str, nth_mail: usize) -> Value {
    request_code(app, store, email).await;
    let code = app.code_for(email, nth_mail).await;
    let (status, t) = verify(app, store, email, &code, None).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    t
}

async fn guest_connect_code_verify_refresh_revoke_story(app: &TestApp) {
    let admin = app.admin("story").await;
    let s = admin.store_id.as_str();
    let guest = initialize(app, s).await;
    assert_eq!(guest["token_type"], "Bearer");
    assert_eq!(guest["is_verified"], false);
    for f in ["id", "access_token", "refresh_token", "profile_id"] {
        assert!(guest[f].as_str().is_some_and(|v| !v.is_empty()), "{f}");
    }
    let pid = guest["profile_id"].as_str().unwrap();
    let (status, me) = app.get(&store_path(s, "/profiles/me"), Some(tok(&guest))).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["id"], pid);
    assert!(me["email"].is_null());
    assert_eq!(me["verified"], false);

    let (status, connected) =
        app.post(&store_path(s, "/profiles/connect"), Some(tok(&guest)), json!({"email": "Shopper@Example.com"})).await;
    assert_eq!(status, StatusCode::OK, "{connected}");
    assert_eq!(connected["profile_id"], pid, "the guest upgrade keeps the profile id");
    assert_eq!(connected["is_verified"], false);
    let (_, me) = app.get(&store_path(s, "/profiles/me"), Some(tok(&connected))).await;
    assert_eq!(me["email"], "Shopper@example.com");

    request_code(app, s, "shopper@example.com").await;
    let code = app.code_for("shopper@example.com", 1).await;
    let (status, verified) = verify(app, s, "SHOPPER@example.com", &code, Some(tok(&connected))).await;
    assert_eq!(status, StatusCode::OK, "{verified}");
    assert_eq!(verified["profile_id"], pid);
    assert_eq!(verified["is_verified"], true);
    let (_, me) = app.get(&store_path(s, "/profiles/me"), Some(tok(&verified))).await;
    assert_eq!(me["verified"], true);
    assert!(me["auth_tokens"].as_array().unwrap().len() >= 2, "{me}");
    assert!(!me.to_string().contains(verified["refresh_token"].as_str().unwrap()), "no secrets in the view");
    let codes = me["verification_codes"].as_array().unwrap();
    assert_eq!(codes[0]["used"], true);
    assert!(codes[0].get("code").is_none() && codes[0].get("code_hash").is_none());

    let (status, refreshed) = app
        .post(&store_path(s, "/profiles/auth/refresh"), None, json!({"refresh_token": verified["refresh_token"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(refreshed["id"], verified["id"]);
    assert_eq!(refreshed["is_verified"], true);
    assert_ne!(refreshed["refresh_token"], verified["refresh_token"]);

    let path = store_path(s, &format!("/profiles/{pid}/sessions/{}", refreshed["id"].as_str().unwrap()));
    assert_eq!(app.delete(&path, Some(tok(&refreshed))).await, (StatusCode::OK, json!({"deleted": true})));
    expect_error(&app.get(&store_path(s, "/profiles/me"), Some(tok(&refreshed))).await, 401, "unauthorized");
    let again = app
        .post(&store_path(s, "/profiles/auth/refresh"), None, json!({"refresh_token": refreshed["refresh_token"]}))
        .await;
    expect_error(&again, 401, "invalid_refresh_token");
    // The other sessions are untouched.
    assert_eq!(app.get(&store_path(s, "/profiles/me"), Some(tok(&connected))).await.0, StatusCode::OK);
    assert_eq!(
        app.post(&store_path(s, "/profiles/auth/logout"), Some(tok(&connected)), json!({})).await.0,
        StatusCode::OK
    );
    expect_error(&app.get(&store_path(s, "/profiles/me"), Some(tok(&connected))).await, 401, "unauthorized");
}

async fn connecting_a_known_email_merges_the_guest(app: &TestApp) {
    let admin = app.admin("mergeconnect").await;
    let s = admin.store_id.as_str();
    let (_, known) =
        app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "known@example.com"})).await;
    let guest = initialize(app, s).await;
    let gid = guest["profile_id"].as_str().unwrap();
    app.post(&admin.store(&format!("/profiles/{gid}/orders")), Some(&admin.token), json!({"order_id": "cart-1"})).await;

    let (status, t) =
        app.post(&store_path(s, "/profiles/connect"), Some(tok(&guest)), json!({"email": "KNOWN@example.com"})).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["profile_id"], known["id"], "the session is for the profile that has the email");
    expect_error(&app.get(&admin.store(&format!("/profiles/{gid}")), Some(&admin.token)).await, 404, "not_found");
    let (_, orders) =
        app.get(&admin.store(&format!("/profiles/{}/orders", known["id"].as_str().unwrap())), Some(&admin.token)).await;
    assert_eq!(orders["items"][0]["order_id"], "cart-1", "the guest's order carried over");
    expect_error(&app.get(&store_path(s, "/profiles/me"), Some(tok(&guest))).await, 401, "unauthorized");

    // verify resolves the same way.
    let guest2 = initialize(app, s).await;
    request_code(app, s, "known@example.com").await;
    let code = app.code_for("known@example.com", 1).await;
    let (status, v) = verify(app, s, "known@example.com", &code, Some(tok(&guest2))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["profile_id"], known["id"]);
    let g2 = guest2["profile_id"].as_str().unwrap();
    expect_error(&app.get(&admin.store(&format!("/profiles/{g2}")), Some(&admin.token)).await, 404, "not_found");
}

async fn connect_without_guest_and_new_profiles(app: &TestApp) {
    let admin = app.admin("newconnect").await;
    let s = admin.store_id.as_str();
    let (status, a) = app.post(&store_path(s, "/profiles/connect"), None, json!({"email": "fresh@example.com"})).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    let (_, b) = app.post(&store_path(s, "/profiles/connect"), None, json!({"email": "fresh@example.com"})).await;
    assert_eq!(a["profile_id"], b["profile_id"]);
    assert_ne!(a["id"], b["id"], "a fresh session each time");
    // A caller that already has an email is not changed: the other email gets its own profile.
    let (_, c) =
        app.post(&store_path(s, "/profiles/connect"), Some(tok(&a)), json!({"email": "other@example.com"})).await;
    assert_ne!(c["profile_id"], a["profile_id"]);
    let (_, me) = app.get(&store_path(s, "/profiles/me"), Some(tok(&a))).await;
    assert_eq!(me["email"], "fresh@example.com");
    // verify of an email nobody has creates a verified profile.
    let t = sign_in(app, s, "brandnew@example.com", 1).await;
    let (_, p) =
        app.get(&admin.store(&format!("/profiles/{}", t["profile_id"].as_str().unwrap())), Some(&admin.token)).await;
    assert_eq!((p["email"].as_str(), p["verified"].as_bool()), (Some("brandnew@example.com"), Some(true)));
}

async fn codes_obey_attempts_expiry_and_replacement(app: &TestApp) {
    let own = TestApp::spawn_with(app.backend, &[("CODE_TTL_SECS", "2"), ("CODE_LIMIT_PER_EMAIL", "50")]).await;
    let app = &own;
    let admin = app.admin("codes").await;
    let s = admin.store_id.as_str();
    let email = "codes@example.com";
    request_code(app, s, email).await;
    let first = app.code_for(email, 1).await;
    let wrong = if first == "000000" { "111111" } else { "000000" };
    expect_error(&verify(app, s, email, wrong, None).await, 401, "invalid_code");

    // A newer code voids the older one.
    request_code(app, s, email).await;
    let second = app.code_for(email, 2).await;
    if first != second {
        expect_error(&verify(app, s, email, &first, None).await, 401, "invalid_code");
    }
    assert_eq!(verify(app, s, email, &second, None).await.0, StatusCode::OK);
    expect_error(&verify(app, s, email, &second, None).await, 401, "invalid_code");

    // Five wrong attempts burn the code: even the right one fails then.
    request_code(app, s, email).await;
    let third = app.code_for(email, 3).await;
    let wrong = if third == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        expect_error(&verify(app, s, email, wrong, None).await, 401, "invalid_code");
    }
    expect_error(&verify(app, s, email, &third, None).await, 401, "invalid_code");
    let (_, list) = app.get(&admin.store("/profiles?query=codes%40example.com"), Some(&admin.token)).await;
    assert_eq!(list["items"][0]["verification_codes"][0]["attempts"], 5);

    // Codes expire.
    request_code(app, s, email).await;
    let fourth = app.code_for(email, 4).await;
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    expect_error(&verify(app, s, email, &fourth, None).await, 401, "invalid_code");
    // A code is bound to its email and store.
    request_code(app, s, email).await;
    let fifth = app.code_for(email, 5).await;
    expect_error(&verify(app, s, "someone@example.com", &fifth, None).await, 401, "invalid_code");
    let other = app.admin("codes2").await;
    expect_error(&verify(app, &other.store_id, email, &fifth, None).await, 401, "invalid_code");
    assert_eq!(verify(app, s, email, &fifth, None).await.0, StatusCode::OK);
    own.stop().await;
}

async fn code_requests_look_the_same_for_known_and_unknown_emails(app: &TestApp) {
    let admin = app.admin("enum").await;
    let s = admin.store_id.as_str();
    app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "member@example.com"})).await;
    let known = app.post(&store_path(s, "/profiles/auth/code"), None, json!({"email": "member@example.com"})).await;
    let unknown = app.post(&store_path(s, "/profiles/auth/code"), None, json!({"email": "stranger@example.com"})).await;
    assert_eq!(known, unknown);
    assert_eq!(known, (StatusCode::ACCEPTED, json!({"sent": true})));
    // Both get a working code: verify then resolves or creates the profile.
    app.code_for("member@example.com", 1).await;
    app.code_for("stranger@example.com", 1).await;
    expect_error(
        &app.post(&store_path(s, "/profiles/auth/code"), None, json!({"email": "nope"})).await,
        422,
        "validation_failed",
    );
    expect_error(
        &app.post(
            &store_path(&uuid::Uuid::now_v7().to_string(), "/profiles/auth/code"),
            None,
            json!({"email": "a@example.com"}),
        )
        .await,
        404,
        "not_found",
    );
}

async fn code_requests_are_rate_limited_per_email_and_ip(app: &TestApp) {
    let own = TestApp::spawn_with(
        app.backend,
        &[("CODE_LIMIT_PER_EMAIL", "2"), ("CODE_LIMIT_PER_IP", "4"), ("TRUSTED_PROXY_HOPS", "1")],
    )
    .await;
    let app = &own;
    let admin = app.admin("rl").await;
    let path = store_path(&admin.store_id, "/profiles/auth/code");
    let send = |email: &str, ip: &str| {
        app.req(Method::POST, &path).header("x-forwarded-for", ip).json(&json!({"email": email})).send()
    };
    assert_eq!(send("a@example.com", "10.0.0.1").await.unwrap().status(), StatusCode::ACCEPTED);
    assert_eq!(send("a@example.com", "10.0.0.2").await.unwrap().status(), StatusCode::ACCEPTED);
    let limited = send("A@example.com", "10.0.0.3").await.unwrap();
    let retry = limited.headers().get("retry-after").map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    let (status, body) = common::read(limited).await;
    expect_error(&(status, body.clone()), 429, "rate_limited");
    assert!(retry.is_some_and(|r| (1..=900).contains(&r)), "{retry:?}");
    assert_eq!(body["retry_after"].as_u64(), retry);
    app.code_for("a@example.com", 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.mails_to("a@example.com").len(), 2, "no mail for the refused request");

    // Per client address: four requests, then refused, whatever the email.
    for i in 0..4 {
        assert_eq!(send(&format!("ip{i}@example.com"), "10.9.9.9").await.unwrap().status(), StatusCode::ACCEPTED);
    }
    expect_error(&common::read(send("ip5@example.com", "10.9.9.9").await.unwrap()).await, 429, "rate_limited");
    // A client over its address limit spends nothing of another address's per-email quota.
    for _ in 0..3 {
        expect_error(&common::read(send("victim@example.com", "10.9.9.9").await.unwrap()).await, 429, "rate_limited");
    }
    for ip in ["10.1.1.1", "10.1.1.2"] {
        assert_eq!(send("victim@example.com", ip).await.unwrap().status(), StatusCode::ACCEPTED, "victim from {ip}");
    }
    expect_error(&common::read(send("victim@example.com", "10.1.1.3").await.unwrap()).await, 429, "rate_limited");
    app.code_for("victim@example.com", 2).await;
    assert_eq!(
        send("ip5@example.com", "10.9.9.8").await.unwrap().status(),
        StatusCode::ACCEPTED,
        "another address is fine"
    );
    own.stop().await;
}

async fn rate_limits_hold_across_instances(app: &TestApp) {
    let own = TestApp::spawn_with(app.backend, &[("CODE_LIMIT_PER_EMAIL", "3")]).await;
    let app = &own;
    let other = app.sibling().await;
    let admin = app.admin("rl2").await;
    let path = store_path(&admin.store_id, "/profiles/auth/code");
    let body = json!({"email": "twice@example.com"});
    assert_eq!(app.post(&path, None, body.clone()).await.0, StatusCode::ACCEPTED);
    assert_eq!(other.post(&path, None, body.clone()).await.0, StatusCode::ACCEPTED);
    assert_eq!(app.post(&path, None, body.clone()).await.0, StatusCode::ACCEPTED);
    expect_error(&other.post(&path, None, body.clone()).await, 429, "rate_limited");
    other.stop().await;
    own.stop().await;
}

async fn unverified_sessions_on_verified_profiles_see_the_redacted_profile(app: &TestApp) {
    let admin = app.admin("redact").await;
    let s = admin.store_id.as_str();
    let (_, tax) = app
        .post(
            &admin.store("/taxonomies"),
            Some(&admin.token),
            json!({"key": "t", "schema": [{"key": "vip", "type": "boolean"}]}),
        )
        .await;
    let verified = sign_in(app, s, "vip@example.com", 1).await;
    let pid = verified["profile_id"].as_str().unwrap();
    app.put(&admin.store(&format!("/profiles/{pid}")), Some(&admin.token),
        json!({"taxonomies": [{"taxonomy_id": tax["id"], "fields": [{"key": "vip", "type": "boolean", "value": true}]}]})).await;

    let (_, full) = app.get(&store_path(s, "/profiles/me"), Some(tok(&verified))).await;
    assert_eq!(full["taxonomies"][0]["fields"][0]["value"], true);
    let (_, claim) = app.post(&store_path(s, "/profiles/connect"), None, json!({"email": "vip@example.com"})).await;
    assert_eq!(claim["profile_id"], pid);
    assert_eq!(claim["is_verified"], false);
    let (status, redacted) = app.get(&store_path(s, "/profiles/me"), Some(tok(&claim))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(redacted["id"], pid);
    assert_eq!(redacted["email"], "vip@example.com");
    assert_eq!(redacted["verified"], true);
    for c in ["taxonomies", "promo_usage", "auth_tokens", "verification_codes"] {
        assert_eq!(redacted[c], json!([]), "{c}");
    }
    // A claim session may not list the sessions of the real owner either... but it is the profile
    // itself, so it can log itself out.
    assert_eq!(app.post(&store_path(s, "/profiles/auth/logout"), Some(tok(&claim)), json!({})).await.0, StatusCode::OK);
}

/// getMe reads the profile in one statement of its own; it must agree with the admin view to the
/// last digit of a stored float.
async fn me_shows_what_the_admin_view_shows(app: &TestApp) {
    let admin = app.admin("mirror").await;
    let s = admin.store_id.as_str();
    let (_, tax) = app
        .post(
            &admin.store("/taxonomies"),
            Some(&admin.token),
            json!({"key": "t", "schema": [
                {"key": "tags", "type": "text"}, {"key": "score", "type": "number"},
                {"key": "vip", "type": "boolean"}, {"key": "home", "type": "geo_location"},
                {"key": "work", "type": "geo_location"}]}),
        )
        .await;
    let t = sign_in(app, s, "mirror@example.com", 1).await;
    let pid = t["profile_id"].as_str().unwrap();
    sign_in(app, s, "mirror@example.com", 2).await;
    request_code(app, s, "mirror@example.com").await;
    let fields = json!([
        {"key": "tags", "type": "text", "value": ["b", "a", "Ünïcode \"quoted\""]},
        {"key": "score", "type": "number", "value": 0.1 + 0.2},
        {"key": "vip", "type": "boolean", "value": false},
        {"key": "home", "type": "geo_location", "value": {"lat": 48.856_613_123_456_79, "lon": -2.352_219_876_543_21, "label": "Paris"}},
        {"key": "work", "type": "geo_location", "value": {"lat": 1e-7, "lon": 179.999_999_999_999_97}}
    ]);
    let (status, _) = app
        .put(
            &admin.store(&format!("/profiles/{pid}")),
            Some(&admin.token),
            json!({"taxonomies": [{"taxonomy_id": tax["id"], "fields": fields}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, by_admin) = app.get(&admin.store(&format!("/profiles/{pid}")), Some(&admin.token)).await;
    let (status, me) = app.get(&store_path(s, "/profiles/me"), Some(tok(&t))).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me, by_admin);
    assert_eq!(me["taxonomies"][0]["fields"], fields);
    assert_eq!(me["auth_tokens"].as_array().unwrap().len(), 2, "{me}");
    assert_eq!(me["verification_codes"].as_array().unwrap().len(), 3, "{me}");

    // A guest: no email, so no codes; nothing else either.
    let g = initialize(app, s).await;
    let (_, me) = app.get(&store_path(s, "/profiles/me"), Some(tok(&g))).await;
    let (_, by_admin) =
        app.get(&admin.store(&format!("/profiles/{}", g["profile_id"].as_str().unwrap())), Some(&admin.token)).await;
    assert_eq!(me, by_admin);
    assert_eq!(me["verification_codes"], json!([]));
}

async fn profile_tokens_are_checked(app: &TestApp) {
    let a = app.admin("pta").await;
    let b = app.admin("ptb").await;
    let t = initialize(app, &a.store_id).await;
    // A store's token is refused by every other store.
    expect_error(&app.get(&store_path(&b.store_id, "/profiles/me"), Some(tok(&t))).await, 401, "unauthorized");
    let refresh_elsewhere = app
        .post(&store_path(&b.store_id, "/profiles/auth/refresh"), None, json!({"refresh_token": t["refresh_token"]}))
        .await;
    expect_error(&refresh_elsewhere, 401, "invalid_refresh_token");
    // Profile tokens are no admin credential; account tokens are no profile credential.
    expect_error(&app.get(&a.store("/profiles"), Some(tok(&t))).await, 403, "forbidden");
    expect_error(&app.get(&a.store(""), Some(tok(&t))).await, 403, "forbidden");
    expect_error(&app.get(&store_path(&a.store_id, "/profiles/me"), Some(&a.token)).await, 403, "forbidden");
    expect_error(&app.get(&store_path(&a.store_id, "/profiles/me"), None).await, 401, "unauthorized");

    let payload: Value =
        serde_json::from_slice(&storecrm::crypto::unb64(tok(&t).split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(payload["typ"], "profile");
    assert_eq!(payload["store"], a.store_id.as_str());
    assert_eq!(payload["sid"], t["id"]);
    assert_eq!(payload["ver"], false);
    let now = storecrm::now();
    let claims = |exp: i64, store: &str| ProfileClaims {
        sub: uuid(&t["profile_id"]),
        store: store.parse().unwrap(),
        sid: uuid(&t["id"]),
        ver: true,
        typ: "profile".into(),
        iat: now,
        exp,
    };
    let ours = Keys::derive(&storecrm::config::Secret::new(common::SECRET_KEY));
    let theirs = Keys::derive(&storecrm::config::Secret::new("x".repeat(40)));
    let me = store_path(&a.store_id, "/profiles/me");
    assert_eq!(app.get(&me, Some(&ours.sign(&claims(now + 60, &a.store_id)))).await.0, StatusCode::OK, "control");
    expect_error(&app.get(&me, Some(&ours.sign(&claims(now - 1, &a.store_id)))).await, 401, "unauthorized");
    expect_error(&app.get(&me, Some(&theirs.sign(&claims(now + 60, &a.store_id)))).await, 401, "unauthorized");
    expect_error(&app.get(&me, Some(&ours.sign(&claims(now + 60, &b.store_id)))).await, 401, "unauthorized");
    let none_alg = format!(
        "{}.{}.",
        storecrm::crypto::b64(br#"{"alg":"none","typ":"JWT"}"#),
        storecrm::crypto::b64(serde_json::to_string(&claims(now + 60, &a.store_id)).unwrap().as_bytes())
    );
    expect_error(&app.get(&me, Some(&none_alg)).await, 401, "unauthorized");
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &claims(now + 60, &a.store_id),
        &jsonwebtoken::EncodingKey::from_secret(b"k"),
    )
    .unwrap();
    expect_error(&app.get(&me, Some(&hs384)).await, 401, "unauthorized");
    // A forged `ver: true` with the server's key is still only as verified as its session.
    let (_, me_view) = app.get(&me, Some(&ours.sign(&claims(now + 60, &a.store_id)))).await;
    assert_eq!(me_view["id"], t["profile_id"]);
}

async fn refresh_rotates_detects_reuse_and_tolerates_concurrent_tabs(app: &TestApp) {
    let admin = app.admin("rot").await;
    let s = admin.store_id.as_str();
    let t = initialize(app, s).await;
    let path = store_path(s, "/profiles/auth/refresh");
    let body = json!({"refresh_token": t["refresh_token"]});
    let (a, b) = tokio::join!(app.post(&path, None, body.clone()), app.post(&path, None, body));
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK), "{} {}", a.1, b.1);
    for pair in [&a.1, &b.1] {
        assert_eq!(app.get(&store_path(s, "/profiles/me"), Some(tok(pair))).await.0, StatusCode::OK);
    }

    let strict = TestApp::spawn_with(app.backend, &[("REFRESH_REUSE_GRACE_SECS", "0")]).await;
    let admin = strict.admin("strict").await;
    let s = admin.store_id.as_str();
    let first = initialize(&strict, s).await;
    let path = store_path(s, "/profiles/auth/refresh");
    let (_, second) = strict.post(&path, None, json!({"refresh_token": first["refresh_token"]})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let reuse = strict.post(&path, None, json!({"refresh_token": first["refresh_token"]})).await;
    expect_error(&reuse, 401, "refresh_token_reused");
    expect_error(&strict.get(&store_path(s, "/profiles/me"), Some(tok(&second))).await, 401, "unauthorized");
    expect_error(
        &strict.post(&path, None, json!({"refresh_token": second["refresh_token"]})).await,
        401,
        "invalid_refresh_token",
    );
    strict.stop().await;
}

/// Migration 0017 moved each session's current refresh token from the token tables into the
/// session's row. Data written in the old shape (put back here: the hashes returned to the token
/// tables, the column and index dropped, the migration unrecorded) is migrated by the next
/// instance's start: current tokens refresh, exchanged ones still count as reuse.
async fn tokens_issued_before_sessions_held_them_keep_working(app: &TestApp) {
    let strict = TestApp::spawn_with(app.backend, &[("REFRESH_REUSE_GRACE_SECS", "0")]).await;
    let admin = strict.admin("old").await;
    let s = admin.store_id.as_str();
    let path = store_path(s, "/profiles/auth/refresh");
    let exchanged = initialize(&strict, s).await;
    let (status, current) = strict.post(&path, None, json!({"refresh_token": exchanged["refresh_token"]})).await;
    assert_eq!(status, StatusCode::OK, "{current}");
    let untouched = initialize(&strict, s).await;

    for (sessions, tokens, columns) in [
        ("profile_sessions", "profile_refresh_tokens", "store_id, refresh_hash, id, created_at"),
        ("account_sessions", "account_refresh_tokens", "refresh_hash, id, created_at"),
    ] {
        let into = columns.replace("refresh_hash, id", "token_hash, session_id");
        strict
            .exec(
                &format!(
                    "INSERT INTO {tokens} ({into}) SELECT {columns} FROM {sessions} WHERE refresh_hash IS NOT NULL"
                ),
                &[],
            )
            .await;
        strict.exec(&format!("DROP INDEX {sessions}_by_refresh"), &[]).await;
        strict.exec(&format!("ALTER TABLE {sessions} DROP COLUMN refresh_hash"), &[]).await;
    }
    strict.exec("DELETE FROM schema_migrations WHERE version = 17", &[]).await;
    let migrated = strict.sibling().await;
    assert_eq!(migrated.scalar("SELECT COUNT(*) FROM schema_migrations WHERE version = 17", &[]).await, 1);
    for table in ["profile_refresh_tokens", "account_refresh_tokens"] {
        let live = migrated.scalar(&format!("SELECT COUNT(*) FROM {table} WHERE rotated_at IS NULL"), &[]).await;
        assert_eq!(live, 0, "{table}");
    }

    let (status, account) =
        migrated.post("/v1/auth/refresh", None, json!({"refresh_token": admin.refresh_token})).await;
    assert_eq!(status, StatusCode::OK, "{account}");
    let (status, guest) = migrated.post(&path, None, json!({"refresh_token": untouched["refresh_token"]})).await;
    assert_eq!(status, StatusCode::OK, "{guest}");
    assert_eq!(guest["id"], untouched["id"]);
    let (status, next) = migrated.post(&path, None, json!({"refresh_token": current["refresh_token"]})).await;
    assert_eq!(status, StatusCode::OK, "{next}");
    assert_eq!(migrated.get(&store_path(s, "/profiles/me"), Some(tok(&next))).await.0, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let reuse = migrated.post(&path, None, json!({"refresh_token": exchanged["refresh_token"]})).await;
    expect_error(&reuse, 401, "refresh_token_reused");
    expect_error(&migrated.get(&store_path(s, "/profiles/me"), Some(tok(&next))).await, 401, "unauthorized");
    migrated.stop().await;
    strict.stop().await;
}

async fn sessions_are_listed_and_revoked_by_admin_or_self(app: &TestApp) {
    let admin = app.admin("sess").await;
    let s = admin.store_id.as_str();
    let one = sign_in(app, s, "multi@example.com", 1).await;
    let two = sign_in(app, s, "multi@example.com", 2).await;
    let pid = one["profile_id"].as_str().unwrap();
    let list_path = store_path(s, &format!("/profiles/{pid}/sessions"));
    let (status, by_admin) = app.get(&list_path, Some(&admin.token)).await;
    assert_eq!(status, StatusCode::OK, "{by_admin}");
    let ids: Vec<&str> = by_admin["items"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [one["id"].as_str().unwrap(), two["id"].as_str().unwrap()]);
    assert!(by_admin["items"][0].get("refresh_token").is_none());
    assert_eq!(app.get(&list_path, Some(tok(&one))).await.1, by_admin, "the profile itself sees the same");

    // Another profile cannot see or touch them.
    let stranger = initialize(app, s).await;
    expect_error(&app.get(&list_path, Some(tok(&stranger))).await, 404, "not_found");
    expect_error(&app.delete(&list_path, Some(tok(&stranger))).await, 404, "not_found");

    let one_path = format!("{list_path}/{}", one["id"].as_str().unwrap());
    assert_eq!(app.delete(&one_path, Some(&admin.token)).await.0, StatusCode::OK);
    expect_error(&app.get(&store_path(s, "/profiles/me"), Some(tok(&one))).await, 401, "unauthorized");
    expect_error(&app.delete(&one_path, Some(&admin.token)).await, 404, "not_found");
    expect_error(
        &app.delete(&format!("{list_path}/{}", uuid::Uuid::now_v7()), Some(&admin.token)).await,
        404,
        "not_found",
    );
    expect_error(&app.delete(&format!("{list_path}/not-a-uuid"), Some(&admin.token)).await, 404, "not_found");

    let third = sign_in(app, s, "multi@example.com", 3).await;
    assert_eq!(app.delete(&list_path, Some(tok(&two))).await, (StatusCode::OK, json!({"deleted": true})));
    for t in [&two, &third] {
        expect_error(&app.get(&store_path(s, "/profiles/me"), Some(tok(t))).await, 401, "unauthorized");
    }
    assert_eq!(app.get(&list_path, Some(&admin.token)).await.1["items"], json!([]));
    let other = app.admin("sess2").await;
    expect_error(&app.get(&list_path, Some(&other.token)).await, 404, "not_found");
}

async fn revocation_holds_across_instances(app: &TestApp) {
    let other = app.sibling().await;
    let admin = app.admin("xinst").await;
    let s = admin.store_id.as_str();
    let t = initialize(app, s).await;
    assert_eq!(other.get(&store_path(s, "/profiles/me"), Some(tok(&t))).await.0, StatusCode::OK);
    let pid = t["profile_id"].as_str().unwrap();
    app.delete(&store_path(s, &format!("/profiles/{pid}/sessions")), Some(&admin.token)).await;
    expect_error(&other.get(&store_path(s, "/profiles/me"), Some(tok(&t))).await, 401, "unauthorized");
    other.stop().await;
}

/// getMe may answer from memory (Postgres: a per-profile version checked on every call, see
/// `services::me_cache`): whatever changes what it shows, through another instance or in SQL by
/// hand, the next call shows it. Each step compares getMe on this instance with the admin view
/// read through the other one.
async fn me_is_never_stale_whichever_instance_writes(app: &TestApp) {
    let other = app.sibling().await;
    let admin = app.admin("fresh").await;
    let s = admin.store_id.as_str();
    let email = "fresh@example.com";
    let (_, tax) = app
        .post(
            &admin.store("/taxonomies"),
            Some(&admin.token),
            json!({"key": "t", "schema": [{"key": "n", "type": "number"}]}),
        )
        .await;
    let t = sign_in(app, s, email, 1).await;
    let pid = t["profile_id"].as_str().unwrap().to_string();
    let me_path = store_path(s, "/profiles/me");
    let admin_view = admin.store(&format!("/profiles/{pid}"));
    let counts = || app.state.services.sessions.me_cache_counts();
    let ids = || [Bind::U(s.parse().unwrap()), Bind::U(pid.parse().unwrap())];
    let check = |step: &'static str| {
        let (me_path, admin_view, other, admin_token, t) = (&me_path, &admin_view, &other, &admin.token, &t);
        async move {
            let (status, me) = app.get(me_path, Some(tok(t))).await;
            assert_eq!(status, StatusCode::OK, "{step}: {me}");
            let (_, fresh) = other.get(admin_view, Some(admin_token)).await;
            assert_eq!(me, fresh, "{step}: getMe shows what was committed");
            me
        }
    };
    check("first").await;
    let before = counts();
    check("unchanged").await;
    if let (Some((hits0, _)), Some((hits1, _))) = (before, counts()) {
        assert_eq!(hits1, hits0 + 1, "an unchanged profile is answered from memory");
    }
    assert_eq!(before.is_some(), app.backend == common::Backend::Postgres, "the cache runs on Postgres only");
    let metrics = app.req(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    if let Some((hits, misses)) = counts() {
        assert!(metrics.contains(&format!("storecrm_me_cache_hits_total {hits}\n")), "{metrics}");
        assert!(metrics.contains(&format!("storecrm_me_cache_misses_total {misses}\n")), "{metrics}");
        assert!(metrics.contains("storecrm_me_cache_entries 1\n"), "{metrics}");
    } else {
        assert!(!metrics.contains("storecrm_me_cache_hits_total 1"), "{metrics}");
    }

    let set = |n: f64| json!({"taxonomies": [{"taxonomy_id": tax["id"], "fields": [{"key": "n", "type": "number", "value": n}]}]});
    assert_eq!(other.put(&admin_view, Some(&admin.token), set(1.5)).await.0, StatusCode::OK);
    assert_eq!(check("values set through the other instance").await["taxonomies"][0]["fields"][0]["value"], 1.5);
    app.exec("UPDATE profile_taxonomy_values SET num_value = 2.5 WHERE store_id = $1 AND profile_id = $2", &ids())
        .await;
    assert_eq!(check("a value changed in SQL").await["taxonomies"][0]["fields"][0]["value"], 2.5);
    app.exec(
        "INSERT INTO profile_promo_usage (store_id, profile_id, promo_code_id, uses) VALUES ($1, $2, 'SPRING', 1)",
        &ids(),
    )
    .await;
    check("promo usage written in SQL").await;
    app.exec("UPDATE profile_promo_usage SET uses = 2 WHERE store_id = $1", &[Bind::U(s.parse().unwrap())]).await;
    check("promo usage counted in SQL").await;

    let codes = |me: &Value| me["verification_codes"].as_array().unwrap().len();
    let shown = codes(&check("codes").await);
    let got = other.post(&store_path(s, "/profiles/auth/code"), None, json!({"email": email})).await;
    assert_eq!(got.0, StatusCode::ACCEPTED);
    assert_eq!(codes(&check("a code requested through the other instance").await), shown + 1);
    let wrong = if app.code_for(email, 2).await == "000000" { "111111" } else { "000000" };
    let (status, _) =
        other.post(&store_path(s, "/profiles/auth/verify"), None, json!({"email": email, "code": wrong})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(check("a wrong code counted").await["verification_codes"][0]["attempts"], 1);

    // A claim: connect names the address through the other instance, which opens a session on
    // the profile and changes nothing else.
    let (status, claim) = other.post(&store_path(s, "/profiles/connect"), None, json!({"email": email})).await;
    assert_eq!(status, StatusCode::OK, "{claim}");
    assert_eq!(check("a claim's session").await["auth_tokens"].as_array().unwrap().len(), 2);
    let path = store_path(s, &format!("/profiles/{pid}/sessions/{}", claim["id"].as_str().unwrap()));
    assert_eq!(other.delete(&path, Some(&admin.token)).await.0, StatusCode::OK);

    // A second session, signed in through the other instance, then revoked there.
    let code = {
        other.post(&store_path(s, "/profiles/auth/code"), None, json!({"email": email})).await;
        app.code_for(email, 3).await
    };
    let (status, second) =
        other.post(&store_path(s, "/profiles/auth/verify"), None, json!({"email": email, "code": code})).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(check("a new session").await["auth_tokens"].as_array().unwrap().len(), 2);
    let (status, _) = other
        .post(&store_path(s, "/profiles/auth/refresh"), None, json!({"refresh_token": second["refresh_token"]}))
        .await;
    assert_eq!(status, StatusCode::OK);
    check("the other session refreshed").await;
    let sid = second["id"].as_str().unwrap();
    let path = store_path(s, &format!("/profiles/{pid}/sessions/{sid}"));
    assert_eq!(other.delete(&path, Some(&admin.token)).await.0, StatusCode::OK);
    assert_eq!(check("the other session revoked").await["auth_tokens"].as_array().unwrap().len(), 1);

    app.exec("UPDATE profiles SET status = 'archived' WHERE store_id = $1 AND id = $2", &ids()).await;
    check("the profile row changed in SQL").await;

    // Revocation through the other instance: refused here at once.
    other.delete(&store_path(s, &format!("/profiles/{pid}/sessions")), Some(&admin.token)).await;
    expect_error(&app.get(&me_path, Some(tok(&t))).await, 401, "unauthorized");
    other.stop().await;
}

/// A remembered getMe lists another session only while it lives: sessions end by time too.
async fn me_drops_a_session_when_it_ends(default_app: &TestApp) {
    let short = TestApp::spawn_with(default_app.backend, &[("REFRESH_TOKEN_TTL_SECS", "4")]).await;
    let app = &short;
    let admin = app.admin("ends").await;
    let s = admin.store_id.as_str();
    sign_in(app, s, "ends@example.com", 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let second = sign_in(app, s, "ends@example.com", 2).await;
    let me_path = store_path(s, "/profiles/me");
    let (_, me) = app.get(&me_path, Some(tok(&second))).await;
    let ends: Vec<i64> =
        me["auth_tokens"].as_array().unwrap().iter().map(|t| t["refresh_expires_at"].as_i64().unwrap()).collect();
    assert_eq!(ends.len(), 2, "{me}");
    let (first_ends, second_ends) = (ends.iter().min().copied().unwrap(), ends.iter().max().copied().unwrap());
    assert!(second_ends > first_ends, "{me}");
    let (_, again) = app.get(&me_path, Some(tok(&second))).await;
    assert_eq!(again, me);
    // Past the first session's end (a second apart from the second's, at least).
    let now_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    tokio::time::sleep(std::time::Duration::from_millis((first_ends * 1000 + 100 - now_ms()).max(0) as u64)).await;
    let (status, me) = app.get(&me_path, Some(tok(&second))).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["auth_tokens"].as_array().unwrap().len(), 1, "an ended session is no longer listed: {me}");
    short.stop().await;
}

async fn bad_input_is_refused_and_writes_nothing(app: &TestApp) {
    let admin = app.admin("badin").await;
    let s = admin.store_id.as_str();
    let count = || app.scalar("SELECT COUNT(*) FROM profiles", &[]);
    let before = count().await;
    for (path, body, field, error) in [
        ("/profiles/connect", json!({"email": "x"}), "email", "invalid_email"),
        ("/profiles/connect", json!({}), "email", "required"),
        ("/profiles/auth/verify", json!({"email": "a@example.com", "code": "12345"}), "code", "invalid_code_format"),
        ("/profiles/auth/verify", json!({"email": "a@example.com", "code": "abcdef"}), "code", "invalid_code_format"),
        ("/profiles/auth/verify", json!({"email": "a@example.com", "code": 123456}), "code", "invalid_type"),
        ("/profiles/auth/verify", json!({"email": "bad", "code": "123456"}), "email", "invalid_email"),
        ("/profiles/auth/refresh", json!({"refresh_token": ""}), "refresh_token", "required"),
    ] {
        let got = app.post(&store_path(s, path), None, body).await;
        expect_error(&got, 422, "validation_failed");
        assert_eq!(got.1["validation_errors"][0], json!({"field": field, "error": error}), "{path}");
    }
    expect_error(
        &app.post(&store_path(s, "/profiles/auth/refresh"), None, json!({"refresh_token": "garbage"})).await,
        401,
        "invalid_refresh_token",
    );
    expect_error(
        &app.post(&store_path(s, "/profiles/auth/verify"), None, json!({"email": "a@example.com", "code": "123456"}))
            .await,
        401,
        "invalid_code",
    );
    let missing = uuid::Uuid::now_v7().to_string();
    expect_error(&app.post(&store_path(&missing, "/profiles/initialize"), None, json!({})).await, 404, "not_found");
    expect_error(
        &app.post(&store_path(&missing, "/profiles/connect"), None, json!({"email": "a@example.com"})).await,
        404,
        "not_found",
    );
    expect_error(&app.post(&store_path("nope", "/profiles/initialize"), None, json!({})).await, 404, "not_found");
    // Nothing of the unknown store anywhere: not even its rate-limit hits or events.
    for table in ["profiles", "rate_limits", "events", "profile_sessions"] {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE store_id = $1");
        assert_eq!(app.scalar(&sql, &[Bind::U(missing.parse().unwrap())]).await, 0, "{table}");
    }
    expect_error(
        &app.post(&store_path(s, "/profiles/connect"), Some("garbage"), json!({"email": "a@example.com"})).await,
        401,
        "unauthorized",
    );
    assert_eq!(count().await, before, "nothing written");
}

/// A backlog larger than one sweep statement (1,000 rows) is swept whole: the loop goes on until
/// a statement deletes less than a batch.
async fn janitor_sweeps_a_backlog_in_batches(app: &TestApp) {
    app.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
         INSERT INTO account_rate_limits (bucket, window_start, hits) SELECT 'old-' || i, 0, 1 FROM n",
        &[],
    )
    .await;
    app.exec("INSERT INTO account_rate_limits (bucket, window_start, hits) VALUES ('current', 2000000000, 1)", &[])
        .await;
    let report = app.state.services.sessions.sweep(storecrm::now()).await.unwrap();
    assert!(report.rate_limits >= 2500, "{report:?}");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM account_rate_limits WHERE window_start = 0", &[]).await, 0);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM account_rate_limits", &[]).await, 1, "the current window stays");
}

async fn guests_without_email_are_swept(app: &TestApp) {
    let admin = app.admin("sweep").await;
    let s = admin.store_id.as_str();
    let guest = initialize(app, s).await;
    let kept = initialize(app, s).await;
    app.post(&store_path(s, "/profiles/connect"), Some(tok(&kept)), json!({"email": "stays@example.com"})).await;
    let now = storecrm::now();
    // Nothing is old enough yet.
    assert_eq!(app.state.services.sessions.sweep(now).await.unwrap().guests, 0);
    // Thirty days and a minute later (GUEST_TTL default), the silent guest goes; the one with an email stays.
    let later = now + 30 * 86400 + 60;
    let report = app.state.services.sessions.sweep(later).await.unwrap();
    assert_eq!(report.guests, 1, "{report:?}");
    expect_error(
        &app.get(&admin.store(&format!("/profiles/{}", guest["profile_id"].as_str().unwrap())), Some(&admin.token))
            .await,
        404,
        "not_found",
    );
    assert_eq!(
        app.get(&admin.store(&format!("/profiles/{}", kept["profile_id"].as_str().unwrap())), Some(&admin.token))
            .await
            .0,
        StatusCode::OK
    );
    let store = uuid(&json!(s));
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM profile_sessions WHERE store_id = $1", &[Bind::U(store)]).await,
        0,
        "sessions past expiry are gone too"
    );

    // The background janitor runs on its own.
    let quick = TestApp::spawn_with(app.backend, &[("GUEST_TTL_SECS", "1"), ("JANITOR_INTERVAL_SECS", "1")]).await;
    let qa = quick.admin("janitor").await;
    let g = initialize(&quick, &qa.store_id).await;
    quick.exec("UPDATE profiles SET created_at = created_at - 10", &[]).await;
    quick.exec("UPDATE profile_sessions SET last_used_at = last_used_at - 10", &[]).await;
    let path = qa.store(&format!("/profiles/{}", g["profile_id"].as_str().unwrap()));
    let mut gone = false;
    for _ in 0..60 {
        if quick.get(&path, Some(&qa.token)).await.0 == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the janitor removed the idle guest");
    // Its session, far from its refresh expiry, went with it (no foreign key does it on Postgres).
    let g_id = uuid(&g["profile_id"]);
    assert_eq!(quick.scalar("SELECT COUNT(*) FROM profile_sessions WHERE profile_id = $1", &[Bind::U(g_id)]).await, 0);
    quick.stop().await;
}

/// A session is written only for a profile that exists, whichever of a new session and the
/// deletion of its profile (a merge, an erasure, the guest sweep) comes first: a foreign key on
/// SQLite; on Postgres, where there is none, the session's statement locks the profile and a
/// deletion deletes the profile's sessions after it. Both interleavings, by hand, on the repository.
async fn a_session_is_written_only_for_a_live_profile(app: &TestApp) {
    use storecrm::repo::{ProfileSessionRow, RepoError};
    let admin = app.admin("orphans").await;
    let store = uuid(&json!(admin.store_id));
    let admin = &admin;
    let new_profile = |email: &'static str| async move {
        let (status, p) = app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": email})).await;
        assert_eq!(status, StatusCode::CREATED, "{p}");
        uuid(&p["id"])
    };
    let session = |profile_id| ProfileSessionRow {
        store_id: store,
        id: uuid::Uuid::now_v7(),
        profile_id,
        verified: false,
        user_agent: None,
        created_at: storecrm::now(),
        last_used_at: storecrm::now(),
        refresh_expires_at: storecrm::now() + 86400,
    };
    let sessions_of = |id| async move {
        app.scalar(
            "SELECT COUNT(*) FROM profile_sessions WHERE store_id = $1 AND profile_id = $2",
            &[Bind::U(store), Bind::U(id)],
        )
        .await
    };

    // The deletion first: the session waits for it, then finds no profile and writes nothing.
    let first = new_profile("deleted-first@example.com").await;
    let mut deleting = app.state.db.begin().await.unwrap();
    assert!(deleting.delete_profile(store, first).await.unwrap());
    let db = app.state.db.clone();
    let row = session(first);
    let writer = tokio::spawn(async move {
        let mut tx = db.begin().await?;
        tx.insert_profile_session(&row, false, &[7; 32], None).await?;
        tx.commit().await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!writer.is_finished(), "the session's statement waits for the deletion");
    deleting.commit().await.unwrap();
    let refused = writer.await.unwrap();
    assert!(matches!(refused, Err(RepoError::MissingReference)), "{refused:?}");
    assert_eq!(sessions_of(first).await, 0);

    // The session first: the deletion waits for it, then deletes it with the profile.
    let second = new_profile("session-first@example.com").await;
    let mut writing = app.state.db.begin().await.unwrap();
    writing.insert_profile_session(&session(second), false, &[8; 32], None).await.unwrap();
    let db = app.state.db.clone();
    let deleter = tokio::spawn(async move {
        let mut tx = db.begin().await?;
        let deleted = tx.delete_profile(store, second).await?;
        tx.commit().await.map(|()| deleted)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!deleter.is_finished(), "the deletion waits for the session's transaction");
    writing.commit().await.unwrap();
    assert!(deleter.await.unwrap().unwrap(), "the profile was deleted");
    assert_eq!(sessions_of(second).await, 0, "no session outlives its profile");
}

async fn code_mail_is_complete(app: &TestApp) {
    let admin: Admin = app.admin("mailer").await;
    app.put(
        &admin.store(""),
        Some(&admin.token),
        json!({"name": "Ann & Co", "from_email": "hello@ann.example", "from_name": "Ann's Shop"}),
    )
    .await;
    request_code(app, &admin.store_id, "reader@example.com").await;
    let code = app.code_for("reader@example.com", 1).await;
    let mail = &app.mails_to("reader@example.com")[0];
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(mail.contains("text/plain") && mail.contains("text/html"));
    assert!(mail.contains("hello@ann.example"), "the store's sender");
    assert!(mail.contains(&code));
    let subject = mail.lines().find(|l| l.starts_with("Subject: ")).unwrap();
    assert!(subject.contains("Ann & Co"), "{subject}");
}

async fn codes_requested_during_an_smtp_outage_arrive_once_after_it(app: &TestApp) {
    let smtp = crate::mail::sink::SmtpSink::start().await;
    smtp.set_down(true);
    let url = smtp.url();
    let own = TestApp::spawn_with(app.backend, &[("SMTP_URL", url.as_str()), ("MAIL_RETRY_BASE_SECS", "1")]).await;
    let app = &own;
    let admin = app.admin("outage").await;
    let s = admin.store_id.as_str();
    let emails = ["o1@example.com", "o2@example.com", "o3@example.com"];
    for e in emails {
        request_code(app, s, e).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(smtp.messages().is_empty() && smtp.dropped() >= 1, "the outage refused delivery");
    smtp.set_down(false);
    let mut got = vec![];
    for _ in 0..150 {
        got = smtp.messages();
        if got.len() >= emails.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    got = smtp.messages();
    assert_eq!(
        got.len(),
        emails.len(),
        "none lost, none twice: {:?}",
        got.iter().map(|m| &m.rcpt_to).collect::<Vec<_>>()
    );
    for e in emails {
        let mail =
            got.iter().find(|m| m.rcpt_to.iter().any(|r| r.contains(e))).unwrap_or_else(|| panic!("no mail to {e}"));
        let parsed = crate::mail::sink::Parsed::new(&mail.data);
        let code: String = parsed.header("Subject").unwrap().chars().take(6).collect();
        let (status, t) = verify(app, s, e, &code, None).await;
        assert_eq!(status, StatusCode::OK, "{t}");
    }
    own.stop().await;
}
