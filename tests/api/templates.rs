//! Email templates (§7): CRUD by id or key, validation, previews, deletion's effect on
//! audiences, and the `profile_code` override of the sign-in mail — on both backends.

use crate::common::{Admin, Bind, TestApp, expect_error, uuid};
use reqwest::StatusCode;
use serde_json::{Value, json};

backend_tests!(
    templates_crud_by_id_and_key,
    invalid_templates_are_refused_naming_the_field_and_nothing_is_written,
    preview_escapes_html_only_and_warns_about_missing_variables,
    text_part_is_derived_from_the_body,
    deleting_a_template_makes_its_audiences_single_opt_in,
    profile_code_template_replaces_the_code_mail,
    code_mail_falls_back_to_the_built_in_one,
    templates_of_another_store_are_404,
);

async fn create(app: &TestApp, admin: &Admin, body: Value) -> Value {
    let (status, t) = app.post(&admin.store("/email-templates"), Some(&admin.token), body).await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    t
}

async fn preview(app: &TestApp, admin: &Admin, id: &str, vars: Value) -> Value {
    let path = admin.store(&format!("/email-templates/{id}/preview"));
    let (status, p) = app.post(&path, Some(&admin.token), json!({ "vars": vars })).await;
    assert_eq!(status, StatusCode::OK, "{p}");
    p
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

fn subject_of(mail: &str) -> &str {
    mail.lines().find_map(|l| l.trim_end().strip_prefix("Subject: ")).expect("a Subject header")
}

async fn templates_crud_by_id_and_key(app: &TestApp) {
    let admin = app.admin("tpl").await;
    let t = create(
        app,
        &admin,
        json!({"key": "welcome", "subject": "Welcome {{ name }}", "body": "<p>Hi {{ name }}</p>",
               "text_body": "Hi {{ name }}", "from_name": "Ann", "from_email": "Ann@Shop.EXAMPLE",
               "reply_to": "help@shop.example", "preheader": "Glad you are here"}),
    )
    .await;
    let fields =
        "body created_at from_email from_name id key preheader reply_to status store_id subject text_body updated_at";
    assert_eq!(keys(&t).join(" "), fields);
    assert_eq!((t["status"].as_str(), t["store_id"].as_str()), (Some("active"), Some(admin.store_id.as_str())));
    assert_eq!(t["from_email"], "Ann@shop.example");
    assert!(t["created_at"].as_i64().unwrap() > 1_700_000_000);
    let id = t["id"].as_str().unwrap();
    let (_, by_key) = app.get(&admin.store("/email-templates/welcome"), Some(&admin.token)).await;
    let (_, by_id) = app.get(&admin.store(&format!("/email-templates/{id}")), Some(&admin.token)).await;
    assert_eq!((&by_key, &by_id), (&t, &t));

    let minimal = create(app, &admin, json!({"key": "bare", "subject": "s", "body": "b"})).await;
    for optional in ["text_body", "from_name", "from_email", "reply_to", "preheader"] {
        assert!(minimal[optional].is_null(), "{optional}");
    }
    let dup = app
        .post(
            &admin.store("/email-templates"),
            Some(&admin.token),
            json!({"key": "welcome", "subject": "s", "body": "b"}),
        )
        .await;
    expect_error(&dup, 409, "key_taken");

    // Partial update: absent fields stay, null clears.
    let path = admin.store(&format!("/email-templates/{id}"));
    let (status, u) = app
        .put(&path, Some(&admin.token), json!({"subject": "Hello {{ name }}", "text_body": null, "preheader": null}))
        .await;
    assert_eq!(status, StatusCode::OK, "{u}");
    assert_eq!((u["subject"].as_str(), u["body"].as_str()), (Some("Hello {{ name }}"), Some("<p>Hi {{ name }}</p>")));
    assert!(u["text_body"].is_null() && u["preheader"].is_null());
    assert_eq!((u["from_name"].as_str(), u["reply_to"].as_str()), (Some("Ann"), Some("help@shop.example")));
    assert!(u["updated_at"].as_i64() >= t["updated_at"].as_i64());
    let (_, same) = app.put(&path, Some(&admin.token), json!({})).await;
    assert_eq!(same["subject"], "Hello {{ name }}");
    let (_, archived) = app.put(&path, Some(&admin.token), json!({"status": "archived", "key": "hello"})).await;
    assert_eq!((archived["status"].as_str(), archived["key"].as_str()), (Some("archived"), Some("hello")));
    expect_error(&app.put(&path, Some(&admin.token), json!({"key": "bare"})).await, 409, "key_taken");

    let (_, page) = app.get(&admin.store("/email-templates?limit=1"), Some(&admin.token)).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["key"], "hello");
    let next = admin.store(&format!("/email-templates?limit=1&cursor={}", page["cursor"].as_str().unwrap()));
    let (_, rest) = app.get(&next, Some(&admin.token)).await;
    assert_eq!(rest["items"][0]["key"], "bare");
    assert!(rest["cursor"].is_null());

    assert_eq!(
        app.delete(&admin.store("/email-templates/hello"), Some(&admin.token)).await,
        (StatusCode::OK, json!({"deleted": true}))
    );
    expect_error(&app.get(&path, Some(&admin.token)).await, 404, "not_found");
    expect_error(&app.delete(&path, Some(&admin.token)).await, 404, "not_found");
    expect_error(&app.get(&admin.store("/email-templates/bare"), None).await, 401, "unauthorized");

    let (_, spec) = app.get("/openapi.json", None).await;
    for (path, method) in [
        ("/v1/stores/{storeId}/email-templates", "post"),
        ("/v1/stores/{storeId}/email-templates", "get"),
        ("/v1/stores/{storeId}/email-templates/{id}", "get"),
        ("/v1/stores/{storeId}/email-templates/{id}", "put"),
        ("/v1/stores/{storeId}/email-templates/{id}", "delete"),
        ("/v1/stores/{storeId}/email-templates/{id}/preview", "post"),
    ] {
        assert!(spec["paths"][path][method].is_object(), "{method} {path} missing from the spec");
    }
}

