//! Profiles (admin side): taxonomies, create/get/update, find with search, filters, sorting and
//! keyset paging, merge, GDPR erasure and export, order links — on both backends.

use crate::common::{self, Admin, Bind, TestApp, expect_error, uuid};
use reqwest::StatusCode;
use serde_json::{Value, json};
use storecrm::domain::Email;
use storecrm::domain::taxonomy::{StoredValue, TaxonomyValue};
use storecrm::repo::NewProfile;

backend_tests!(
    taxonomy_definitions_crud,
    create_is_idempotent_on_email_and_validates,
    taxonomy_entries_are_validated_and_nothing_written,
    get_and_update_profiles,
    find_by_query_status_and_sort,
    find_by_taxonomy_filters,
    find_pages_every_row_once_with_inserts_between,
    find_rejects_bad_input,
    merge_follows_the_rules,
    merge_failure_leaves_both_profiles_unchanged,
    concurrent_merges_never_half_merge,
    erasure_leaves_no_rows_behind,
    export_holds_everything,
    order_links,
    profiles_of_another_store_are_404,
    taxonomy_changes_drop_stale_values,
    bulk_insert_skips_taken_emails_and_keeps_values,
);

pub(crate) async fn taxonomy(app: &TestApp, admin: &Admin, key: &str) -> String {
    let (status, t) = app
        .post(
            &admin.store("/taxonomies"),
            Some(&admin.token),
            json!({"key": key, "schema": [
                {"key": "tags", "type": "text"},
                {"key": "tier", "type": "text", "options": ["gold", "silver", "bronze"]},
                {"key": "age", "type": "number", "min": 0, "max": 150},
                {"key": "vip", "type": "boolean"},
                {"key": "home", "type": "geo_location"}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    t["id"].as_str().unwrap().to_string()
}

pub(crate) async fn profile(app: &TestApp, admin: &Admin, email: &str, taxonomies: Value) -> Value {
    let (status, p) = app
        .post(&admin.store("/profiles"), Some(&admin.token), json!({"email": email, "taxonomies": taxonomies}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    p
}

pub(crate) fn entry(tax: &str, fields: Value) -> Value {
    json!([{"taxonomy_id": tax, "fields": fields}])
}

async fn ids(app: &TestApp, admin: &Admin, query: &str) -> Vec<String> {
    let (status, page) = app.get(&admin.store(&format!("/profiles?{query}")), Some(&admin.token)).await;
    assert_eq!(status, StatusCode::OK, "{query}: {page}");
    page["items"].as_array().unwrap().iter().map(|p| p["email"].as_str().unwrap_or("").to_string()).collect()
}

fn enc(v: &Value) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn taxonomy_definitions_crud(app: &TestApp) {
    let admin = app.admin("tax").await;
    let id = taxonomy(app, &admin, "segments").await;
    let (_, by_key) = app.get(&admin.store("/taxonomies/segments"), Some(&admin.token)).await;
    let (_, by_id) = app.get(&admin.store(&format!("/taxonomies/{id}")), Some(&admin.token)).await;
    assert_eq!(by_key, by_id);
    assert_eq!(by_id["status"], "active");
    assert_eq!(by_id["schema"][1]["options"], json!(["gold", "silver", "bronze"]));
    assert!(by_id["schema"][0].get("options").is_none());

    let dup = app.post(&admin.store("/taxonomies"), Some(&admin.token), json!({"key": "segments", "schema": []})).await;
    expect_error(&dup, 409, "key_taken");
    let bad = app
        .post(
            &admin.store("/taxonomies"),
            Some(&admin.token),
            json!({"key": "no spaces", "schema": [{"key": "x", "type": "color"}]}),
        )
        .await;
    expect_error(&bad, 422, "validation_failed");
    let bad = app
        .post(
            &admin.store("/taxonomies"),
            Some(&admin.token),
            json!({"key": "k", "schema": [{"key": "n", "type": "number", "min": 3, "max": 1}]}),
        )
        .await;
    assert_eq!(bad.1["validation_errors"], json!([{"field": "schema[0].min", "error": "greater_than_max"}]));
    let orphan = app
        .post(
            &admin.store("/taxonomies"),
            Some(&admin.token),
            json!({"key": "child", "parent_id": uuid::Uuid::now_v7(), "schema": []}),
        )
        .await;
    expect_error(&orphan, 422, "validation_failed");
    let (status, child) = app
        .post(&admin.store("/taxonomies"), Some(&admin.token), json!({"key": "child", "parentId": id, "schema": []}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(child["parent_id"], id.as_str());

    let (status, updated) = app
        .put(
            &admin.store("/taxonomies/child"),
            Some(&admin.token),
            json!({"key": "kid", "status": "archived", "parent_id": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!((updated["key"].as_str(), updated["status"].as_str()), (Some("kid"), Some("archived")));
    assert!(updated["parent_id"].is_null());
    expect_error(
        &app.put(&admin.store("/taxonomies/kid"), Some(&admin.token), json!({"key": "segments"})).await,
        409,
        "key_taken",
    );

    let (_, list) = app.get(&admin.store("/taxonomies?limit=1"), Some(&admin.token)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, rest) = app
        .get(&admin.store(&format!("/taxonomies?cursor={}", list["cursor"].as_str().unwrap())), Some(&admin.token))
        .await;
    assert_eq!(rest["items"][0]["key"], "kid");

    assert_eq!(
        app.delete(&admin.store("/taxonomies/kid"), Some(&admin.token)).await,
        (StatusCode::OK, json!({"deleted": true}))
    );
    expect_error(&app.get(&admin.store("/taxonomies/kid"), Some(&admin.token)).await, 404, "not_found");
    expect_error(&app.delete(&admin.store("/taxonomies/kid"), Some(&admin.token)).await, 404, "not_found");

    // An archived taxonomy cannot take new entries.
    app.put(&admin.store("/taxonomies/segments"), Some(&admin.token), json!({"status": "archived"})).await;
    let p = app
        .post(
            &admin.store("/profiles"),
            Some(&admin.token),
            json!({"email": "a@example.com", "taxonomies": entry(&id, json!([]))}),
        )
        .await;
    expect_error(&p, 422, "validation_failed");
}

async fn create_is_idempotent_on_email_and_validates(app: &TestApp) {
    let admin = app.admin("create").await;
    let first = profile(app, &admin, "  Ann.Lee@Example.COM ", json!([])).await;
    assert_eq!(first["email"], "Ann.Lee@example.com");
    assert_eq!(first["verified"], false);
    assert_eq!(first["status"], "active");
    assert_eq!(first["store_id"], admin.store_id.as_str());
    for empty in ["taxonomies", "promo_usage", "auth_tokens", "verification_codes"] {
        assert_eq!(first[empty], json!([]), "{empty}");
    }
    assert!(first["created_at"].as_i64().unwrap() > 1_700_000_000);
    let (status, again) =
        app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "ann.lee@example.com"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], first["id"]);

    // Concurrent creates of one email give one profile.
    let body = json!({"email": "race@example.com"});
    let path = admin.store("/profiles");
    let (a, b) = tokio::join!(
        app.post(&path, Some(&admin.token), body.clone()),
        app.post(&path, Some(&admin.token), body.clone())
    );
    assert_eq!(a.1["id"], b.1["id"]);
    let mut statuses = [a.0.as_u16(), b.0.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 201]);

    for (body, field, error) in [
        (json!({"email": "nope"}), "email", "invalid_email"),
        (json!({}), "email", "required"),
        (json!({"email": 5}), "email", "invalid_type"),
    ] {
        let got = app.post(&admin.store("/profiles"), Some(&admin.token), body).await;
        expect_error(&got, 422, "validation_failed");
        assert_eq!(got.1["validation_errors"], json!([{"field": field, "error": error}]));
    }
    let (_, all) = app.get(&admin.store("/profiles"), Some(&admin.token)).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
}

async fn taxonomy_entries_are_validated_and_nothing_written(app: &TestApp) {
    let admin = app.admin("entries").await;
    let tax = taxonomy(app, &admin, "seg").await;
    let p = profile(
        app,
        &admin,
        "e@example.com",
        entry(
            &tax,
            json!([
                {"key": "tags", "type": "text", "value": ["new", "Newsletter"]},
                {"key": "age", "type": "number", "value": 33},
                {"key": "vip", "type": "boolean", "value": true},
                {"key": "home", "type": "geo_location", "value": {"lat": 48.85, "lon": 2.35, "label": "Paris"}}
            ]),
        ),
    )
    .await;
    assert_eq!(
        p["taxonomies"],
        json!([{"taxonomy_id": tax, "fields": [
            {"key": "tags", "type": "text", "value": ["new", "Newsletter"]},
            {"key": "age", "type": "number", "value": 33.0},
            {"key": "vip", "type": "boolean", "value": true},
            {"key": "home", "type": "geo_location", "value": {"lat": 48.85, "lon": 2.35, "label": "Paris"}}
        ]}])
    );
    let cases = [
        (json!([{"taxonomy_id": uuid::Uuid::now_v7(), "fields": []}]), "taxonomies[0].taxonomy_id", "unknown_taxonomy"),
        (
            entry(&tax, json!([{"key": "shoe", "type": "text", "value": ["x"]}])),
            "taxonomies[0].fields[0].key",
            "unknown_field",
        ),
        (
            entry(&tax, json!([{"key": "age", "type": "text", "value": ["x"]}])),
            "taxonomies[0].fields[0].type",
            "type_mismatch",
        ),
        (
            entry(&tax, json!([{"key": "age", "type": "number", "value": "33"}])),
            "taxonomies[0].fields[0].value",
            "invalid_type",
        ),
        (
            entry(&tax, json!([{"key": "age", "type": "number", "value": 151}])),
            "taxonomies[0].fields[0].value",
            "out_of_range",
        ),
        (
            entry(&tax, json!([{"key": "tier", "type": "text", "value": ["platinum"]}])),
            "taxonomies[0].fields[0].value",
            "option_not_allowed",
        ),
        (
            entry(&tax, json!([{"key": "home", "type": "geo_location", "value": {"lat": 91, "lon": 0}}])),
            "taxonomies[0].fields[0].value",
            "out_of_range",
        ),
        (
            entry(&tax, json!([{"key": "vip", "type": "boolean", "value": 1}])),
            "taxonomies[0].fields[0].value",
            "invalid_type",
        ),
        (
            entry(&tax, json!([{"key": "vip", "type": "flag", "value": true}])),
            "taxonomies[0].fields[0].type",
            "invalid_value",
        ),
    ];
    for (taxonomies, field, error) in cases {
        let got = app
            .post(
                &admin.store("/profiles"),
                Some(&admin.token),
                json!({"email": "bad@example.com", "taxonomies": taxonomies}),
            )
            .await;
        expect_error(&got, 422, "validation_failed");
        assert_eq!(got.1["validation_errors"][0]["field"], field, "{}", got.1);
        assert_eq!(got.1["validation_errors"][0]["error"], error, "{}", got.1);
        let put = app
            .put(
                &admin.store(&format!("/profiles/{}", p["id"].as_str().unwrap())),
                Some(&admin.token),
                json!({"taxonomies": taxonomies, "status": "archived"}),
            )
            .await;
        expect_error(&put, 422, "validation_failed");
    }
    let (_, all) = app.get(&admin.store("/profiles"), Some(&admin.token)).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1, "no profile written by a rejected create");
    assert_eq!(all["items"][0], p, "the existing profile is untouched by rejected updates");
}

async fn get_and_update_profiles(app: &TestApp) {
    let admin = app.admin("upd").await;
    let tax = taxonomy(app, &admin, "seg").await;
    let a =
        profile(app, &admin, "a@example.com", entry(&tax, json!([{"key": "tags", "type": "text", "value": ["x"]}])))
            .await;
    profile(app, &admin, "b@example.com", json!([])).await;
    let path = admin.store(&format!("/profiles/{}", a["id"].as_str().unwrap()));
    assert_eq!(app.get(&path, Some(&admin.token)).await, (StatusCode::OK, a.clone()));

    expect_error(&app.put(&path, Some(&admin.token), json!({"email": "B@example.com"})).await, 409, "email_taken");
    expect_error(&app.put(&path, Some(&admin.token), json!({"status": "deleted"})).await, 422, "validation_failed");
    expect_error(&app.put(&path, Some(&admin.token), json!({"email": "not-email"})).await, 422, "validation_failed");
    assert_eq!(app.get(&path, Some(&admin.token)).await.1, a, "rejected updates write nothing");

    let (status, changed) = app
        .put(
            &path,
            Some(&admin.token),
            json!({"email": "new@example.com", "status": "archived",
            "taxonomies": entry(&tax, json!([{"key": "age", "type": "number", "value": 40}]))}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["email"], "new@example.com");
    assert_eq!(changed["status"], "archived");
    assert_eq!(
        changed["taxonomies"][0]["fields"],
        json!([{"key": "age", "type": "number", "value": 40.0}]),
        "entries replace"
    );
    assert!(changed["updated_at"].as_i64() >= a["updated_at"].as_i64());
    let (_, kept) = app.put(&path, Some(&admin.token), json!({})).await;
    assert_eq!(kept["email"], "new@example.com");
    assert_eq!(kept["taxonomies"], changed["taxonomies"]);
    let (_, cleared) = app.put(&path, Some(&admin.token), json!({"email": null, "taxonomies": []})).await;
    assert!(cleared["email"].is_null());
    assert_eq!(cleared["taxonomies"], json!([]));
    // The freed address can be used again.
    profile(app, &admin, "new@example.com", json!([])).await;

    expect_error(
        &app.get(&admin.store(&format!("/profiles/{}", uuid::Uuid::now_v7())), Some(&admin.token)).await,
        404,
        "not_found",
    );
    expect_error(&app.get(&admin.store("/profiles/not-a-uuid"), Some(&admin.token)).await, 404, "not_found");
    expect_error(
        &app.put(&admin.store(&format!("/profiles/{}", uuid::Uuid::now_v7())), Some(&admin.token), json!({})).await,
        404,
        "not_found",
    );
}

async fn find_by_query_status_and_sort(app: &TestApp) {
    let admin = app.admin("find").await;
    let tax = taxonomy(app, &admin, "seg").await;
    let carl = profile(
        app,
        &admin,
        "carl@Shop.example",
        entry(&tax, json!([{"key": "tags", "type": "text", "value": ["Berlin Fan"]}])),
    )
    .await;
    profile(app, &admin, "anna@other.example", json!([])).await;
    let bea = profile(app, &admin, "bea@shop.example", json!([])).await;
    app.put(
        &admin.store(&format!("/profiles/{}", bea["id"].as_str().unwrap())),
        Some(&admin.token),
        json!({"status": "archived"}),
    )
    .await;

    assert_eq!(ids(app, &admin, "query=SHOP.EX").await, ["carl@shop.example", "bea@shop.example"]);
    assert_eq!(
        ids(app, &admin, "query=berlin%20fan").await,
        ["carl@shop.example"],
        "text taxonomy values are searched"
    );
    assert_eq!(ids(app, &admin, &format!("query={}", carl["id"].as_str().unwrap())).await, ["carl@shop.example"]);
    assert_eq!(ids(app, &admin, "query=100%25").await, Vec::<String>::new(), "LIKE wildcards are literal");
    assert_eq!(ids(app, &admin, "query=_").await, Vec::<String>::new());
    assert_eq!(ids(app, &admin, "status=archived").await, ["bea@shop.example"]);
    assert_eq!(ids(app, &admin, "status=active&query=shop").await, ["carl@shop.example"]);
    assert_eq!(
        ids(app, &admin, "sort_field=email").await,
        ["anna@other.example", "bea@shop.example", "carl@shop.example"]
    );
    assert_eq!(
        ids(app, &admin, "sort_field=email&sort_direction=desc").await,
        ["carl@shop.example", "bea@shop.example", "anna@other.example"]
    );
    assert_eq!(
        ids(app, &admin, "sort_field=created_at&sort_direction=desc").await,
        ["bea@shop.example", "anna@other.example", "carl@shop.example"]
    );
    assert_eq!(
        ids(app, &admin, "sortField=createdAt").await.len(),
        3,
        "camelCase params are not required but harmless"
    );
    assert_eq!(ids(app, &admin, "sort_field=updated_at").await.len(), 3);
}

async fn find_by_taxonomy_filters(app: &TestApp) {
    let admin = app.admin("filters").await;
    let tax = taxonomy(app, &admin, "seg").await;
    let people = [
        ("p1@x.example", json!(["a", "b"]), 20, true, (52.52, 13.40)), // Berlin
        ("p2@x.example", json!(["a"]), 30, false, (52.39, 13.06)),     // Potsdam, ~27 km
        ("p3@x.example", json!(["b", "c"]), 40, true, (48.14, 11.58)), // Munich, ~500 km
        ("p4@x.example", json!(["c"]), 50, false, (53.55, 9.99)),      // Hamburg, ~255 km
    ];
    for (email, tags, age, vip, (lat, lon)) in people {
        profile(
            app,
            &admin,
            email,
            entry(
                &tax,
                json!([
                    {"key": "tags", "type": "text", "value": tags},
                    {"key": "age", "type": "number", "value": age},
                    {"key": "vip", "type": "boolean", "value": vip},
                    {"key": "home", "type": "geo_location", "value": {"lat": lat, "lon": lon}}
                ]),
            ),
        )
        .await;
    }
    let admin = &admin;
    let check = |fields: Value, want: &'static [&'static str]| {
        let path = format!("taxonomy_query={}", enc(&json!([{"taxonomy_id": tax, "query": fields}])));
        async move {
            let got = ids(app, admin, &path).await;
            let want: Vec<String> = want.iter().map(|e| format!("{e}@x.example")).collect();
            assert_eq!(got, want, "{path}");
        }
    };
    check(json!([{"key": "tags", "type": "text", "value": ["a", "c"]}]), &["p1", "p2", "p3", "p4"]).await;
    check(json!([{"key": "tags", "type": "text", "value": ["b"], "operation": "in"}]), &["p1", "p3"]).await;
    check(json!([{"key": "tags", "type": "text", "value": ["a", "b"], "operation": "all"}]), &["p1"]).await;
    check(json!([{"key": "age", "type": "number", "value": 30}]), &["p2"]).await;
    check(json!([{"key": "age", "type": "number", "value": 30, "operation": "ne"}]), &["p1", "p3", "p4"]).await;
    check(json!([{"key": "age", "type": "number", "value": 30, "operation": "gt"}]), &["p3", "p4"]).await;
    check(json!([{"key": "age", "type": "number", "value": 30, "operation": "gte"}]), &["p2", "p3", "p4"]).await;
    check(json!([{"key": "age", "type": "number", "value": 30, "operation": "lt"}]), &["p1"]).await;
    check(json!([{"key": "age", "type": "number", "value": 30, "operation": "lte"}]), &["p1", "p2"]).await;
    check(json!([{"key": "age", "type": "number", "value": [25, 45], "operation": "between"}]), &["p2", "p3"]).await;
    check(json!([{"key": "vip", "type": "boolean", "value": true}]), &["p1", "p3"]).await;
    check(
        json!([{"key": "home", "type": "geo_location", "center": {"lat": 52.52, "lon": 13.40}, "radius": 50}]),
        &["p1", "p2"],
    )
    .await;
    check(
        json!([{"key": "home", "type": "geo_location", "center": {"lat": 52.52, "lon": 13.40}, "radius": 300}]),
        &["p1", "p2", "p4"],
    )
    .await;
    check(
        json!([{"key": "home", "type": "geo_location", "center": {"lat": 52.52, "lon": 13.40}, "radius": 20}]),
        &["p1"],
    )
    .await;
    // Fields and filters are AND-ed.
    check(json!([{"key": "vip", "type": "boolean", "value": true}, {"key": "age", "type": "number", "value": 35, "operation": "gt"}]), &["p3"]).await;
    let two = format!(
        "taxonomy_query={}&query=p1",
        enc(&json!([{"taxonomy_id": tax, "query": [{"key": "vip", "type": "boolean", "value": true}]},
                    {"taxonomy_id": tax, "query": [{"key": "tags", "type": "text", "value": ["b"]}]}]))
    );
    assert_eq!(ids(app, admin, &two).await, ["p1@x.example"]);
}

async fn find_pages_every_row_once_with_inserts_between(app: &TestApp) {
    let admin = app.admin("pages").await;
    for i in 0..23 {
        profile(app, &admin, &format!("u{i:02}@page.example"), json!([])).await;
    }
    for (sort, dir) in
        [("created_at", "asc"), ("created_at", "desc"), ("email", "asc"), ("email", "desc"), ("updated_at", "asc")]
    {
        let mut seen: Vec<String> = vec![];
        let mut cursor: Option<String> = None;
        let mut inserted = 0;
        loop {
            let mut path = format!("/profiles?limit=5&sort_field={sort}&sort_direction={dir}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = app.get(&admin.store(&path), Some(&admin.token)).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            seen.extend(page["items"].as_array().unwrap().iter().map(|p| p["email"].as_str().unwrap().to_string()));
            // Rows inserted between pages: they sort after the current position for ascending
            // created_at, and are either seen once or not at all otherwise — never twice.
            profile(app, &admin, &format!("late-{sort}-{dir}-{inserted}@page.example"), json!([])).await;
            inserted += 1;
            match page["cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "{sort} {dir}: a row was served twice: {seen:?}");
        for i in 0..23 {
            assert!(seen.contains(&format!("u{i:02}@page.example")), "{sort} {dir}: u{i:02} missing");
        }
        if sort == "email" {
            let mut sorted = seen.clone();
            sorted.sort();
            if dir == "desc" {
                sorted.reverse();
            }
            assert_eq!(seen, sorted, "email order");
        }
        if (sort, dir) == ("created_at", "asc") {
            let late = seen.iter().filter(|e| e.starts_with("late-created_at-asc")).count();
            assert_eq!(late, inserted - 1, "ascending creation order reaches rows inserted meanwhile");
        }
    }
}

async fn find_rejects_bad_input(app: &TestApp) {
    let admin = app.admin("badfind").await;
    let other = app.admin("otherfind").await;
    let tax = taxonomy(app, &admin, "seg").await;
    for i in 0..3 {
        profile(app, &admin, &format!("f{i}@x.example"), json!([])).await;
    }
    let bad = [
        "taxonomy_query=%5B%7B".to_string(),
        format!(
            "taxonomy_query={}",
            enc(
                &json!([{"taxonomy_id": tax, "query": [{"key": "age", "type": "number", "operation": "like", "value": 1}]}])
            )
        ),
        format!(
            "taxonomy_query={}",
            enc(&json!([{"taxonomy_id": tax, "query": [{"key": "nope", "type": "number", "value": 1}]}]))
        ),
        format!("taxonomy_query={}", enc(&json!([{"taxonomy_id": uuid::Uuid::now_v7(), "query": []}]))),
        format!(
            "taxonomy_query={}",
            enc(&json!([{"taxonomy_id": tax, "query": [{"key": "home", "type": "geo_location", "radius": 5}]}]))
        ),
        "sort_field=password".into(),
        "sort_direction=sideways".into(),
        "status=deleted".into(),
        "limit=0".into(),
        "limit=201".into(),
        "cursor=abc".into(),
    ];
    for q in bad {
        expect_error(
            &app.get(&admin.store(&format!("/profiles?{q}")), Some(&admin.token)).await,
            422,
            "validation_failed",
        );
    }
    let (_, page) = app.get(&admin.store("/profiles?limit=1"), Some(&admin.token)).await;
    let cursor = page["cursor"].as_str().unwrap();
    for other_query in ["sort_field=email", "query=f", "status=active", "sort_direction=desc"] {
        let got = app
            .get(&admin.store(&format!("/profiles?limit=1&{other_query}&cursor={cursor}")), Some(&admin.token))
            .await;
        expect_error(&got, 422, "validation_failed");
        assert_eq!(got.1["validation_errors"][0]["field"], "cursor");
    }
    let got = app.get(&other.store(&format!("/profiles?limit=1&cursor={cursor}")), Some(&other.token)).await;
    expect_error(&got, 422, "validation_failed");
    assert_eq!(
        app.get(&admin.store(&format!("/profiles?limit=1&cursor={cursor}")), Some(&admin.token)).await.0,
        StatusCode::OK
    );
}

async fn merge_follows_the_rules(app: &TestApp) {
    let admin = app.admin("merge").await;
    let tax = taxonomy(app, &admin, "seg").await;
    let target = profile(
        app,
        &admin,
        "target@x.example",
        entry(
            &tax,
            json!([
                {"key": "tags", "type": "text", "value": ["t"]},
                {"key": "age", "type": "number", "value": 30}
            ]),
        ),
    )
    .await;
    let source = profile(
        app,
        &admin,
        "source@x.example",
        entry(
            &tax,
            json!([
                {"key": "tags", "type": "text", "value": ["s"]},
                {"key": "vip", "type": "boolean", "value": true}
            ]),
        ),
    )
    .await;
    let (t, s) = (uuid(&target["id"]), uuid(&source["id"]));
    let store = uuid(&json!(admin.store_id));
    for (pid, code, uses) in [(t, "SPRING", 1), (s, "SPRING", 2), (s, "WELCOME", 1)] {
        app.exec(
            "INSERT INTO profile_promo_usage (store_id, profile_id, promo_code_id, uses) VALUES ($1, $2, $3, $4)",
            &[Bind::U(store), Bind::U(pid), Bind::S(code.into()), Bind::I(uses)],
        )
        .await;
    }
    app.exec("UPDATE profiles SET verified = TRUE WHERE store_id = $1 AND id = $2", &[Bind::U(store), Bind::U(s)])
        .await;
    app.post(&admin.store(&format!("/profiles/{s}/orders")), Some(&admin.token), json!({"order_id": "ord-1"})).await;
    app.post(&admin.store(&format!("/profiles/{t}/orders")), Some(&admin.token), json!({"order_id": "ord-2"})).await;
    let session = uuid::Uuid::now_v7();
    app.exec("INSERT INTO profile_sessions (store_id, id, profile_id, verified, created_at, last_used_at, refresh_expires_at) VALUES ($1, $2, $3, FALSE, 1, 1, 9999999999)",
        &[Bind::U(store), Bind::U(session), Bind::U(s)]).await;

    let merge = admin.store(&format!("/profiles/{t}/merge"));
    expect_error(&app.post(&merge, Some(&admin.token), json!({"source_id": t})).await, 422, "validation_failed");
    expect_error(
        &app.post(&merge, Some(&admin.token), json!({"source_id": uuid::Uuid::now_v7()})).await,
        404,
        "not_found",
    );
    expect_error(&app.post(&merge, Some(&admin.token), json!({"source_id": "nope"})).await, 422, "validation_failed");

    let (status, merged) = app.post(&merge, Some(&admin.token), json!({"sourceId": s})).await;
    assert_eq!(status, StatusCode::OK, "{merged}");
    assert_eq!(merged["id"], target["id"]);
    assert_eq!(merged["email"], "target@x.example");
    assert_eq!(merged["verified"], true, "verified is OR-ed");
    assert_eq!(
        merged["taxonomies"],
        json!([{"taxonomy_id": tax, "fields": [
            {"key": "tags", "type": "text", "value": ["t"]},
            {"key": "age", "type": "number", "value": 30.0},
            {"key": "vip", "type": "boolean", "value": true}
        ]}]),
        "united, target wins per field"
    );
    assert_eq!(
        merged["promo_usage"],
        json!([{"promo_code_id": "SPRING", "uses": 3}, {"promo_code_id": "WELCOME", "uses": 1}])
    );
    let (_, orders) = app.get(&admin.store(&format!("/profiles/{t}/orders")), Some(&admin.token)).await;
    let order_ids: Vec<&str> =
        orders["items"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap()).collect();
    assert_eq!(order_ids, ["ord-1", "ord-2"]);
    expect_error(&app.get(&admin.store(&format!("/profiles/{s}")), Some(&admin.token)).await, 404, "not_found");
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM profile_sessions WHERE store_id = $1 AND id = $2",
            &[Bind::U(store), Bind::U(session)]
        )
        .await,
        0
    );
    // The source's email is free again.
    profile(app, &admin, "source@x.example", json!([])).await;

    // A target without email takes the source's.
    app.put(&admin.store(&format!("/profiles/{t}")), Some(&admin.token), json!({"email": null})).await;
    let donor = profile(app, &admin, "donor@x.example", json!([])).await;
    let (_, merged) = app.post(&merge, Some(&admin.token), json!({"source_id": donor["id"]})).await;
    assert_eq!(merged["email"], "donor@x.example");
}

async fn merge_failure_leaves_both_profiles_unchanged(app: &TestApp) {
    let admin = app.admin("atomic").await;
    let tax = taxonomy(app, &admin, "seg").await;
    let target =
        profile(app, &admin, "t@x.example", entry(&tax, json!([{"key": "age", "type": "number", "value": 1}]))).await;
    let source =
        profile(app, &admin, "s@x.example", entry(&tax, json!([{"key": "vip", "type": "boolean", "value": true}])))
            .await;
    app.post(
        &admin.store(&format!("/profiles/{}/orders", source["id"].as_str().unwrap())),
        Some(&admin.token),
        json!({"order_id": "o1"}),
    )
    .await;
    let source_path = admin.store(&format!("/profiles/{}", source["id"].as_str().unwrap()));
    let target_path = admin.store(&format!("/profiles/{}", target["id"].as_str().unwrap()));
    let before = (app.get(&target_path, Some(&admin.token)).await.1, app.get(&source_path, Some(&admin.token)).await.1);

    // Make the last step of the merge (deleting the source) fail, after values and orders moved.
    match app.backend {
        common::Backend::Sqlite => {
            app.exec("CREATE TRIGGER no_delete BEFORE DELETE ON profiles BEGIN SELECT RAISE(ABORT, 'boom'); END", &[])
                .await
        }
        common::Backend::Postgres => {
            app.exec(
                "CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$ LANGUAGE plpgsql",
                &[],
            )
            .await;
            app.exec("CREATE TRIGGER no_delete BEFORE DELETE ON profiles FOR EACH ROW EXECUTE FUNCTION boom()", &[])
                .await;
        }
    }
    let got = app.post(&format!("{target_path}/merge"), Some(&admin.token), json!({"source_id": source["id"]})).await;
    expect_error(&got, 500, "internal_error");
    let after = (app.get(&target_path, Some(&admin.token)).await.1, app.get(&source_path, Some(&admin.token)).await.1);
    assert_eq!(before, after, "a failed merge changes nothing");
    let (_, orders) = app.get(&format!("{source_path}/orders"), Some(&admin.token)).await;
    assert_eq!(orders["items"][0]["order_id"], "o1");
}

async fn concurrent_merges_never_half_merge(app: &TestApp) {
    let admin = app.admin("conc").await;
    let tax = taxonomy(app, &admin, "seg").await;
    for round in 0..3 {
        let a = profile(
            app,
            &admin,
            &format!("a{round}@x.example"),
            entry(&tax, json!([{"key": "age", "type": "number", "value": 1}])),
        )
        .await;
        let b = profile(
            app,
            &admin,
            &format!("b{round}@x.example"),
            entry(&tax, json!([{"key": "vip", "type": "boolean", "value": true}])),
        )
        .await;
        app.post(
            &admin.store(&format!("/profiles/{}/orders", b["id"].as_str().unwrap())),
            Some(&admin.token),
            json!({"order_id": format!("ob{round}")}),
        )
        .await;
        app.post(
            &admin.store(&format!("/profiles/{}/orders", a["id"].as_str().unwrap())),
            Some(&admin.token),
            json!({"order_id": format!("oa{round}")}),
        )
        .await;
        let (pa, pb) = (
            admin.store(&format!("/profiles/{}/merge", a["id"].as_str().unwrap())),
            admin.store(&format!("/profiles/{}/merge", b["id"].as_str().unwrap())),
        );
        let ab = app.post(&pa, Some(&admin.token), json!({"source_id": b["id"]}));
        let ba = app.post(&pb, Some(&admin.token), json!({"source_id": a["id"]}));
        let (r1, r2) = tokio::join!(ab, ba);
        let mut statuses = [r1.0.as_u16(), r2.0.as_u16()];
        statuses.sort();
        assert_eq!(statuses, [200, 404], "{} / {}", r1.1, r2.1);
        let winner = if r1.0 == StatusCode::OK { r1.1 } else { r2.1 };
        assert_eq!(winner["taxonomies"][0]["fields"].as_array().unwrap().len(), 2, "{winner}");
        let (_, orders) = app
            .get(&admin.store(&format!("/profiles/{}/orders", winner["id"].as_str().unwrap())), Some(&admin.token))
            .await;
        assert_eq!(orders["items"].as_array().unwrap().len(), 2);
        let (_, all) = app.get(&admin.store(&format!("/profiles?query={round}%40x")), Some(&admin.token)).await;
        assert_eq!(all["items"].as_array().unwrap().len(), 1, "exactly one of the pair remains");
    }
}

async fn erasure_leaves_no_rows_behind(app: &TestApp) {
    let admin = app.admin("erase").await;
    let tax = taxonomy(app, &admin, "seg").await;
    let p = profile(
        app,
        &admin,
        "Gone@X.example",
        entry(&tax, json!([{"key": "tags", "type": "text", "value": ["secret-tag"]}])),
    )
    .await;
    let keep =
        profile(app, &admin, "keep@x.example", entry(&tax, json!([{"key": "tags", "type": "text", "value": ["x"]}])))
            .await;
    let (id, store) = (uuid(&p["id"]), uuid(&json!(admin.store_id)));
    app.post(&admin.store(&format!("/profiles/{id}/orders")), Some(&admin.token), json!({"order_id": "o-gone"})).await;
    app.exec(
        "INSERT INTO profile_promo_usage (store_id, profile_id, promo_code_id, uses) VALUES ($1, $2, 'P', 1)",
        &[Bind::U(store), Bind::U(id)],
    )
    .await;
    let sid = uuid::Uuid::now_v7();
    app.exec("INSERT INTO profile_sessions (store_id, id, profile_id, verified, created_at, last_used_at, refresh_expires_at) VALUES ($1, $2, $3, TRUE, 1, 1, 9999999999)", &[Bind::U(store), Bind::U(sid), Bind::U(id)]).await;
    app.exec(
        "INSERT INTO profile_refresh_tokens (store_id, token_hash, session_id, created_at) VALUES ($1, $2, $3, 1)",
        &[Bind::U(store), Bind::B(vec![1; 32]), Bind::U(sid)],
    )
    .await;
    app.exec("INSERT INTO magic_codes (store_id, id, email_key, code_hash, created_at, expires_at) VALUES ($1, $2, 'gone@x.example', $3, 1, 2)", &[Bind::U(store), Bind::U(uuid::Uuid::now_v7()), Bind::B(vec![2; 32])]).await;

    // Mail queued to the address (not yet due, so the worker leaves it) must go with the profile.
    let queued = storecrm::mail::OutgoingMail {
        message_id: None,
        from: "shop@x.example".into(),
        to: "Gone@X.example".into(),
        reply_to: None,
        subject: "s".into(),
        html: "h".into(),
        text: "t".into(),
        headers: vec![],
    };
    app.state
        .db
        .auto()
        .insert_mail(&storecrm::repo::NewOutboxMail::new(Some(store), queued, 9_999_999_999))
        .await
        .unwrap();
    let path = admin.store(&format!("/profiles/{id}"));
    assert_eq!(app.delete(&path, Some(&admin.token)).await, (StatusCode::OK, json!({"deleted": true})));
    expect_error(&app.get(&path, Some(&admin.token)).await, 404, "not_found");
    expect_error(&app.delete(&path, Some(&admin.token)).await, 404, "not_found");
    for table in ["profile_taxonomy_values", "profile_promo_usage", "profile_orders", "profile_sessions"] {
        let n = app
            .scalar(
                &format!("SELECT COUNT(*) FROM {table} WHERE store_id = $1 AND profile_id = $2"),
                &[Bind::U(store), Bind::U(id)],
            )
            .await;
        assert_eq!(n, 0, "{table}");
    }
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM profile_refresh_tokens WHERE store_id = $1", &[Bind::U(store)]).await,
        0
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM magic_codes WHERE email_key = 'gone@x.example'", &[]).await, 0);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM mail_outbox WHERE to_key = 'gone@x.example'", &[]).await, 0);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM profiles WHERE search_text LIKE '%secret-tag%'", &[]).await, 0);
    assert_eq!(
        app.get(&admin.store(&format!("/profiles/{}", keep["id"].as_str().unwrap())), Some(&admin.token)).await.1,
        keep
    );
    // The order id can be linked again.
    let k = keep["id"].as_str().unwrap();
    assert_eq!(
        app.post(&admin.store(&format!("/profiles/{k}/orders")), Some(&admin.token), json!({"order_id": "o-gone"}))
            .await
            .0,
        StatusCode::CREATED
    );
}

async fn export_holds_everything(app: &TestApp) {
    let admin = app.admin("export").await;
    let tax = taxonomy(app, &admin, "seg").await;
    let p =
        profile(app, &admin, "ex@x.example", entry(&tax, json!([{"key": "age", "type": "number", "value": 7}]))).await;
    let id = p["id"].as_str().unwrap();
    for i in 0..205 {
        app.post(
            &admin.store(&format!("/profiles/{id}/orders")),
            Some(&admin.token),
            json!({"order_id": format!("o{i:03}"), "total": i, "currency": "eur"}),
        )
        .await;
    }
    let (status, export) = app.get(&admin.store(&format!("/profiles/{id}/export")), Some(&admin.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(export["profile"]["email"], "ex@x.example");
    assert_eq!(export["profile"]["taxonomies"], p["taxonomies"]);
    assert_eq!(export["orders"].as_array().unwrap().len(), 205, "all orders, beyond one page");
    assert_eq!(export["orders"][3]["currency"], "EUR");
    assert_eq!(export["sessions"], json!([]));
    assert!(export["exported_at"].as_i64().is_some());
    expect_error(
        &app.get(&admin.store(&format!("/profiles/{}/export", uuid::Uuid::now_v7())), Some(&admin.token)).await,
        404,
        "not_found",
    );
}

async fn order_links(app: &TestApp) {
    let admin = app.admin("orders").await;
    let a = profile(app, &admin, "oa@x.example", json!([])).await;
    let b = profile(app, &admin, "ob@x.example", json!([])).await;
    let path = admin.store(&format!("/profiles/{}/orders", a["id"].as_str().unwrap()));
    let (status, o) = app.post(&path, Some(&admin.token), json!({"orderId": "1001", "total": 4999, "currency": "usd", "status": "paid", "placed_at": 1764000000, "metadata": {"channel": "web"}})).await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    assert_eq!(o["currency"], "USD");
    assert_eq!(o["metadata"], json!({"channel": "web"}));
    assert_eq!(
        app.post(&path, Some(&admin.token), json!({"order_id": "1001"})).await.0,
        StatusCode::OK,
        "same link again"
    );
    let elsewhere = app
        .post(
            &admin.store(&format!("/profiles/{}/orders", b["id"].as_str().unwrap())),
            Some(&admin.token),
            json!({"order_id": "1001"}),
        )
        .await;
    expect_error(&elsewhere, 409, "order_linked_elsewhere");
    for bad in [
        json!({}),
        json!({"order_id": ""}),
        json!({"order_id": "x", "currency": "euro"}),
        json!({"order_id": "x", "metadata": [1]}),
        json!({"order_id": "x", "total": "12"}),
    ] {
        expect_error(&app.post(&path, Some(&admin.token), bad).await, 422, "validation_failed");
    }
    expect_error(
        &app.post(
            &admin.store(&format!("/profiles/{}/orders", uuid::Uuid::now_v7())),
            Some(&admin.token),
            json!({"order_id": "z"}),
        )
        .await,
        404,
        "not_found",
    );
    for i in 0..4 {
        app.post(&path, Some(&admin.token), json!({"order_id": format!("x{i}")})).await;
    }
    let (_, p1) = app.get(&format!("{path}?limit=3"), Some(&admin.token)).await;
    let (_, p2) =
        app.get(&format!("{path}?limit=3&cursor={}", p1["cursor"].as_str().unwrap()), Some(&admin.token)).await;
    let mut all: Vec<Value> = p1["items"].as_array().unwrap().clone();
    all.extend(p2["items"].as_array().unwrap().clone());
    assert_eq!(all.len(), 5);
    assert!(p2["cursor"].is_null());
}

async fn profiles_of_another_store_are_404(app: &TestApp) {
    let a = app.admin("sa").await;
    let b = app.admin("sb").await;
    let tax_b = taxonomy(app, &b, "seg").await;
    let pa = profile(app, &a, "same@x.example", json!([])).await;
    let pb = profile(app, &b, "same@x.example", json!([])).await;
    assert_ne!(pa["id"], pb["id"], "emails are unique per store, not globally");
    let pb_id = pb["id"].as_str().unwrap();
    for (method, path) in [
        ("GET", format!("/profiles/{pb_id}")),
        ("DELETE", format!("/profiles/{pb_id}")),
        ("GET", format!("/profiles/{pb_id}/export")),
        ("GET", format!("/profiles/{pb_id}/orders")),
        ("GET", format!("/taxonomies/{tax_b}")),
    ] {
        let got = app.call(method.parse().unwrap(), &a.store(&path), Some(&a.token), None).await;
        expect_error(&got, 404, "not_found");
    }
    let merge = app
        .post(
            &a.store(&format!("/profiles/{}/merge", pa["id"].as_str().unwrap())),
            Some(&a.token),
            json!({"source_id": pb_id}),
        )
        .await;
    expect_error(&merge, 404, "not_found");
    let with_foreign_tax = app
        .post(
            &a.store("/profiles"),
            Some(&a.token),
            json!({"email": "t@x.example", "taxonomies": entry(&tax_b, json!([]))}),
        )
        .await;
    expect_error(&with_foreign_tax, 422, "validation_failed");
    assert_eq!(app.get(&b.store(&format!("/profiles/{pb_id}")), Some(&b.token)).await.0, StatusCode::OK);
    expect_error(&app.get(&b.store("/profiles"), Some(&a.token)).await, 404, "not_found");
}

async fn taxonomy_changes_drop_stale_values(app: &TestApp) {
    let admin = app.admin("stale").await;
    let tax = taxonomy(app, &admin, "seg").await;
    let p = profile(
        app,
        &admin,
        "st@x.example",
        entry(
            &tax,
            json!([
                {"key": "tags", "type": "text", "value": ["findme"]},
                {"key": "age", "type": "number", "value": 3}
            ]),
        ),
    )
    .await;
    let path = admin.store(&format!("/profiles/{}", p["id"].as_str().unwrap()));
    assert_eq!(ids(app, &admin, "query=findme").await.len(), 1);
    // `tags` removed, `age` retyped: both values go, and search no longer finds the tag.
    let (status, _) = app
        .put(
            &admin.store("/taxonomies/seg"),
            Some(&admin.token),
            json!({"schema": [
                {"key": "age", "type": "text"}, {"key": "vip", "type": "boolean"}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.get(&path, Some(&admin.token)).await.1["taxonomies"], json!([]));
    assert_eq!(ids(app, &admin, "query=findme").await.len(), 0);

    app.put(
        &path,
        Some(&admin.token),
        json!({"taxonomies": entry(&tax, json!([{"key": "age", "type": "text", "value": ["old"]}]))}),
    )
    .await;
    app.delete(&admin.store("/taxonomies/seg"), Some(&admin.token)).await;
    assert_eq!(app.get(&path, Some(&admin.token)).await.1["taxonomies"], json!([]));
    assert_eq!(ids(app, &admin, "query=old").await.len(), 0);
}

/// `storecrm seed` writes through `bulk_insert_profiles`, whose two backends use different SQL:
/// what it stores must read back like a profile created through the API.
async fn bulk_insert_skips_taken_emails_and_keeps_values(app: &TestApp) {
    let admin = app.admin("bulk").await;
    let tax = taxonomy(app, &admin, "bulk").await;
    let fields = json!([
        {"key": "tags", "type": "text", "value": ["zebra", "Apple"]},
        {"key": "tier", "type": "text", "value": ["gold"]},
        {"key": "age", "type": "number", "value": 0.1 + 0.2},
        {"key": "vip", "type": "boolean", "value": true},
        {"key": "home", "type": "geo_location", "value": {"lat": 48.856_613_123_456_79, "lon": 2.35, "label": "Paris"}}
    ]);
    let by_api = profile(app, &admin, "taken@example.com", entry(&tax, fields.clone())).await;

    let (store_id, taxonomy_id) = (uuid(&json!(admin.store_id)), tax.parse().unwrap());
    let value = |field_key: &str, field_pos, value_pos, value| TaxonomyValue {
        taxonomy_id,
        field_key: field_key.into(),
        field_pos,
        value_pos,
        value,
    };
    let values = vec![
        value("tags", 0, 0, StoredValue::Text("zebra".into())),
        value("tags", 0, 1, StoredValue::Text("Apple".into())),
        value("tier", 1, 0, StoredValue::Text("gold".into())),
        value("age", 2, 0, StoredValue::Number(0.1 + 0.2)),
        value("vip", 3, 0, StoredValue::Boolean(true)),
        value("home", 4, 0, StoredValue::Geo { lat: 48.856_613_123_456_79, lon: 2.35, label: Some("Paris".into()) }),
    ];
    let new = |email: &str, values: Vec<TaxonomyValue>| NewProfile {
        store_id,
        id: uuid::Uuid::now_v7(),
        email: Some(Email::parse(email).unwrap()),
        verified: false,
        status: storecrm::domain::Status::Active,
        values,
        created_at: storecrm::now(),
    };
    // More rows than one SQLite chunk (500), a taken email, and one email twice in the batch.
    let mut batch: Vec<NewProfile> = (0..1100).map(|i| new(&format!("bulk{i}@example.com"), vec![])).collect();
    let full = new("Full@Example.com", values.clone());
    batch.insert(600, full.clone());
    batch.push(new("TAKEN@example.com", values.clone()));
    batch.push(new("twice@example.com", values.clone()));
    batch.push(new("Twice@example.com", values));
    let mut tx = app.state.db.begin().await.unwrap();
    assert_eq!(tx.bulk_insert_profiles(&batch).await.unwrap().len(), 1102);
    tx.commit().await.unwrap();

    let (_, stored) = app.get(&admin.store(&format!("/profiles/{}", full.id)), Some(&admin.token)).await;
    assert_eq!(stored["email"], "Full@example.com");
    assert_eq!(stored["taxonomies"], by_api["taxonomies"]);
    assert_eq!(stored["taxonomies"][0]["fields"], fields);
    let (_, taken) =
        app.get(&admin.store(&format!("/profiles/{}", by_api["id"].as_str().unwrap())), Some(&admin.token)).await;
    assert_eq!(taken, by_api, "the existing profile is left as it was");
    // search_text is written as the API writes it: email and text values, lower-cased.
    let found = ids(app, &admin, "query=apple&limit=200").await;
    assert_eq!(found.len(), 3, "the API's profile, Full and one of the twins: {found:?}");
    assert!(found.contains(&"Full@example.com".to_string()), "{found:?}");
    let found = ids(app, &admin, "query=bulk1099%40&limit=200").await;
    assert_eq!(found.len(), 1);
}
