//! Audiences (§6): definitions, subscribe (single and double opt-in), confirm, one-click
//! unsubscribe, access, subscriber admin, paid without payments, merge and erasure — both backends.

use crate::common::{Admin, Bind, TestApp, expect_error, uuid};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    audience_definitions,
    public_callers_see_active_audiences_only,
    single_opt_in_subscribe_and_access,
    double_opt_in_story,
    unsubscribe_by_body_query_and_one_click,
    only_the_profile_itself_or_an_admin_subscribes,
    paid_audiences_need_payments,
    access_follows_status_end_date_and_verification,
    subscriber_admin_and_paging,
    merge_keeps_the_stronger_subscription,
    erasure_and_counts,
    template_deletion_makes_audiences_single_opt_in,
    hosted_pages_confirm_and_unsubscribe_with_a_form,
);

pub(crate) async fn audience(app: &TestApp, admin: &Admin, body: Value) -> Value {
    let (status, a) = app.post(&admin.store("/audiences"), Some(&admin.token), body).await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    a
}

/// A profile with an email and a verified session (magic code).
pub(crate) async fn shopper(app: &TestApp, admin: &Admin, email: &str) -> Value {
    let s = &admin.store_id;
    let n = app.mails_to(email).len() + 1;
    app.post(&format!("/v1/stores/{s}/profiles/auth/code"), None, json!({"email": email})).await;
    let code = app.code_for(email, n).await;
    let (status, t) =
        app.post(&format!("/v1/stores/{s}/profiles/auth/verify"), None, json!({"email": email, "code": code})).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    t
}

pub(crate) fn tok(t: &Value) -> &str {
    t["access_token"].as_str().unwrap()
}

pub(crate) async fn template(app: &TestApp, admin: &Admin) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    app.exec(
        "INSERT INTO email_templates (store_id, id, key, subject, body, status, created_at, updated_at)
         VALUES ($1, $2, 'confirm', 'Confirm {{ audience_name }}', '<p>Hi {{ email }}, <a href=\"{{ confirm_url }}\">confirm</a></p>', 'active', 1, 1)",
        &[Bind::U(uuid(&json!(admin.store_id))), Bind::U(id)],
    )
    .await;
    id
}

