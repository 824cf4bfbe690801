//! The paid audience every payments test starts from, and the calls the tests make on it.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::events::{self, Paid};
use super::fake_stripe::FakeStripe;
use crate::common::{Admin, TestApp};

/// A second app on the same backend with Stripe pointed at `fake`.
pub async fn stripe_app(app: &TestApp, fake: &FakeStripe, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![
        ("STRIPE_SECRET_KEY", "sk_test_x"),
        ("STRIPE_WEBHOOK_SECRET", events::SECRET),
        ("STRIPE_API_BASE", fake.url.as_str()),
    ];
    vars.extend_from_slice(extra);
    TestApp::spawn_with(app.backend, &vars).await
}

/// A paid audience `club` (monthly `price_m`, one-time `price_once`, `price_local` not on Stripe)
/// and a verified shopper with an email.
pub async fn club(app: &TestApp) -> (Admin, Value, Value) {
    let admin = app.shop_admin("club").await;
    let (status, audience) = app
        .post(&admin.store("/audiences"), Some(&admin.token), json!({"key": "club", "type": {"type": "paid", "prices": [
            {"id": "monthly", "currency": "EUR", "amount": 900, "interval": {"period": "month", "count": 1},
             "providers": [{"type": "stripe", "id": "price_m"}]},
            {"id": "once", "currency": "EUR", "amount": 4900, "providers": [{"type": "stripe", "id": "price_once"}]},
            {"id": "local", "currency": "EUR", "amount": 100}
        ]}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{audience}");
    let shopper = shopper(app, &admin, "member@example.com").await;
    (admin, audience, shopper)
}

pub async fn subscribe(app: &TestApp, admin: &Admin, shopper: &Value, extra: Value) -> (StatusCode, Value) {
    let mut body = json!({"profile_id": shopper["profile_id"], "success_url": "https://shop.example/welcome",
        "cancel_url": "https://shop.example/club"});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let token = shopper["access_token"].as_str().unwrap();
    app.post(&admin.store("/audiences/club/subscribe"), Some(token), body).await
}

pub async fn access(app: &TestApp, admin: &Admin, shopper: &Value) -> Value {
    let (status, body) =
        app.get(&admin.store("/audiences/club/access"), Some(shopper["access_token"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The subscription as an admin sees it (GDPR export of the profile).
pub async fn admin_view(app: &TestApp, admin: &Admin, shopper: &Value) -> Value {
    let path = admin.store(&format!("/profiles/{}/export", shopper["profile_id"].as_str().unwrap()));
    let (status, body) = app.get(&path, Some(&admin.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["subscriptions"][0].clone()
}

/// Subscribes with the monthly price and returns what the webhooks need.
pub async fn pending_membership(app: &TestApp, admin: &Admin, audience: &Value, shopper: &Value) -> Paid {
    let (status, body) = subscribe(app, admin, shopper, json!({"price_id": "monthly"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    Paid::from_subscription(&body["subscription"], audience)
}

/// A profile with an email and a verified session (magic code).
async fn shopper(app: &TestApp, admin: &Admin, email: &str) -> Value {
    let s = &admin.store_id;
    app.post(&format!("/v1/stores/{s}/profiles/auth/code"), None, json!({"email": email})).await;
    let code = app.code_for(email, 1).await;
    let (status, t) =
        app.post(&format!("/v1/stores/{s}/profiles/auth/verify"), None, json!({"email": email, "code": code})).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    t
}
