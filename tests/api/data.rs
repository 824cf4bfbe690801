//! Data in and out (issue 16): the consent ledger, saved segments and streaming exports — both
//! backends.

use crate::audiences::{audience, shopper, template, tok};
use crate::common::{Bind, TestApp, uuid};
use reqwest::StatusCode;
use serde_json::{Value, json};

backend_tests!(
    every_subscription_change_is_in_the_consent_ledger,
    the_ledger_moves_with_a_merge_and_goes_with_an_erasure,
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
        records.iter().map(|r| (r["action"].as_str().unwrap(), r["status"].as_str().unwrap())).collect();
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