async fn audience_definitions(app: &TestApp) {
    let admin = app.shop_admin("aud").await;
    let news = audience(app, &admin, json!({"key": "news", "name": "Newsletter", "type": "standard"})).await;
    assert_eq!(news["type"], json!({"type": "standard"}));
    assert_eq!(news["status"], "active");
    assert_eq!(news["subscriber_count"], 0);
    assert!(news["confirm_template_id"].is_null());
    let tpl = template(app, &admin).await;
    let club = audience(app, &admin, json!({"key": "club", "type": {"type": "paid", "prices": [
        {"currency": "eur", "amount": 900, "interval": {"period": "month", "count": 1}, "providers": [{"type": "stripe", "id": "price_club"}]}
    ]}, "confirmTemplateId": tpl})).await;
    assert_eq!(club["type"]["type"], "paid");
    assert_eq!(club["type"]["prices"][0]["currency"], "EUR");
    assert!(club["type"]["prices"][0]["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(club["confirm_template_id"], tpl.to_string());

    assert_eq!(app.get(&admin.store("/audiences/news"), Some(&admin.token)).await.1, news);
    assert_eq!(
        app.get(&admin.store(&format!("/audiences/{}", news["id"].as_str().unwrap())), Some(&admin.token)).await.1,
        news
    );

    expect_error(
        &app.post(&admin.store("/audiences"), Some(&admin.token), json!({"key": "news"})).await,
        409,
        "key_taken",
    );
    for (body, field, error) in [
        (json!({"key": "has space"}), "key", "invalid_key"),
        (json!({"key": "x".repeat(65)}), "key", "invalid_key"),
        (json!({"key": "confirm"}), "key", "reserved_key"),
        (json!({"key": "unsubscribe"}), "key", "reserved_key"),
        (json!({"key": "ok", "confirm_template_id": uuid::Uuid::now_v7()}), "confirm_template_id", "unknown_template"),
        (json!({"key": "ok", "type": {"type": "paid", "prices": []}}), "type.prices", "required"),
        (json!({"key": "ok", "type": "gold"}), "type", "invalid_value"),
    ] {
        let got = app.post(&admin.store("/audiences"), Some(&admin.token), body).await;
        expect_error(&got, 422, "validation_failed");
        assert_eq!(got.1["validation_errors"][0], json!({"field": field, "error": error}), "{}", got.1);
    }

    let path = admin.store("/audiences/news");
    expect_error(
        &app.put(
            &path,
            Some(&admin.token),
            json!({"type": {"type": "paid", "prices": [{"currency": "EUR", "amount": 1}]}}),
        )
        .await,
        422,
        "validation_failed",
    );
    let immutable = app
        .put(&path, Some(&admin.token), json!({"type": {"type": "paid", "prices": [{"currency": "EUR", "amount": 1}]}}))
        .await;
    assert_eq!(immutable.1["validation_errors"][0]["error"], "type_immutable");
    expect_error(
        &app.put(&path, Some(&admin.token), json!({"prices": [{"currency": "EUR", "amount": 1}]})).await,
        422,
        "validation_failed",
    );
    let (status, renamed) = app
        .put(&path, Some(&admin.token), json!({"key": "weekly", "name": "Weekly", "confirm_template_id": tpl}))
        .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(
        (renamed["key"].as_str(), renamed["confirm_template_id"].as_str()),
        (Some("weekly"), Some(tpl.to_string().as_str()))
    );
    let (_, cleared) = app
        .put(
            &admin.store("/audiences/weekly"),
            Some(&admin.token),
            json!({"confirmTemplateId": null, "status": "archived"}),
        )
        .await;
    assert!(cleared["confirm_template_id"].is_null());
    assert_eq!(cleared["name"], "Weekly");
    expect_error(
        &app.put(&admin.store("/audiences/weekly"), Some(&admin.token), json!({"key": "club"})).await,
        409,
        "key_taken",
    );
    let reserved = app.put(&admin.store("/audiences/weekly"), Some(&admin.token), json!({"key": "confirm"})).await;
    expect_error(&reserved, 422, "validation_failed");
    assert_eq!(reserved.1["validation_errors"][0], json!({"field": "key", "error": "reserved_key"}));
    let long = app.put(&admin.store("/audiences/weekly"), Some(&admin.token), json!({"name": "x".repeat(201)})).await;
    assert_eq!(long.1["validation_errors"][0], json!({"field": "name", "error": "too_long"}), "{}", long.1);

    let admin = &admin;
    let ids = |q: &str| {
        let path = admin.store(&format!("/audiences?{q}"));
        async move {
            let (status, page) = app.get(&path, Some(&admin.token)).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            page["items"].as_array().unwrap().iter().map(|a| a["key"].as_str().unwrap().to_string()).collect::<Vec<_>>()
        }
    };
    assert_eq!(ids("").await, ["weekly", "club"]);
    assert_eq!(ids("status=archived").await, ["weekly"]);
    assert_eq!(ids("query=LU").await, ["club"]);
    let (a, b) = (news["id"].as_str().unwrap(), club["id"].as_str().unwrap());
    assert_eq!(ids(&format!("ids=%5B%22{b}%22%5D")).await, ["club"]);
    assert_eq!(ids(&format!("ids={a},{b}")).await, ["weekly", "club"]);
    expect_error(&app.get(&admin.store("/audiences?ids=nope"), Some(&admin.token)).await, 422, "validation_failed");
    let (_, p1) = app.get(&admin.store("/audiences?limit=1"), Some(&admin.token)).await;
    let (_, p2) = app
        .get(&admin.store(&format!("/audiences?limit=1&cursor={}", p1["cursor"].as_str().unwrap())), Some(&admin.token))
        .await;
    assert_eq!(p2["items"][0]["key"], "club");
    assert!(p2["cursor"].is_null());
}

async fn public_callers_see_active_audiences_only(app: &TestApp) {
    let admin = app.shop_admin("pub").await;
    audience(app, &admin, json!({"key": "open"})).await;
    audience(app, &admin, json!({"key": "closed"})).await;
    app.put(&admin.store("/audiences/closed"), Some(&admin.token), json!({"status": "archived"})).await;
    assert_eq!(app.get(&admin.store("/audiences/open"), None).await.0, StatusCode::OK);
    expect_error(&app.get(&admin.store("/audiences/closed"), None).await, 404, "not_found");
    let guest = app.post(&admin.store("/profiles/initialize"), None, json!({})).await.1;
    expect_error(&app.get(&admin.store("/audiences/closed"), Some(tok(&guest))).await, 404, "not_found");
    assert_eq!(app.get(&admin.store("/audiences/closed"), Some(&admin.token)).await.0, StatusCode::OK);
    expect_error(&app.get(&admin.store("/audiences"), None).await, 401, "unauthorized");
}

async fn single_opt_in_subscribe_and_access(app: &TestApp) {
    let admin = app.shop_admin("single").await;
    let a = audience(app, &admin, json!({"key": "news"})).await;
    let t = shopper(app, &admin, "reader@example.com").await;
    let path = admin.store("/audiences/news/subscribe");
    let (status, sub) = app.post(&path, Some(tok(&t)), json!({"profileId": t["profile_id"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    let s = &sub["subscription"];
    assert_eq!((s["status"].as_str(), s["source"].as_str()), (Some("active"), Some("signup")));
    assert_eq!(s["audience_id"], a["id"]);
    assert!(s["start_date"].as_i64().is_some() && s["confirmed_at"].as_i64().is_some());
    assert!(sub.get("checkout_url").is_none());
    let (status, again) = app.post(&path, Some(tok(&t)), json!({"profile_id": t["profile_id"]})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["subscription"]["id"], s["id"]);

    let (status, access) = app.get(&admin.store("/audiences/news/access"), Some(tok(&t))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(access["has_access"], true);
    assert_eq!(access["subscription"]["id"], s["id"]);
    assert_eq!(app.get(&admin.store("/audiences/news"), Some(&admin.token)).await.1["subscriber_count"], 1);

    let other = shopper(app, &admin, "second@example.com").await;
    let (status, by_admin) = app.post(&path, Some(&admin.token), json!({"profile_id": other["profile_id"]})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(by_admin["subscription"]["source"], "admin");
    assert_eq!(app.get(&admin.store("/audiences/news"), Some(&admin.token)).await.1["subscriber_count"], 2);
    let (_, none) = app.get(&admin.store(&format!("/audiences/{}/access", "missing")), Some(tok(&t))).await;
    assert_eq!(none["error"], "not_found");
}

async fn double_opt_in_story(app: &TestApp) {
    let admin = app.shop_admin("double").await;
    let tpl = template(app, &admin).await;
    audience(app, &admin, json!({"key": "news", "name": "The <News>", "confirm_template_id": tpl})).await;
    let t = shopper(app, &admin, "opt@example.com").await;
    let path = admin.store("/audiences/news/subscribe");
    expect_error(
        &app.post(&path, Some(tok(&t)), json!({"profile_id": t["profile_id"], "confirm_url": "/relative"})).await,
        422,
        "validation_failed",
    );

    let (status, sub) = app
        .post(
            &path,
            Some(tok(&t)),
            json!({"profile_id": t["profile_id"], "confirmUrl": "https://shop.example/confirm?x=1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    assert_eq!(sub["subscription"]["status"], "pending");
    assert!(sub["subscription"]["confirmed_at"].is_null());
    let access = app.get(&admin.store("/audiences/news/access"), Some(tok(&t))).await.1;
    assert_eq!((access["has_access"].as_bool(), access["reason"].as_str()), (Some(false), Some("pending")));
    assert_eq!(app.get(&admin.store("/audiences/news"), Some(&admin.token)).await.1["subscriber_count"], 0);

    // The confirmation mail: rendered from the template, link with the token, list headers.
    let mut mail = String::new();
    for _ in 0..100 {
        if let Some(m) = app.mails_to("opt@example.com").into_iter().find(|m| m.contains("Confirm")) {
            mail = m;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(mail.contains("Subject: Confirm The <News>"), "{mail}");
    assert!(mail.contains("List-Unsubscribe: <"), "{mail}");
    assert!(mail.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
    let unfolded = mail.replace("=\r\n", "").replace("=3D", "=");
    let start = unfolded.find("https://shop.example/confirm?x=1&token=").expect("confirm link in the mail");
    let token: String = unfolded[start + "https://shop.example/confirm?x=1&token=".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert!(token.len() >= 40, "{token}");

    // A GET never confirms (mail scanners prefetch links): it is the hosted page, with a button.
    let get = app.req(Method::GET, &admin.store(&format!("/audiences/confirm?token={token}"))).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(get.headers()["cache-control"], "no-store");
    let page = get.text().await.unwrap();
    assert!(page.contains("The &lt;News&gt;") && page.contains("<form method=\"post\""), "{page}");
    assert_eq!(app.get(&admin.store("/audiences/news/access"), Some(tok(&t))).await.1["reason"], "pending");

    let confirm = admin.store("/audiences/confirm");
    let (status, confirmed) = app.post(&confirm, None, json!({"token": token})).await;
    assert_eq!(status, StatusCode::OK, "{confirmed}");
    assert_eq!(confirmed["confirmed"], true);
    assert_eq!(confirmed["subscription"]["status"], "active");
    assert!(confirmed["subscription"]["confirmed_at"].as_i64().is_some());
    expect_error(&app.post(&confirm, None, json!({"token": token})).await, 400, "invalid_token");
    expect_error(&app.post(&confirm, None, json!({"token": "unknown"})).await, 400, "invalid_token");
    expect_error(&app.post(&confirm, None, json!({})).await, 422, "validation_failed");
    let other = app.shop_admin("double2").await;
    expect_error(
        &app.post(&other.store("/audiences/confirm"), None, json!({"token": token})).await,
        400,
        "invalid_token",
    );
    assert_eq!(app.get(&admin.store("/audiences/news/access"), Some(tok(&t))).await.1["has_access"], true);
    assert_eq!(app.get(&admin.store("/audiences/news"), Some(&admin.token)).await.1["subscriber_count"], 1);
    // Subscribing again while active returns the subscription.
    let (status, again) = app
        .post(&path, Some(tok(&t)), json!({"profile_id": t["profile_id"], "confirm_url": "https://shop.example/c"}))
        .await;
    assert_eq!((status, again["subscription"]["status"].as_str()), (StatusCode::OK, Some("active")));

    // A guest without email cannot get a confirmation mail.
    let guest = app.post(&admin.store("/profiles/initialize"), None, json!({})).await.1;
    let no_mail = app
        .post(
            &path,
            Some(tok(&guest)),
            json!({"profile_id": guest["profile_id"], "confirm_url": "https://shop.example/c"}),
        )
        .await;
    assert_eq!(no_mail.1["validation_errors"][0], json!({"field": "profile_id", "error": "email_required"}));
}

fn unsubscribe_link(mail: &str) -> String {
    let line = mail.lines().find(|l| l.starts_with("List-Unsubscribe: <")).expect("List-Unsubscribe header");
    line.trim_end().trim_start_matches("List-Unsubscribe: <").trim_end_matches('>').to_string()
}

async fn unsubscribe_by_body_query_and_one_click(app: &TestApp) {
    let admin = app.shop_admin("unsub").await;
    let tpl = template(app, &admin).await;
    audience(app, &admin, json!({"key": "news", "confirm_template_id": tpl})).await;
    let mut links = vec![];
    for email in ["u1@example.com", "u2@example.com", "u3@example.com"] {
        let t = shopper(app, &admin, email).await;
        app.post(
            &admin.store("/audiences/news/subscribe"),
            Some(tok(&t)),
            json!({"profile_id": t["profile_id"], "confirm_url": "https://s.example/c"}),
        )
        .await;
        let mut mail = None;
        for _ in 0..100 {
            mail = app.mails_to(email).into_iter().find(|m| m.contains("List-Unsubscribe"));
            if mail.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        links.push(unsubscribe_link(&mail.expect("confirmation mail")));
        app.post(
            &admin.store("/audiences/news/subscribers"),
            Some(&admin.token),
            json!({"profile_id": t["profile_id"]}),
        )
        .await;
    }
    assert_eq!(app.get(&admin.store("/audiences/news"), Some(&admin.token)).await.1["subscriber_count"], 3);
    assert!(links[0].starts_with(&format!(
        "{}/v1/stores/{}/audiences/unsubscribe?token=",
        app.state.config.public_base_url, admin.store_id
    )));
    let token = |link: &str| link.split("token=").nth(1).unwrap().to_string();
    let path = admin.store("/audiences/unsubscribe");

    // 1. token in a JSON body
    let (status, first) = app.post(&path, None, json!({"token": token(&links[0])})).await;
    assert_eq!(
        (status, &first["unsubscribed"], &first["subscription"]["status"]),
        (StatusCode::OK, &json!(true), &json!("cancelled"))
    );
    // 2. token in the query
    let q = app.req(Method::POST, &format!("{path}?token={}", token(&links[1]))).send().await.unwrap();
    assert_eq!(q.status(), StatusCode::OK);
    // 3. RFC 8058 one-click: the mail client POSTs the form to the header's URL.
    // The link is built on PUBLIC_BASE_URL; the test server listens elsewhere, so keep its path.
    let link_path = &links[2][links[2].find("/v1/").unwrap()..];
    let one_click = app
        .req(Method::POST, link_path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(one_click.status(), StatusCode::OK);

    let (_, subs) = app.get(&admin.store("/audiences/news/subscribers?status=cancelled"), Some(&admin.token)).await;
    assert_eq!(subs["items"].as_array().unwrap().len(), 3);
    assert_eq!(app.get(&admin.store("/audiences/news"), Some(&admin.token)).await.1["subscriber_count"], 0);
    // Idempotent: again, the same answer (and no second record in the consent ledger).
    assert_eq!(app.post(&path, None, json!({"token": token(&links[0])})).await, (StatusCode::OK, first.clone()));
    let pid = first["subscription"]["profile_id"].as_str().unwrap();
    let (_, ledger) = app.get(&admin.store(&format!("/profiles/{pid}/consents")), Some(&admin.token)).await;
    let actions: Vec<&str> =
        ledger["items"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions.last(), Some(&"unsubscribe"), "{ledger}");
    assert_eq!(actions.iter().filter(|a| **a == "unsubscribe").count(), 1, "{ledger}");
    expect_error(&app.post(&path, None, json!({"token": "garbage"})).await, 400, "invalid_token");
    let mut forged = token(&links[0]);
    forged.replace_range(forged.len() - 2.., "AA");
    expect_error(&app.post(&path, None, json!({"token": forged})).await, 400, "invalid_token");
    let other = app.shop_admin("unsub2").await;
    expect_error(
        &app.post(&other.store("/audiences/unsubscribe"), None, json!({"token": token(&links[0])})).await,
        400,
        "invalid_token",
    );
    expect_error(&app.post(&path, None, json!({})).await, 422, "validation_failed");
}

async fn only_the_profile_itself_or_an_admin_subscribes(app: &TestApp) {
    let admin = app.shop_admin("who").await;
    audience(app, &admin, json!({"key": "news"})).await;
    let a = shopper(app, &admin, "a@example.com").await;
    let b = shopper(app, &admin, "b@example.com").await;
    let path = admin.store("/audiences/news/subscribe");
    expect_error(&app.post(&path, Some(tok(&a)), json!({"profile_id": b["profile_id"]})).await, 403, "forbidden");
    expect_error(&app.post(&path, None, json!({"profile_id": a["profile_id"]})).await, 401, "unauthorized");
    let other = app.shop_admin("who2").await;
    expect_error(&app.post(&path, Some(&other.token), json!({"profile_id": a["profile_id"]})).await, 404, "not_found");
    expect_error(
        &app.post(&path, Some(&admin.token), json!({"profile_id": uuid::Uuid::now_v7()})).await,
        404,
        "not_found",
    );
    expect_error(&app.post(&path, Some(&admin.token), json!({"profile_id": "nope"})).await, 422, "validation_failed");
    expect_error(
        &app.post(&admin.store("/audiences/missing/subscribe"), Some(tok(&a)), json!({"profile_id": a["profile_id"]}))
            .await,
        404,
        "not_found",
    );
    app.put(&admin.store("/audiences/news"), Some(&admin.token), json!({"status": "archived"})).await;
    expect_error(
        &app.post(&path, Some(&admin.token), json!({"profile_id": a["profile_id"]})).await,
        409,
        "audience_archived",
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM subscriptions", &[]).await, 0, "nothing written");
}

async fn paid_audiences_need_payments(app: &TestApp) {
    let admin = app.shop_admin("paid").await;
    audience(app, &admin, json!({"key": "club", "type": {"type": "paid", "prices": [
        {"id": "monthly", "currency": "EUR", "amount": 900, "interval": {"period": "month", "count": 1}, "providers": [{"type": "stripe", "id": "price_m"}]}
    ]}})).await;
    let t = shopper(app, &admin, "payer@example.com").await;
    let path = admin.store("/audiences/club/subscribe");
    let body = |extra: Value| {
        let mut b = json!({"profile_id": t["profile_id"]});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    let got = app.post(&path, Some(tok(&t)), body(json!({}))).await;
    assert_eq!(got.1["validation_errors"][0], json!({"field": "price_id", "error": "required"}));
    let got = app.post(&path, Some(tok(&t)), body(json!({"price_id": "price_other"}))).await;
    assert_eq!(got.1["validation_errors"][0], json!({"field": "price_id", "error": "unknown_price"}));
    let got = app.post(&path, Some(tok(&t)), body(json!({"price_id": "monthly", "success_url": "nope"}))).await;
    assert_eq!(got.1["validation_errors"][0], json!({"field": "success_url", "error": "invalid_url"}));
    for price in ["monthly", "price_m"] {
        let got = app.post(&path, Some(tok(&t)), body(json!({"priceId": price, "successUrl": "https://s.example/ok", "cancelUrl": "https://s.example/no"}))).await;
        expect_error(&got, 503, "payments_not_configured");
        assert_eq!(got.1.get("retry_after"), None, "an operator must act: retrying soon will not help");
    }
    assert_eq!(app.scalar("SELECT COUNT(*) FROM subscriptions", &[]).await, 0, "nothing written");
}

async fn access_follows_status_end_date_and_verification(app: &TestApp) {
    let admin = app.shop_admin("access").await;
    let a = audience(app, &admin, json!({"key": "gated"})).await;
    let t = shopper(app, &admin, "member@example.com").await;
    let access_path = admin.store("/audiences/gated/access");
    let access = || app.get(&access_path, Some(tok(&t)));
    let reason = |v: &Value| (v["has_access"].as_bool().unwrap(), v["reason"].as_str().map(str::to_string));
    assert_eq!(reason(&access().await.1), (false, Some("not_subscribed".into())));
    app.post(&admin.store("/audiences/gated/subscribe"), Some(tok(&t)), json!({"profile_id": t["profile_id"]})).await;
    assert_eq!(reason(&access().await.1), (true, None));

    let store = uuid(&json!(admin.store_id));
    let set = |status: &'static str, end: i64| async move {
        app.exec(
            "UPDATE subscriptions SET status = $2, end_date = $3 WHERE store_id = $1",
            &[Bind::U(store), Bind::S(status.into()), Bind::I(end)],
        )
        .await
    };
    let now = storecrm::now();
    set("cancellation_scheduled", now + 3600).await;
    assert_eq!(reason(&access().await.1), (true, None), "access until the period ends");
    assert_eq!(app.get(&admin.store("/audiences/gated"), Some(&admin.token)).await.1["subscriber_count"], 1);
    set("cancellation_scheduled", now - 1).await;
    assert_eq!(reason(&access().await.1), (false, Some("expired".into())));
    set("expired", now - 1).await;
    assert_eq!(reason(&access().await.1), (false, Some("expired".into())));
    assert_eq!(app.get(&admin.store("/audiences/gated"), Some(&admin.token)).await.1["subscriber_count"], 0);
    set("active", 0).await;

    // A claim (unverified session) on a verified profile gets no access.
    let (_, claim) = app.post(&admin.store("/profiles/connect"), None, json!({"email": "member@example.com"})).await;
    let (_, denied) = app.get(&admin.store("/audiences/gated/access"), Some(tok(&claim))).await;
    assert_eq!(reason(&denied), (false, Some("verification_required".into())));
    assert!(denied.get("subscription").is_none());
    assert_eq!(reason(&access().await.1), (true, None));
    expect_error(
        &app.get(&admin.store(&format!("/audiences/{}/access", a["id"].as_str().unwrap())), Some(&admin.token)).await,
        403,
        "forbidden",
    );
}

async fn subscriber_admin_and_paging(app: &TestApp) {
    let admin = app.shop_admin("subs").await;
    audience(app, &admin, json!({"key": "news"})).await;
    let mut profiles = vec![];
    for i in 0..7 {
        let (_, p) = app
            .post(&admin.store("/profiles"), Some(&admin.token), json!({"email": format!("s{i}@example.com")}))
            .await;
        profiles.push(p);
    }
    let add = admin.store("/audiences/news/subscribers");
    for p in &profiles[..5] {
        let (status, r) = app.post(&add, Some(&admin.token), json!({"profile_id": p["id"]})).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(r["skipped"], false);
        assert_eq!(r["subscriber"]["status"], "active");
        assert_eq!(r["subscriber"]["source"], "admin");
    }
    let (_, again) = app.post(&add, Some(&admin.token), json!({"profile_id": profiles[0]["id"]})).await;
    assert_eq!(again["skipped"], true);
    assert_eq!(again["subscriber"]["email"], "s0@example.com");

    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    let mut page_no = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=2&cursor={c}"),
            None => "?limit=2".into(),
        };
        let (status, page) = app.get(&format!("{add}{q}"), Some(&admin.token)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(page["items"].as_array().unwrap().iter().map(|s| s["email"].as_str().unwrap().to_string()));
        for key in ["profile_id", "email", "status", "source", "subscribed_at"] {
            assert!(page["items"][0].get(key).is_some(), "{key}");
        }
        page_no += 1;
        if page_no == 1 {
            // Subscribed between pages: comes later in id order, so it shows up once.
            app.post(&add, Some(&admin.token), json!({"profile_id": profiles[5]["id"]})).await;
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.into()),
            None => break,
        }
    }
    assert_eq!(seen, ["s0", "s1", "s2", "s3", "s4", "s5"].map(|s| format!("{s}@example.com")));
    let (_, active) = app.get(&format!("{add}?status=active&limit=200"), Some(&admin.token)).await;
    assert_eq!(active["items"].as_array().unwrap().len(), 6);
    expect_error(&app.get(&format!("{add}?status=gone"), Some(&admin.token)).await, 422, "validation_failed");
    let (_, p1) = app.get(&format!("{add}?limit=1"), Some(&admin.token)).await;
    expect_error(
        &app.get(&format!("{add}?status=active&cursor={}", p1["cursor"].as_str().unwrap()), Some(&admin.token)).await,
        422,
        "validation_failed",
    );

    let del = format!("{add}/{}", profiles[0]["id"].as_str().unwrap());
    assert_eq!(app.delete(&del, Some(&admin.token)).await, (StatusCode::OK, json!({"deleted": true})));
    expect_error(&app.delete(&del, Some(&admin.token)).await, 404, "not_found");
    assert_eq!(app.get(&admin.store("/audiences/news"), Some(&admin.token)).await.1["subscriber_count"], 5);
    expect_error(
        &app.post(&add, Some(&admin.token), json!({"profile_id": uuid::Uuid::now_v7()})).await,
        404,
        "not_found",
    );
}

async fn merge_keeps_the_stronger_subscription(app: &TestApp) {
    let admin = app.shop_admin("mergesubs").await;
    for key in ["a1", "a2", "a3"] {
        audience(app, &admin, json!({"key": key})).await;
    }
    let (_, target) = app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "t@example.com"})).await;
    let (_, source) = app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "s@example.com"})).await;
    let (t, s) = (target["id"].as_str().unwrap(), source["id"].as_str().unwrap());
    for (key, pid) in [("a1", t), ("a1", s), ("a2", s), ("a3", t), ("a3", s)] {
        app.post(
            &admin.store(&format!("/audiences/{key}/subscribers")),
            Some(&admin.token),
            json!({"profile_id": pid}),
        )
        .await;
    }
    let store = uuid(&json!(admin.store_id));
    // a1: target pending, source active → source's survives. a3: target active, source cancelled → target's.
    app.exec("UPDATE subscriptions SET status = 'pending' WHERE store_id = $1 AND profile_id = $2 AND audience_id = (SELECT id FROM audiences WHERE store_id = $1 AND key = 'a1')", &[Bind::U(store), Bind::U(uuid(&json!(t)))]).await;
    app.exec("UPDATE subscriptions SET status = 'cancelled' WHERE store_id = $1 AND profile_id = $2 AND audience_id = (SELECT id FROM audiences WHERE store_id = $1 AND key = 'a3')", &[Bind::U(store), Bind::U(uuid(&json!(s)))]).await;
    let (status, _) =
        app.post(&admin.store(&format!("/profiles/{t}/merge")), Some(&admin.token), json!({"source_id": s})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, export) = app.get(&admin.store(&format!("/profiles/{t}/export")), Some(&admin.token)).await;
    let subs = export["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 3, "{subs:?}");
    assert!(subs.iter().all(|x| x["profile_id"] == t && x["status"] == "active"), "{subs:?}");
    for (key, count) in [("a1", 1), ("a2", 1), ("a3", 1)] {
        assert_eq!(
            app.get(&admin.store(&format!("/audiences/{key}")), Some(&admin.token)).await.1["subscriber_count"],
            count,
            "{key}"
        );
    }
}

async fn erasure_and_counts(app: &TestApp) {
    let admin = app.shop_admin("erasesubs").await;
    audience(app, &admin, json!({"key": "news"})).await;
    let (_, p) = app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "bye@example.com"})).await;
    let (_, keep) = app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "stay@example.com"})).await;
    for x in [&p, &keep] {
        app.post(&admin.store("/audiences/news/subscribers"), Some(&admin.token), json!({"profile_id": x["id"]})).await;
    }
    assert_eq!(app.get(&admin.store("/audiences/news"), Some(&admin.token)).await.1["subscriber_count"], 2);
    app.delete(&admin.store(&format!("/profiles/{}", p["id"].as_str().unwrap())), Some(&admin.token)).await;
    assert_eq!(
        app.get(&admin.store("/audiences/news"), Some(&admin.token)).await.1["subscriber_count"],
        1,
        "erasure updates the count"
    );
    let store = uuid(&json!(admin.store_id));
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM subscriptions WHERE store_id = $1 AND profile_id = $2",
            &[Bind::U(store), Bind::U(uuid(&p["id"]))]
        )
        .await,
        0
    );
}

async fn template_deletion_makes_audiences_single_opt_in(app: &TestApp) {
    let admin = app.shop_admin("tpldel").await;
    let (status, tpl) = app
        .post(
            &admin.store("/email-templates"),
            Some(&admin.token),
            json!({"key": "confirm", "subject": "Please confirm {{ audience_name }}", "body": "<a href=\"{{ confirm_url }}\">Yes</a>"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{tpl}");
    audience(app, &admin, json!({"key": "news", "confirm_template_id": tpl["id"]})).await;
    let t = shopper(app, &admin, "del@example.com").await;
    let path = admin.store("/audiences/news/subscribe");
    let (_, pending) = app
        .post(&path, Some(tok(&t)), json!({"profile_id": t["profile_id"], "confirm_url": "https://s.example/c"}))
        .await;
    assert_eq!(pending["subscription"]["status"], "pending");
    let mut subject = None;
    for _ in 0..100 {
        subject = app.mails_to("del@example.com").into_iter().find_map(|m| {
            m.lines().find(|l| l.starts_with("Subject: Please confirm")).map(|l| l.trim_end().to_string())
        });
        if subject.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(subject.as_deref(), Some("Subject: Please confirm news"), "rendered from the store's template");

    assert_eq!(app.delete(&admin.store("/email-templates/confirm"), Some(&admin.token)).await.0, StatusCode::OK);
    let (_, news) = app.get(&admin.store("/audiences/news"), Some(&admin.token)).await;
    assert!(news["confirm_template_id"].is_null(), "{news}");
    let other = shopper(app, &admin, "single@example.com").await;
    let (status, sub) = app.post(&path, Some(tok(&other)), json!({"profile_id": other["profile_id"]})).await;
    assert_eq!((status, sub["subscription"]["status"].as_str()), (StatusCode::CREATED, Some("active")));
}

/// The path part of a link the server mailed (built on PUBLIC_BASE_URL; the test server listens
/// elsewhere).
fn path_of(link: &str) -> String {
    link[link.find("/v1/").expect("a /v1 link")..].to_string()
}

/// Posts a page's form as a browser does: a form body, asking for HTML.
async fn submit(app: &TestApp, path: &str, token: &str) -> (StatusCode, String) {
    let body: String = form_urlencoded::Serializer::new(String::new()).append_pair("token", token).finish();
    let r = app
        .req(Method::POST, path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html,application/xhtml+xml")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    (r.status(), r.text().await.unwrap())
}

async fn hosted_pages_confirm_and_unsubscribe_with_a_form(app: &TestApp) {
    let admin = app.admin("pages").await;
    let tpl = template(app, &admin).await;
    audience(app, &admin, json!({"key": "news", "name": "Weekly News", "confirm_template_id": tpl})).await;
    let t = shopper(app, &admin, "page@example.com").await;
    // No confirm_url (and no allowed origins): the mail links the hosted confirm page.
    let (status, sub) = app
        .post(&admin.store("/audiences/news/subscribe"), Some(tok(&t)), json!({"profile_id": t["profile_id"]}))
        .await;
    assert_eq!((status, &sub["subscription"]["status"]), (StatusCode::CREATED, &json!("pending")), "{sub}");
    let mut mail = None;
    for _ in 0..100 {
        mail = app.mails_to("page@example.com").into_iter().find(|m| m.contains("List-Unsubscribe"));
        if mail.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mail = mail.expect("confirmation mail").replace("=\r\n", "").replace("=3D", "=");
    let hosted = format!("{}/v1/stores/{}/audiences/confirm?token=", app.state.config.public_base_url, admin.store_id);
    let start = mail.find(&hosted).expect("the hosted confirm link") + hosted.len();
    let token: String =
        mail[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();

    let confirm_path = admin.store("/audiences/confirm");
    let page = app.req(Method::GET, &format!("{confirm_path}?token={token}")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("form-action 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("Weekly News") && html.contains(&format!("value=\"{token}\"")), "{html}");
    assert_eq!(
        app.get(&admin.store("/audiences/news/access"), Some(tok(&t))).await.1["reason"],
        "pending",
        "a GET changes nothing"
    );
    let (status, done) = submit(app, &confirm_path, &token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(done.contains("Subscription confirmed") && done.contains("Weekly News"), "{done}");
    assert_eq!(app.get(&admin.store("/audiences/news/access"), Some(tok(&t))).await.1["has_access"], true);
    let (status, used) = submit(app, &confirm_path, &token).await;
    assert!(status == StatusCode::NOT_FOUND && used.contains("does not work"), "{used}");

    let unsubscribe = path_of(&unsubscribe_link(&mail));
    let page = app.req(Method::GET, &unsubscribe).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Stop receiving"));
    assert_eq!(
        app.get(&admin.store("/audiences/news/access"), Some(tok(&t))).await.1["has_access"],
        true,
        "a GET changes nothing"
    );
    let token = unsubscribe.split("token=").nth(1).unwrap().to_string();
    let path = admin.store("/audiences/unsubscribe");
    for _ in 0..2 {
        let (status, done) = submit(app, &path, &token).await;
        assert!(status == StatusCode::OK && done.contains("You are unsubscribed"), "{done}");
    }
    assert_eq!(app.get(&admin.store("/audiences/news/access"), Some(tok(&t))).await.1["reason"], "cancelled");
    let bad = app.req(Method::GET, &format!("{confirm_path}?token=nope")).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::NOT_FOUND);
}