async fn invalid_templates_are_refused_naming_the_field_and_nothing_is_written(app: &TestApp) {
    let admin = app.admin("invalid").await;
    let ok = json!({"key": "k", "subject": "s", "body": "b"});
    let with = |field: &str, value: Value| {
        let mut body = ok.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = ok.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases = [
        (with("key", json!("no spaces")), "key", "invalid_key"),
        (with("key", json!("")), "key", "invalid_key"),
        (with("key", json!("k".repeat(65))), "key", "invalid_key"),
        (with("key", json!(5)), "key", "invalid_type"),
        (without("key"), "key", "required"),
        (with("subject", json!("  ")), "subject", "required"),
        (with("subject", json!("s".repeat(999))), "subject", "too_long"),
        (without("subject"), "subject", "required"),
        (with("body", json!("")), "body", "required"),
        (without("body"), "body", "required"),
        (with("from_email", json!("nope")), "from_email", "invalid_email"),
        (with("reply_to", json!("a@")), "reply_to", "invalid_email"),
        (with("from_name", json!("n".repeat(201))), "from_name", "too_long"),
        (with("from_name", json!("a\u{7}b")), "from_name", "invalid_characters"),
        (with("status", json!("draft")), "status", "invalid_value"),
        (with("subject", json!("Hi {{ name")), "subject", "invalid_template"),
        (with("body", json!("<p>{% if x %}</p>")), "body", "invalid_template"),
        (with("text_body", json!("{% for %}")), "text_body", "invalid_template"),
        (with("preheader", json!("{{ x | no_such_filter }}")), "preheader", "invalid_template"),
    ];
    for (body, field, error) in cases {
        let got = app.post(&admin.store("/email-templates"), Some(&admin.token), body.clone()).await;
        expect_error(&got, 422, "validation_failed");
        assert_eq!(got.1["validation_errors"], json!([{"field": field, "error": error}]), "{body}");
    }
    let got = app.post(&admin.store("/email-templates"), Some(&admin.token), with("body", json!("{{ oops }"))).await;
    assert!(got.1["message"].as_str().unwrap().contains("syntax error"), "{}", got.1);
    let got = app
        .post(
            &admin.store("/email-templates"),
            Some(&admin.token),
            json!({"key": "bad key", "subject": "", "body": "b", "from_email": "x"}),
        )
        .await;
    assert_eq!(
        got.1["validation_errors"],
        json!([{"field": "key", "error": "invalid_key"}, {"field": "subject", "error": "required"},
               {"field": "from_email", "error": "invalid_email"}])
    );
    let (_, list) = app.get(&admin.store("/email-templates"), Some(&admin.token)).await;
    assert_eq!(list["items"], json!([]), "nothing was written");

    let t = create(app, &admin, ok.clone()).await;
    let path = admin.store("/email-templates/k");
    for (body, field, error) in [
        (json!({"body": "{% endif %}"}), "body", "invalid_template"),
        (json!({"subject": ""}), "subject", "required"),
        (json!({"from_email": "nope"}), "from_email", "invalid_email"),
        (json!({"status": "gone"}), "status", "invalid_value"),
    ] {
        let got = app.put(&path, Some(&admin.token), body).await;
        expect_error(&got, 422, "validation_failed");
        assert_eq!(got.1["validation_errors"], json!([{"field": field, "error": error}]));
    }
    let (_, after) = app.get(&path, Some(&admin.token)).await;
    assert_eq!(after, t, "failed updates change nothing");
}

async fn preview_escapes_html_only_and_warns_about_missing_variables(app: &TestApp) {
    let admin = app.admin("preview").await;
    let t = create(
        app,
        &admin,
        json!({"key": "note", "subject": "Hi {{ name }}\n{{ extra }}",
               "body": "<p>Hi {{ name }}</p><p>{{ missing }}{{ order.number }}</p>", "text_body": "Hi {{ name }}!"}),
    )
    .await;
    let p = preview(app, &admin, "note", json!({"name": "<b>Ann</b> & \"Bo\""})).await;
    assert_eq!(keys(&p), ["html", "subject", "text", "warnings"]);
    assert_eq!(p["html"], "<p>Hi &lt;b&gt;Ann&lt;/b&gt; &amp; &quot;Bo&quot;</p><p></p>");
    assert_eq!(p["subject"], "Hi <b>Ann</b> & \"Bo\"", "no escaping, no line break");
    assert_eq!(p["text"], "Hi <b>Ann</b> & \"Bo\"!");
    let warned: Vec<&str> = p["warnings"].as_array().unwrap().iter().map(|w| w["variable"].as_str().unwrap()).collect();
    assert_eq!(warned, ["extra", "missing", "order.number"]);
    assert!(p["warnings"][0]["message"].as_str().unwrap().contains("extra"));

    // By id, without vars: everything is missing, nothing fails.
    let id = t["id"].as_str().unwrap();
    let (status, p) =
        app.post(&admin.store(&format!("/email-templates/{id}/preview")), Some(&admin.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["subject"], "Hi");
    assert_eq!(p["warnings"].as_array().unwrap().len(), 4, "{p}");
    let bad = app.post(&admin.store("/email-templates/note/preview"), Some(&admin.token), json!({"vars": [1]})).await;
    assert_eq!(bad.1["validation_errors"], json!([{"field": "vars", "error": "invalid_type"}]));
    let unknown = app.post(&admin.store("/email-templates/nope/preview"), Some(&admin.token), json!({})).await;
    expect_error(&unknown, 404, "not_found");

    // The variables a mail gets when it is sent are filled with samples: no warning about them.
    create(
        app,
        &admin,
        json!({"key": "welcome", "subject": "Confirm {{ audience_name }}",
               "body": "<p>Hi {{ first_name|default('friend') }}, <a href=\"{{ confirm_url }}\">confirm</a> \
                        or <a href=\"{{ unsubscribe_url }}\">leave</a> ({{ store_name }}, {{ email }})</p>"}),
    )
    .await;
    let p = preview(app, &admin, "welcome", json!({})).await;
    assert_eq!(p["warnings"], json!([]), "{p}");
    assert!(
        p["html"].as_str().unwrap().contains("Hi friend")
            && p["html"].as_str().unwrap().contains("/audiences/confirm?token=")
    );
    create(app, &admin, json!({"key": "profile_code", "subject": "{{ code }} for {{ store_name }}", "body": "<p>{{ code }}, {{ expires_minutes }} min</p>"})).await;
    let p = preview(app, &admin, "profile_code", json!({"code": "654321"})).await;
    assert_eq!((p["subject"].as_str(), &p["warnings"]), (Some("654321 for preview's shop"), &json!([])), "{p}");
}

async fn text_part_is_derived_from_the_body(app: &TestApp) {
    let admin = app.admin("text").await;
    create(
        app,
        &admin,
        json!({"key": "confirm", "subject": "Confirm", "preheader": "One click for {{ name }}",
               "body": "<html><head><style>p{}</style></head><body><h1>Hello {{ name }}</h1>\
                        <p>Please <a href=\"{{ confirm_url }}\">confirm</a> your subscription.<br>Thanks!</p>\
                        <ul><li>News</li><li>Offers &amp; more</li></ul></body></html>"}),
    )
    .await;
    let p =
        preview(app, &admin, "confirm", json!({"name": "Ann", "confirm_url": "https://shop.example/c?t=1&u=2"})).await;
    assert_eq!(
        p["text"],
        "Hello Ann\n\nPlease confirm (https://shop.example/c?t=1&u=2) your subscription.\nThanks!\n\n- News\n- Offers & more"
    );
    let html = p["html"].as_str().unwrap();
    assert!(html.contains("href=\"https://shop.example/c?t=1&amp;u=2\""), "{html}");
    let hidden = html.find("display:none").expect("a hidden preheader");
    assert!(html.find("<body>").unwrap() < hidden && hidden < html.find("<h1>").unwrap(), "{html}");
    assert!(html.contains(">One click for Ann</span>"), "{html}");
}

async fn deleting_a_template_makes_its_audiences_single_opt_in(app: &TestApp) {
    let admin = app.admin("optin").await;
    let store = uuid(&json!(admin.store_id));
    let t = create(app, &admin, json!({"key": "confirm", "subject": "s", "body": "b"})).await;
    let template = uuid(&t["id"]);
    let insert = "INSERT INTO audiences (store_id, id, key, status, kind, confirm_template_id, created_at, updated_at)
                  VALUES ($1, $2, $3, 'active', 'standard', $4, 1, 1)";
    let news = uuid::Uuid::now_v7();
    app.exec(insert, &[Bind::U(store), Bind::U(news), Bind::S("news".into()), Bind::U(template)]).await;
    let plain = "INSERT INTO audiences (store_id, id, key, status, kind, created_at, updated_at)
                 VALUES ($1, $2, 'plain', 'active', 'standard', 1, 1)";
    app.exec(plain, &[Bind::U(store), Bind::U(uuid::Uuid::now_v7())]).await;

    let deleted = app.delete(&admin.store("/email-templates/confirm"), Some(&admin.token)).await;
    assert_eq!(deleted, (StatusCode::OK, json!({"deleted": true})));
    let by_store = [Bind::U(store)];
    let referencing = "SELECT COUNT(*) FROM audiences WHERE store_id = $1 AND confirm_template_id IS NOT NULL";
    assert_eq!(app.scalar(referencing, &by_store).await, 0);
    let touched = "SELECT COUNT(*) FROM audiences WHERE store_id = $1 AND updated_at > 1";
    assert_eq!(app.scalar(touched, &by_store).await, 1, "only the audience that used the template changed");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM email_templates WHERE store_id = $1", &by_store).await, 0);
    let row = "SELECT COUNT(*) FROM audiences WHERE store_id = $1 AND id = $2 AND confirm_template_id IS NULL";
    assert_eq!(app.scalar(row, &[Bind::U(store), Bind::U(news)]).await, 1);
}

async fn request_code(app: &TestApp, admin: &Admin, email: &str) {
    let got = app.post(&admin.store("/profiles/auth/code"), None, json!({"email": email})).await;
    assert_eq!(got, (StatusCode::ACCEPTED, json!({"sent": true})));
}

async fn verify(app: &TestApp, admin: &Admin, email: &str, code: &str) {
    let (status, t) =
        app.post(&admin.store("/profiles/auth/verify"), None, json!({"email": email, "code": code})).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["is_verified"], true);
}

async fn profile_code_template_replaces_the_code_mail(app: &TestApp) {
    let admin = app.admin("override").await;
    create(
        app,
        &admin,
        json!({"key": "profile_code", "subject": "{{ code }} opens {{ store_name }}",
               "body": "<p>Code for {{ email }}:</p><p><b>{{ code }}</b></p><p>{{ expires_minutes }} min</p>",
               "from_name": "Desk, Support", "from_email": "desk@shop.example", "reply_to": "help@shop.example"}),
    )
    .await;
    let to = "buyer@example.com";
    request_code(app, &admin, to).await;
    let code = app.code_for(to, 1).await;
    let mail = &app.mails_to(to)[0];
    assert_eq!(subject_of(mail), format!("{code} opens override's shop"));
    let header = |name: &str| mail.lines().find_map(|l| l.strip_prefix(name)).map(str::trim_end).unwrap_or_default();
    // The comma makes lettre encode the name: base64 of "Desk, Support".
    assert_eq!(header("From: "), "=?utf-8?b?RGVzaywgU3VwcG9ydA==?= <desk@shop.example>");
    assert_eq!(header("Reply-To: "), "help@shop.example");
    for part in ["Code for buyer@example.com:", "10 min"] {
        assert!(mail.contains(part), "{part} in {mail}");
    }
    assert!(mail.contains(&format!("<b>{code}</b>")), "{mail}");
    verify(app, &admin, to, &code).await;

    // Archived: the built-in mail again, from the default sender.
    app.put(&admin.store("/email-templates/profile_code"), Some(&admin.token), json!({"status": "archived"})).await;
    let to = "second@example.com";
    request_code(app, &admin, to).await;
    let code = app.code_for(to, 1).await;
    let mail = &app.mails_to(to)[0];
    assert_eq!(subject_of(mail), format!("{code} is your override's shop sign-in code"));
    assert!(!mail.contains("desk@shop.example") && !mail.contains("Reply-To"), "{mail}");
    verify(app, &admin, to, &code).await;
}

async fn code_mail_falls_back_to_the_built_in_one(app: &TestApp) {
    let admin = app.admin("fallback").await;
    // Compiles, but fails when sent: `code` is a string.
    create(app, &admin, json!({"key": "profile_code", "subject": "{{ code }} {{ code + 1 }}", "body": "b"})).await;
    let to = "shopper@example.com";
    request_code(app, &admin, to).await;
    let code = app.code_for(to, 1).await;
    assert_eq!(subject_of(&app.mails_to(to)[0]), format!("{code} is your fallback's shop sign-in code"));
    verify(app, &admin, to, &code).await;
}

async fn templates_of_another_store_are_404(app: &TestApp) {
    let ann = app.admin("ann").await;
    let bob = app.admin("bob").await;
    let t = create(app, &ann, json!({"key": "mine", "subject": "s", "body": "b"})).await;
    let id = t["id"].as_str().unwrap();
    for path in [format!("/email-templates/{id}"), "/email-templates/mine".to_string()] {
        let theirs = bob.store(&path);
        expect_error(&app.get(&theirs, Some(&bob.token)).await, 404, "not_found");
        expect_error(&app.put(&theirs, Some(&bob.token), json!({"subject": "x"})).await, 404, "not_found");
        expect_error(&app.delete(&theirs, Some(&bob.token)).await, 404, "not_found");
        let preview = app.post(&bob.store(&format!("{path}/preview")), Some(&bob.token), json!({})).await;
        expect_error(&preview, 404, "not_found");
    }
    let (_, list) = app.get(&bob.store("/email-templates"), Some(&bob.token)).await;
    assert_eq!(list["items"], json!([]));
    // Bob may reuse the key in his own store.
    create(app, &bob, json!({"key": "mine", "subject": "s", "body": "b"})).await;
    let (_, still) = app.get(&ann.store("/email-templates/mine"), Some(&ann.token)).await;
    assert_eq!(still, t);
}
