//! Data in and out (issue 16): the consent ledger, saved segments and streaming exports — both
//! backends.

use crate::audiences::{audience, shopper, template, tok};
use crate::common::{Admin, Bind, TestApp, expect_error, uuid};
use crate::profiles::{entry, profile, taxonomy};
use reqwest::StatusCode;
use serde_json::{Value, json};

backend_tests!(
    every_subscription_change_is_in_the_consent_ledger,
    the_ledger_moves_with_a_merge_and_goes_with_an_erasure,
    segments_store_filters_and_answer_their_profiles,
    exports_stream_every_matching_row,
    an_export_reads_one_snapshot,
    csv_import_with_dry_run_row_errors_and_re_runs,
    imports_refuse_what_they_cannot_read,
    exports_import_back_to_the_same_data,
    the_cli_imports_with_a_summary,
);

async fn ledger(app: &TestApp, admin: &crate::common::Admin, profile: &str) -> Vec<Value> {
    let (status, page) = app.get(&admin.store(&format!("/profiles/{profile}/consents")), Some(&admin.token)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

async fn confirm_token(app: &TestApp, to: &str) -> String {
    for _ in 0..100 {
        if let Some(m) = app.mails_to(to).into_iter().find(|m| m.contains("Confirm")) {
            let unfolded = m.replace("=\r\n", "").replace("=3D", "=");
            let start = unfolded.find("/audiences/confirm?token=").expect("the confirm link")
                + "/audiences/confirm?token=".len();
            return unfolded[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no confirmation mail to {to}");
}

async fn every_subscription_change_is_in_the_consent_ledger(app: &TestApp) {
    let admin = app.shop_admin("ledger").await;
    let tpl = template(app, &admin).await;
    audience(app, &admin, json!({"key": "news", "confirm_template_id": tpl})).await;
    audience(app, &admin, json!({"key": "club"})).await;
    let t = shopper(app, &admin, "consent@example.com").await;
    let pid = t["profile_id"].as_str().unwrap().to_string();
    let wording = "Yes, send me the weekly news.";
    let sent = app
        .req(reqwest::Method::POST, &admin.store("/audiences/news/subscribe"))
        .bearer_auth(tok(&t))
        .header("user-agent", "ConsentTest/1.0")
        .json(&json!({"profile_id": pid, "consent_text": wording}))
        .send()
        .await
        .unwrap();
    let (status, sub) = crate::common::read(sent).await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    // Too long a wording is refused, and writes nothing.
    let long = "x".repeat(10_001);
    let refused = app
        .post(
            &admin.store("/audiences/club/subscribe"),
            Some(tok(&t)),
            json!({"profile_id": pid, "consent_text": long}),
        )
        .await;
    assert_eq!(refused.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.1);
    assert_eq!(refused.1["validation_errors"][0], json!({"field": "consent_text", "error": "too_long"}));

    let token = confirm_token(app, "consent@example.com").await;
    let (status, _) = app.post(&admin.store("/audiences/confirm"), None, json!({"token": token})).await;
    assert_eq!(status, StatusCode::OK);
    app.post(&admin.store("/audiences/club/subscribers"), Some(&admin.token), json!({"profile_id": pid})).await;
    app.delete(&admin.store(&format!("/audiences/club/subscribers/{pid}")), Some(&admin.token)).await;

    let records = ledger(app, &admin, &pid).await;
    let summary: Vec<(&str, &str)> =
        records.iter().map(|r| (r["action"].as_str().unwrap(), r["status_after"].as_str().unwrap())).collect();
    assert_eq!(
        summary,
        [("subscribe", "pending"), ("confirm", "active"), ("admin_add", "active"), ("admin_remove", "cancelled")],
        "{records:?}"
    );
    let (subscribe, confirm) = (&records[0], &records[1]);
    // The address is kept by its /24, the agent as sent, the wording by its hash.
    assert_eq!(subscribe["ip"], "127.0.0.0/24");
    assert_eq!(subscribe["user_agent"], "ConsentTest/1.0");
    assert_eq!(subscribe["wording_hash"], sha256_hex(wording));
    // The confirmation names the mail it answers, which the subscribe queued.
    let mail_id = subscribe["confirm_mail_id"].as_str().expect("the confirmation mail");
    assert_eq!(confirm["confirm_mail_id"], mail_id);
    assert_eq!(confirm["wording_hash"], subscribe["wording_hash"]);
    let (_, outbox) = app.get(&admin.store("/mail"), Some(&admin.token)).await;
    let mail = outbox["items"].as_array().unwrap().iter().find(|m| m["id"] == mail_id).cloned();
    assert_eq!(mail.as_ref().map(|m| m["kind"].clone()), Some(json!("confirmation")), "{outbox}");
    assert_eq!(mail.unwrap()["to"], "consent@example.com");
    // The mail as sent carries the outbox id as its Message-ID (a resend is recognisable).
    let simple = uuid(&json!(mail_id)).simple().to_string();
    let sent = app.mails_to("consent@example.com");
    assert!(sent.iter().any(|m| m.contains(&format!("Message-ID: <{simple}@"))), "{sent:?}");
    assert!(records.iter().all(|r| r["profile_id"] == pid.as_str()));

    // The GDPR export carries the ledger.
    let (_, export) = app.get(&admin.store(&format!("/profiles/{pid}/export")), Some(&admin.token)).await;
    assert_eq!(export["consents"].as_array().unwrap().len(), 4, "{export}");

    // Without the storefront's wording, the hash is the mail's text with the link taken out: the
    // same for two subscribers of one audience.
    let u = shopper(app, &admin, "other@example.com").await;
    let v = shopper(app, &admin, "third@example.com").await;
    for s in [&u, &v] {
        app.post(&admin.store("/audiences/news/subscribe"), Some(tok(s)), json!({"profile_id": s["profile_id"]})).await;
    }
    let (a, b) = (
        ledger(app, &admin, u["profile_id"].as_str().unwrap()).await,
        ledger(app, &admin, v["profile_id"].as_str().unwrap()).await,
    );
    assert!(a[0]["wording_hash"].as_str().is_some_and(|h| h.len() == 64));
    assert_ne!(a[0]["wording_hash"], b[0]["wording_hash"], "the mail names its recipient");

    // A store that keeps full addresses: the next record has it whole.
    let (status, store) = app.put(&admin.store(""), Some(&admin.token), json!({"consent_full_ip": true})).await;
    assert_eq!((status, store["consent_full_ip"].as_bool()), (StatusCode::OK, Some(true)), "{store}");
    let w = shopper(app, &admin, "fourth@example.com").await;
    app.post(&admin.store("/audiences/club/subscribe"), Some(tok(&w)), json!({"profile_id": w["profile_id"]})).await;
    assert_eq!(ledger(app, &admin, w["profile_id"].as_str().unwrap()).await[0]["ip"], "127.0.0.1");

    // Paging and another store's admin.
    let (_, first) = app.get(&admin.store(&format!("/profiles/{pid}/consents?limit=3")), Some(&admin.token)).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    let cursor = first["cursor"].as_str().unwrap();
    let (_, rest) =
        app.get(&admin.store(&format!("/profiles/{pid}/consents?limit=3&cursor={cursor}")), Some(&admin.token)).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    let other = app.shop_admin("ledger-other").await;
    let (status, _) = app.get(&other.store(&format!("/profiles/{pid}/consents")), Some(&other.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get(&admin.store(&format!("/profiles/{pid}/consents")), Some(tok(&t))).await;
    assert!(status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED, "{status}");
}

async fn the_ledger_moves_with_a_merge_and_goes_with_an_erasure(app: &TestApp) {
    let admin = app.shop_admin("ledger-merge").await;
    audience(app, &admin, json!({"key": "a"})).await;
    audience(app, &admin, json!({"key": "b"})).await;
    let (_, target) = app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "t@example.com"})).await;
    let (_, source) = app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "s@example.com"})).await;
    let (t, s) = (target["id"].as_str().unwrap(), source["id"].as_str().unwrap());
    for (key, pid) in [("a", t), ("a", s), ("b", s)] {
        let path = admin.store(&format!("/audiences/{key}/subscribers"));
        app.post(&path, Some(&admin.token), json!({"profile_id": pid})).await;
    }
    let (status, _) =
        app.post(&admin.store(&format!("/profiles/{t}/merge")), Some(&admin.token), json!({"source_id": s})).await;
    assert_eq!(status, StatusCode::OK);
    let records = ledger(app, &admin, t).await;
    let actions: Vec<&str> = records.iter().map(|r| r["action"].as_str().unwrap()).collect();
    // The target's own, the source's two, then the merge of the one subscription that moved (b).
    assert_eq!(actions, ["admin_add", "admin_add", "admin_add", "merge"], "{records:?}");
    assert!(records.iter().all(|r| r["profile_id"] == t));
    assert_eq!(records[3]["source"], format!("merged from profile {s}"));

    app.delete(&admin.store(&format!("/profiles/{t}")), Some(&admin.token)).await;
    let store = uuid(&json!(admin.store_id));
    let left = app.scalar("SELECT COUNT(*) FROM consents WHERE store_id = $1", &[Bind::U(store)]).await;
    assert_eq!(left, 0, "an erasure deletes the ledger");
}

async fn vip_profiles(app: &TestApp, admin: &Admin) -> String {
    let tax = taxonomy(app, admin, "traits").await;
    for (email, vip, age) in [("a@x.example", true, 20), ("b@x.example", false, 30), ("c@x.example", true, 40)] {
        let fields =
            json!([{"key": "vip", "type": "boolean", "value": vip}, {"key": "age", "type": "number", "value": age}]);
        profile(app, admin, email, entry(&tax, fields)).await;
    }
    tax
}

fn vip_query(tax: &str) -> String {
    json!([{"taxonomy_id": tax, "query": [{"key": "vip", "type": "boolean", "value": true}]}]).to_string()
}

fn emails(page: &Value) -> Vec<&str> {
    page["items"].as_array().unwrap().iter().map(|p| p["email"].as_str().unwrap()).collect()
}

async fn segments_store_filters_and_answer_their_profiles(app: &TestApp) {
    let admin = app.shop_admin("segments").await;
    let tax = vip_profiles(app, &admin).await;
    let (status, seg) = app
        .post(
            &admin.store("/segments"),
            Some(&admin.token),
            json!({"key": "vips", "name": "VIPs", "taxonomy_query": vip_query(&tax), "status": "active"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{seg}");
    let id = seg["id"].as_str().unwrap();
    assert_eq!(app.get(&admin.store("/segments/vips"), Some(&admin.token)).await.1, seg);
    let (_, count) = app.get(&admin.store("/segments/vips/count"), Some(&admin.token)).await;
    assert_eq!(count, json!({"segment_id": id, "count": 2}));
    let (_, page) = app.get(&admin.store(&format!("/segments/{id}/profiles?limit=1")), Some(&admin.token)).await;
    assert_eq!(emails(&page), ["a@x.example"]);
    let cursor = page["cursor"].as_str().unwrap();
    let (_, next) =
        app.get(&admin.store(&format!("/segments/vips/profiles?limit=1&cursor={cursor}")), Some(&admin.token)).await;
    assert_eq!(emails(&next), ["c@x.example"]);
    let (_, desc) =
        app.get(&admin.store("/segments/vips/profiles?sort_field=email&sort_direction=desc"), Some(&admin.token)).await;
    assert_eq!(emails(&desc), ["c@x.example", "a@x.example"]);

    // Members are computed when asked: a profile that turns VIP is in.
    let (_, b) = app.get(&admin.store("/profiles?query=b%40x.example"), Some(&admin.token)).await;
    let b_id = b["items"][0]["id"].as_str().unwrap();
    let fields = json!([{"key": "vip", "type": "boolean", "value": true}]);
    app.put(&admin.store(&format!("/profiles/{b_id}")), Some(&admin.token), json!({"taxonomies": entry(&tax, fields)}))
        .await;
    assert_eq!(app.get(&admin.store("/segments/vips/count"), Some(&admin.token)).await.1["count"], 3);

    // Changed: a text filter too; null clears it.
    let (status, changed) =
        app.put(&admin.store("/segments/vips"), Some(&admin.token), json!({"query": "c@", "name": null})).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert!(changed["name"].is_null());
    assert_eq!(app.get(&admin.store("/segments/vips/count"), Some(&admin.token)).await.1["count"], 1);
    app.put(&admin.store("/segments/vips"), Some(&admin.token), json!({"query": null})).await;
    assert_eq!(app.get(&admin.store("/segments/vips/count"), Some(&admin.token)).await.1["count"], 3);

    // Refused: a taken key, a bad key, a filter that does not parse or names no taxonomy.
    let dup = app.post(&admin.store("/segments"), Some(&admin.token), json!({"key": "vips"})).await;
    expect_error(&dup, 409, "key_taken");
    let bad = app
        .post(&admin.store("/segments"), Some(&admin.token), json!({"key": "no good", "taxonomy_query": "[{"}))
        .await;
    expect_error(&bad, 422, "validation_failed");
    let fields: Vec<&str> =
        bad.1["validation_errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"key") && fields.iter().any(|f| f.starts_with("taxonomy_query")), "{}", bad.1);
    let (_, list) = app.get(&admin.store("/segments"), Some(&admin.token)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // Another store sees nothing; a deleted segment is gone, its profiles stay.
    let other = app.shop_admin("segments-other").await;
    assert_eq!(app.get(&other.store(&format!("/segments/{id}")), Some(&other.token)).await.0, StatusCode::NOT_FOUND);
    let (status, _) = app.delete(&admin.store("/segments/vips"), Some(&admin.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.get(&admin.store("/segments/vips/count"), Some(&admin.token)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&admin.store("/profiles"), Some(&admin.token)).await.1["items"].as_array().unwrap().len(), 3);
}

async fn export(app: &TestApp, admin: &Admin, path: &str) -> (StatusCode, String, String) {
    let resp = app.req(reqwest::Method::GET, &admin.store(path)).bearer_auth(&admin.token).send().await.unwrap();
    let status = resp.status();
    let ty = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, ty, resp.text().await.unwrap())
}

fn csv_rows(body: &str) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_reader(body.as_bytes());
    let mut rows = vec![r.headers().unwrap().iter().map(String::from).collect::<Vec<_>>()];
    rows.extend(r.records().map(|rec| rec.unwrap().iter().map(String::from).collect()));
    rows
}

async fn exports_stream_every_matching_row(app: &TestApp) {
    let admin = app.shop_admin("export").await;
    let tax = vip_profiles(app, &admin).await;
    // More rows than one page (1,000), with every field type (the seeder's taxonomy).
    let store = uuid(&json!(admin.store_id));
    storecrm::services::seed::Seeder::new(app.state.db.clone()).seed(store, 2100, 500, 1).await.unwrap();

    let (status, ty, body) = export(app, &admin, "/profiles/export").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ty, "application/x-ndjson");
    let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2103);
    let ids: std::collections::HashSet<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2103, "every profile once");
    let created: Vec<i64> = lines.iter().map(|l| l["created_at"].as_i64().unwrap()).collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    let a = lines.iter().find(|l| l["email"] == "a@x.example").unwrap();
    assert_eq!(a["taxonomies"][0]["fields"][0]["key"], "vip");
    assert!(a.get("auth_tokens").is_none());

    // CSV: a header of the profile columns and one column per taxonomy field; cells as in docs.
    let (status, ty, body) = export(app, &admin, "/profiles/export?format=csv").await;
    assert_eq!((status, ty.as_str()), (StatusCode::OK, "text/csv; charset=utf-8"));
    let rows = csv_rows(&body);
    assert_eq!(rows.len(), 2104);
    let header = &rows[0];
    assert_eq!(&header[..6], ["id", "email", "status", "verified", "created_at", "updated_at"]);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("{name} in {header:?}"));
    let by_email = |email: &str| rows.iter().find(|r| r[1] == email).unwrap();
    assert_eq!(
        (by_email("a@x.example")[col("traits.vip")].as_str(), by_email("a@x.example")[col("traits.age")].as_str()),
        ("true", "20")
    );
    assert_eq!(by_email("b@x.example")[col("traits.vip")], "false");
    // A seeded row against its NDJSON line: the same values, cell by cell.
    let seeded = &lines[500];
    let row = rows.iter().find(|r| r[0] == seeded["id"].as_str().unwrap()).unwrap();
    for field in seeded["taxonomies"][0]["fields"].as_array().unwrap() {
        let ty: storecrm::domain::taxonomy::FieldType = serde_json::from_value(field["type"].clone()).unwrap();
        let column = format!("seed.{}", field["key"].as_str().unwrap());
        let cell = &row[col(&column)];
        let parsed = storecrm::domain::table::parse_cell(ty, cell).unwrap().unwrap();
        let want = match &field["value"] {
            Value::String(s) => json!([s]),
            v => v.clone(),
        };
        // serde_json's float parsing is not exact in the last digit: numbers compare within 1e-9.
        assert!(close(&parsed, &want), "{column}: {cell} vs {want}");
    }

    // Filters as find's, or a segment's; not both.
    let filtered = format!("/profiles/export?format=ndjson&taxonomy_query={}", urlencode(&vip_query(&tax)));
    let (_, _, body) = export(app, &admin, &filtered).await;
    let got: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        got.iter().map(|l| l["email"].as_str().unwrap_or("?")).collect::<Vec<_>>(),
        ["a@x.example", "c@x.example"],
        "{body}"
    );
    let (_, _, body) = export(app, &admin, "/profiles/export?query=b%40x.example").await;
    assert_eq!(body.lines().count(), 1);
    app.post(&admin.store("/segments"), Some(&admin.token), json!({"key": "vips", "taxonomy_query": vip_query(&tax)}))
        .await;
    let (_, _, body) = export(app, &admin, "/profiles/export?segment=vips&format=csv").await;
    assert_eq!(csv_rows(&body).len(), 3);
    let (status, _, body) = export(app, &admin, "/profiles/export?segment=vips&status=active").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("conflicts_with_filters"));
    let (status, _, _) = export(app, &admin, "/profiles/export?segment=nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = export(app, &admin, "/profiles/export?taxonomy_query=%5B%7B").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _, _) = export(app, &admin, "/profiles/export?format=xml").await;
    assert!(status.is_client_error(), "{status}");
    // Admins only.
    let guest = app.post(&admin.store("/profiles/initialize"), None, json!({})).await.1;
    let denied = app.get(&admin.store("/profiles/export"), Some(tok(&guest))).await;
    assert!(denied.0 == StatusCode::FORBIDDEN || denied.0 == StatusCode::UNAUTHORIZED, "{denied:?}");

    // An audience's subscribers, all or by status.
    audience(app, &admin, json!({"key": "news"})).await;
    let ours: Vec<&Value> = lines.iter().filter(|l| l["email"].as_str().unwrap().ends_with("@x.example")).collect();
    for p in &ours {
        app.post(&admin.store("/audiences/news/subscribers"), Some(&admin.token), json!({"profile_id": p["id"]})).await;
    }
    let first = ours[0]["id"].as_str().unwrap();
    app.delete(&admin.store(&format!("/audiences/news/subscribers/{first}")), Some(&admin.token)).await;
    let (status, _, body) = export(app, &admin, "/audiences/news/subscribers/export?format=csv").await;
    assert_eq!(status, StatusCode::OK);
    let rows = csv_rows(&body);
    assert_eq!(rows[0][..4], ["profile_id", "email", "subscription_id", "status"]);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows[1..].iter().all(|r| r[3] == "active" && r[4] == "admin"));
    let (_, _, body) = export(app, &admin, "/audiences/news/subscribers/export?status=pending").await;
    assert_eq!(body, "");
    let (status, _, _) = export(app, &admin, "/audiences/nope/subscribers/export").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The CLI writes the same rows (its summary on stderr).
    let (ok, out, err) = crate::foundation::cli(
        app,
        &["export", "--store", &admin.store_id, "--segment", "vips", "--format", "csv"],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out, body_of_segment_csv(app, &admin).await);
    assert!(err.contains(r#""lines":3"#), "{err}");
    let (ok, out, err) = crate::foundation::cli(
        app,
        &["export", "--store", &admin.store_id, "--audience", "news", "--status", "active"],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2);
    let (ok, _, err) =
        crate::foundation::cli(app, &["export", "--store", &admin.store_id, "--taxonomy-query", "[{"], None);
    assert!(!ok && err.contains("taxonomy_query"), "{err}");
}

async fn body_of_segment_csv(app: &TestApp, admin: &Admin) -> String {
    export(app, admin, "/profiles/export?segment=vips&format=csv").await.2
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An export reads one snapshot: rows written while it runs are not in it. Shown on the
/// transaction it uses, at the repository's level (a stream is faster than any test's timing).
async fn an_export_reads_one_snapshot(app: &TestApp) {
    let admin = app.shop_admin("snapshot").await;
    let store = uuid(&json!(admin.store_id));
    let mut snapshot = app.state.db.snapshot().await.unwrap();
    let search = storecrm::repo::ProfileSearch {
        store_id: store,
        status: None,
        text: None,
        id: None,
        filters: vec![],
        sort: storecrm::domain::SortField::CreatedAt,
        descending: false,
        after: None,
        limit: 100,
    };
    assert_eq!(snapshot.count_profiles(&search).await.unwrap(), 0);
    profile(app, &admin, "during@example.com", json!([])).await;
    assert_eq!(snapshot.count_profiles(&search).await.unwrap(), 0, "the snapshot does not see it");
    assert_eq!(app.state.db.auto().count_profiles(&search).await.unwrap(), 1);
    snapshot.commit().await.unwrap();
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-9,
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

/// Posts a file as an import job and waits for it to end.
async fn import(app: &TestApp, admin: &Admin, query: &str, content_type: &str, file: &str) -> (StatusCode, Value) {
    let resp = app
        .req(reqwest::Method::POST, &admin.store(&format!("/imports{query}")))
        .bearer_auth(&admin.token)
        .header("content-type", content_type)
        .body(file.to_string())
        .send()
        .await
        .unwrap();
    let location = resp.headers().get("location").map(|v| v.to_str().unwrap().to_string());
    let (status, job) = crate::common::read(resp).await;
    if status != StatusCode::ACCEPTED {
        return (status, job);
    }
    assert_eq!(
        location.as_deref(),
        Some(format!("/v1/stores/{}/imports/{}", admin.store_id, job["id"].as_str().unwrap()).as_str())
    );
    for _ in 0..400 {
        let (_, now) = app.get(location.as_deref().unwrap(), Some(&admin.token)).await;
        if now["status"] != "running" {
            return (status, now);
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the import did not end");
}

fn counts(job: &Value) -> [i64; 6] {
    ["rows", "created", "updated", "skipped", "failed", "subscribed"].map(|k| job[k].as_i64().unwrap())
}

async fn profile_count(app: &TestApp, admin: &Admin) -> i64 {
    let store = uuid(&json!(admin.store_id));
    app.scalar("SELECT COUNT(*) FROM profiles WHERE store_id = $1", &[Bind::U(store)]).await
}

const LIST: &str = "E-Mail,traits.vip,traits.age,traits.tags,audience:news,consent_at,consent_source,Notes
a@x.example,true,20,red|blue,yes,2024-02-29,signup form,hello
not-an-email,true,20,,,,,
b@x.example,maybe,200,,,,,
c@x.example,,,,x,,,
A@x.example,false,,,,,,
";

async fn csv_import_with_dry_run_row_errors_and_re_runs(app: &TestApp) {
    let admin = app.shop_admin("import").await;
    taxonomy(app, &admin, "traits").await;
    audience(app, &admin, json!({"key": "news"})).await;
    let mapping = urlencode(r#"{"columns": {"E-Mail": "email"}}"#);

    // A dry run: everything validated and counted, nothing written.
    let (status, job) = import(app, &admin, &format!("?dry_run=true&mapping={mapping}"), "text/csv", LIST).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!((job["status"].as_str(), job["dry_run"].as_bool()), (Some("completed"), Some(true)), "{job}");
    assert_eq!(counts(&job), [5, 2, 0, 0, 3, 2], "{job}");
    assert_eq!(job["progress_percent"], 100.0);
    let errors: Vec<(i64, Option<&str>, &str)> = job["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_i64().unwrap(), e["column"].as_str(), e["error"].as_str().unwrap()))
        .collect();
    assert_eq!(errors[0], (3, Some("E-Mail"), "invalid_email"), "{errors:?}");
    assert!(errors.contains(&(4, Some("traits.vip"), "invalid_boolean")), "{errors:?}");
    assert!(errors.iter().any(|e| e.0 == 4 && e.1 == Some("traits.age")), "{errors:?}");
    assert!(errors.contains(&(6, None, "duplicate_email")), "{errors:?}");
    assert_eq!(profile_count(app, &admin).await, 0, "a dry run writes nothing");

    // The import: two profiles, both subscribed with the file's consent evidence.
    let (_, job) = import(app, &admin, &format!("?mapping={mapping}"), "text/csv; charset=utf-8", LIST).await;
    assert_eq!((job["status"].as_str(), counts(&job)), (Some("completed"), [5, 2, 0, 0, 3, 2]), "{job}");
    assert_eq!(profile_count(app, &admin).await, 2);
    let (_, found) = app.get(&admin.store("/profiles?query=a%40x.example"), Some(&admin.token)).await;
    let a = &found["items"][0];
    let fields = &a["taxonomies"][0]["fields"];
    assert_eq!(fields[0], json!({"key": "vip", "type": "boolean", "value": true}));
    assert_eq!(fields[2]["value"], json!(["red", "blue"]));
    let records = ledger(app, &admin, a["id"].as_str().unwrap()).await;
    assert_eq!(records.len(), 1);
    assert_eq!((records[0]["action"].as_str(), records[0]["at"].as_i64()), (Some("import"), Some(1_709_164_800)));
    assert_eq!(records[0]["source"], "signup form");
    let (_, subs) = app.get(&admin.store("/audiences/news/subscribers"), Some(&admin.token)).await;
    assert!(subs["items"].as_array().unwrap().iter().all(|s| s["source"] == "import" && s["status"] == "active"));
    // All row errors, paged.
    let errors_url = job["errors_url"].as_str().unwrap();
    let (_, page) = app.get(&format!("{errors_url}?limit=2"), Some(&admin.token)).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["cursor"].as_str().unwrap();
    let (_, rest) = app.get(&format!("{errors_url}?limit=50&cursor={cursor}"), Some(&admin.token)).await;
    assert_eq!(page["items"].as_array().unwrap().len() + rest["items"].as_array().unwrap().len(), errors.len());

    // Again: nothing new; someone who unsubscribed meanwhile stays unsubscribed.
    let store = uuid(&json!(admin.store_id));
    app.exec("UPDATE subscriptions SET status = 'cancelled' WHERE store_id = $1", &[Bind::U(store)]).await;
    let (_, job) = import(app, &admin, &format!("?mapping={mapping}"), "text/csv", LIST).await;
    assert_eq!(counts(&job), [5, 0, 2, 0, 3, 0], "{job}");
    assert_eq!(profile_count(app, &admin).await, 2);
    let active = app
        .scalar("SELECT COUNT(*) FROM subscriptions WHERE store_id = $1 AND status = 'active'", &[Bind::U(store)])
        .await;
    assert_eq!(active, 0, "an import never re-subscribes");
    let (_, job) = import(app, &admin, &format!("?on_existing=skip&mapping={mapping}"), "text/csv", LIST).await;
    assert_eq!(counts(&job), [5, 0, 0, 2, 3, 0], "{job}");

    // An update replaces the fields the row has and keeps the others.
    let (_, job) = import(app, &admin, "", "text/csv", "email,traits.age\na@x.example,33\n").await;
    assert_eq!(counts(&job), [1, 0, 1, 0, 0, 0], "{job}");
    let (_, found) = app.get(&admin.store("/profiles?query=a%40x.example"), Some(&admin.token)).await;
    let fields: Vec<(String, Value)> = found["items"][0]["taxonomies"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["key"].as_str().unwrap().to_string(), f["value"].clone()))
        .collect();
    assert!(fields.contains(&("vip".into(), json!(true))), "{fields:?}");
    assert!(fields.contains(&("age".into(), json!(33.0))) || fields.contains(&("age".into(), json!(33))), "{fields:?}");
    assert!(fields.contains(&("tags".into(), json!(["red", "blue"]))), "{fields:?}");
    // The search text follows the rewritten values.
    let (_, by_tag) = app.get(&admin.store("/profiles?query=blue"), Some(&admin.token)).await;
    assert_eq!(emails(&by_tag), ["a@x.example"]);
    import(app, &admin, "", "text/csv", "email,traits.tags\na@x.example,green\n").await;
    let (_, by_tag) = app.get(&admin.store("/profiles?query=blue"), Some(&admin.token)).await;
    assert!(emails(&by_tag).is_empty());
    let (_, by_tag) = app.get(&admin.store("/profiles?query=green"), Some(&admin.token)).await;
    assert_eq!(emails(&by_tag), ["a@x.example"]);
}

async fn imports_refuse_what_they_cannot_read(app: &TestApp) {
    let admin = app.shop_admin("import-refused").await;
    taxonomy(app, &admin, "traits").await;
    let price = json!({"currency": "eur", "amount": 900, "interval": {"period": "month", "count": 1}});
    audience(app, &admin, json!({"key": "club", "type": {"type": "paid", "prices": [price]}})).await;
    let cases = [
        ("", "email,nope.x\n", "columns.nope.x", "unknown_taxonomy"),
        ("", "email,traits.nope\n", "columns.traits.nope", "unknown_field"),
        ("", "mail,traits.vip\n", "columns", "email_column_required"),
        ("", "email,audience:club\n", "columns.audience:club", "paid_audience"),
        ("", "email,audience:missing\n", "columns.audience:missing", "unknown_audience"),
        ("?mapping=%7B", "email\n", "mapping", "invalid_mapping"),
        (
            "?mapping=%7B%22columns%22%3A%7B%22X%22%3A%22email%22%7D%7D",
            "email\n",
            "mapping.columns.X",
            "unknown_column",
        ),
    ];
    for (query, file, field, error) in cases {
        let (status, body) = import(app, &admin, query, "text/csv", file).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{file}: {body}");
        let errors = body["validation_errors"].as_array().unwrap();
        assert!(errors.iter().any(|e| e["field"] == field && e["error"] == error), "{file}: {body}");
    }
    let (status, _) = import(app, &admin, "", "application/pdf", "email\n").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, body) = import(app, &admin, "", "text/csv", "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // NDJSON rows are checked like the API's bodies.
    let lines = "{\"email\": \"n1@x.example\"}\nnot json\n{\"email\": \"n2@x.example\", \"taxonomies\": [{\"taxonomy_id\": \"00000000-0000-7000-8000-000000000000\", \"fields\": []}]}\n\n{\"email\": \"n3@x.example\", \"subscriptions\": [{\"audience\": \"club\"}]}\n";
    let (_, job) = import(app, &admin, "", "application/x-ndjson", lines).await;
    assert_eq!(counts(&job), [4, 1, 0, 0, 3, 0], "{job}");
    let errors: Vec<(i64, &str)> = job["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_i64().unwrap(), e["error"].as_str().unwrap()))
        .collect();
    assert_eq!(errors, [(2, "invalid_json"), (3, "unknown_taxonomy"), (5, "paid_audience")]);
    // Another store's admin cannot read the job.
    let other = app.shop_admin("import-other").await;
    let (status, _) =
        app.get(&other.store(&format!("/imports/{}", job["id"].as_str().unwrap())), Some(&other.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A CSV export imports into another store (same taxonomy keys) to the same data, over more
/// than one batch; NDJSON likewise into the same store after its profiles went.
async fn exports_import_back_to_the_same_data(app: &TestApp) {
    let (from, to) = (app.shop_admin("round-from").await, app.shop_admin("round-to").await);
    let seeder = storecrm::services::seed::Seeder::new(app.state.db.clone());
    seeder.seed(uuid(&json!(from.store_id)), 1500, 500, 1).await.unwrap();
    seeder.seed(uuid(&json!(to.store_id)), 0, 500, 1).await.unwrap();
    let (_, _, csv) = export(app, &from, "/profiles/export?format=csv").await;
    let (_, job) = import(app, &to, "", "text/csv", &csv).await;
    assert_eq!(counts(&job), [1500, 1500, 0, 0, 0, 0], "{job}");
    assert!(job["errors"].as_array().unwrap().is_empty());
    let (_, _, again) = export(app, &to, "/profiles/export?format=csv").await;
    // Ids and times are the new store's, and an import never marks an address verified (a file
    // is no proof); everything else is the same, row by row (by email).
    let strip = |body: &str| {
        let mut rows: Vec<Vec<String>> = csv_rows(body)
            .into_iter()
            .map(|r| r.into_iter().enumerate().filter(|(i, _)| ![0, 3, 4, 5].contains(i)).map(|(_, c)| c).collect())
            .collect();
        rows[1..].sort();
        rows
    };
    let (x, y) = (strip(&csv), strip(&again));
    assert_eq!(x.len(), y.len());
    assert!(x == y, "CSV round trip: first difference {:?}", x.iter().zip(&y).find(|(a, b)| a != b));

    let (_, _, ndjson) = export(app, &from, "/profiles/export").await;
    let store = uuid(&json!(from.store_id));
    app.exec("DELETE FROM profiles WHERE store_id = $1", &[Bind::U(store)]).await;
    let (_, job) = import(app, &from, "", "application/x-ndjson", &ndjson).await;
    assert_eq!(counts(&job), [1500, 1500, 0, 0, 0, 0], "{job}");
    let (_, _, back) = export(app, &from, "/profiles/export").await;
    let normal = |body: &str| {
        let mut rows: Vec<Value> = body
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                for k in ["id", "created_at", "updated_at", "verified"] {
                    v.as_object_mut().unwrap().remove(k);
                }
                v
            })
            .collect();
        rows.sort_by_key(|v| v["email"].as_str().unwrap().to_string());
        rows
    };
    let (x, y) = (normal(&ndjson), normal(&back));
    assert_eq!(x.len(), y.len());
    assert!(x.iter().zip(&y).all(|(a, b)| close(a, b)), "NDJSON round trip");
}

async fn the_cli_imports_with_a_summary(app: &TestApp) {
    let admin = app.shop_admin("import-cli").await;
    taxonomy(app, &admin, "traits").await;
    audience(app, &admin, json!({"key": "news"})).await;
    let dir = std::env::temp_dir().join(format!("storecrm-cli-import-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let (file, mapping) = (dir.join("list.csv"), dir.join("mapping.json"));
    std::fs::write(&file, LIST).unwrap();
    std::fs::write(&mapping, r#"{"columns": {"E-Mail": "email"}}"#).unwrap();
    let (f, m) = (file.to_str().unwrap(), mapping.to_str().unwrap());
    let store = admin.store_id.as_str();
    let (ok, out, err) =
        crate::foundation::cli(app, &["import", "--store", store, f, "--mapping", m, "--dry-run"], None);
    assert!(ok, "{err}");
    let summary: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["imported"]["dry_run"], true);
    assert_eq!((summary["imported"]["created"].as_i64(), summary["imported"]["failed"].as_i64()), (Some(2), Some(3)));
    assert_eq!(summary["imported"]["ignored_columns"], json!(["Notes"]));
    assert_eq!(profile_count(app, &admin).await, 0);
    let (ok, out, err) = crate::foundation::cli(app, &["import", "--store", store, f, "--mapping", m], None);
    assert!(ok, "{err}");
    let summary: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (summary["imported"]["created"].as_i64(), summary["imported"]["subscribed"].as_i64()),
        (Some(2), Some(2))
    );
    assert_eq!(profile_count(app, &admin).await, 2);
    // Without the mapping the header has no email column: refused, nothing written.
    let (ok, _, err) = crate::foundation::cli(app, &["import", "--store", store, f], None);
    assert!(!ok && err.contains("email_column_required"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
