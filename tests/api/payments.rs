//! Paid audiences (§6, §8) against a fake Stripe on 127.0.0.1: Checkout, signed idempotent webhooks,
//! the membership lifecycle, out-of-order events and provider failures — both backends.

mod events;
mod fake_stripe;
mod support;

use crate::common::{TestApp, expect_error};
use events::{Paid, checkout_completed, deleted, event, updated};
use fake_stripe::{Behaviour, FakeStripe};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{access, admin_view, club, pending_membership, stripe_app, subscribe};

backend_tests!(
    membership_story,
    one_time_price_pays_once,
    webhook_refuses_unsigned_stale_and_non_json,
    replayed_events_apply_once,
    subscription_update_before_checkout_completed,
    payment_failure_keeps_access_until_period_end,
    unknown_events_and_subscriptions_are_acknowledged,
    stripe_failure_or_timeout_writes_nothing,
    invalid_paid_subscribes_write_nothing,
);

async fn membership_story(app: &TestApp) {
    let fake = FakeStripe::start().await;
    let owned = stripe_app(app, &fake, &[]).await;
    let app = &owned;
    let (admin, audience, shopper) = club(app).await;

    let (status, body) = subscribe(app, &admin, &shopper, json!({"priceId": "price_m"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sub = &body["subscription"];
    assert_eq!(sub["status"], "pending");
    assert_eq!(sub["source"], "signup");
    assert_eq!(sub["price_id"], "monthly", "stored as the audience's own price id");
    let session_id = sub["payment"]["provider"]["checkout_session_id"].as_str().unwrap().to_string();
    assert!(session_id.starts_with("cs_test_"), "{sub}");
    assert_eq!(sub["payment"]["provider"]["price_id"], "price_m");
    assert_eq!(
        body["checkout_url"],
        format!("https://checkout.stripe.com/c/pay/{session_id}#fidkdWxOYHwnPyd1blpxYHZxWjA0")
    );

    let sent = &fake.requests()[0];
    let sub_id = sub["id"].as_str().unwrap();
    assert_eq!(sent.authorization.as_deref(), Some("Bearer sk_test_x"));
    for (key, want) in [
        ("mode", "subscription"),
        ("line_items[0][price]", "price_m"),
        ("line_items[0][quantity]", "1"),
        ("client_reference_id", sub_id),
        ("customer_email", "member@example.com"),
        ("success_url", "https://shop.example/welcome"),
        ("cancel_url", "https://shop.example/club"),
        ("metadata[subscription_id]", sub_id),
        ("metadata[store_id]", admin.store_id.as_str()),
        ("metadata[audience_id]", audience["id"].as_str().unwrap()),
        ("metadata[profile_id]", shopper["profile_id"].as_str().unwrap()),
        ("subscription_data[metadata][subscription_id]", sub_id),
    ] {
        assert_eq!(sent.field(key), Some(want), "{key} in {:?}", sent.form);
    }
    let before = access(app, &admin, &shopper).await;
    assert_eq!((before["has_access"].clone(), before["reason"].clone()), (json!(false), json!("pending")));

    let paid = Paid::from_subscription(sub, &audience);
    let got = paid.send(app, &event("evt_1", "checkout.session.completed", checkout_completed(&paid))).await;
    assert_eq!(got, (StatusCode::OK, json!({"received": true, "duplicate": false})));
    let now = access(app, &admin, &shopper).await;
    assert_eq!(now["has_access"], true, "{now}");
    let view = admin_view(app, &admin, &shopper).await;
    assert_eq!(view["status"], "active");
    assert!(view["start_date"].is_i64() && view["confirmed_at"].is_i64(), "{view}");
    assert_eq!(
        view["payment"]["provider"],
        json!({"type": "stripe", "customer_id": "cus_T1", "subscription_id": "sub_T1", "price_id": "price_m",
               "checkout_session_id": session_id})
    );
    assert_eq!(app.get(&admin.store("/audiences/club"), Some(&admin.token)).await.1["subscriber_count"], 1);
    // Subscribing again while active: the membership, no new checkout.
    let again = subscribe(app, &admin, &shopper, json!({"price_id": "monthly"})).await;
    assert_eq!(again.0, StatusCode::OK, "{}", again.1);
    assert!(again.1.get("checkout_url").is_none() && fake.requests().len() == 1, "{}", again.1);

    let period_end = storecrm::now() + 20 * 86_400;
    let cancel = updated(&paid, "active", true, period_end);
    assert_eq!(paid.send(app, &event("evt_2", "customer.subscription.updated", cancel)).await.0, StatusCode::OK);
    let scheduled = access(app, &admin, &shopper).await;
    assert_eq!(scheduled["has_access"], true, "access lasts until the period end: {scheduled}");
    assert_eq!(scheduled["subscription"]["status"], "cancellation_scheduled");
    assert_eq!(scheduled["subscription"]["end_date"], period_end);

    let resume = updated(&paid, "active", false, period_end);
    paid.send(app, &event("evt_3", "customer.subscription.updated", resume)).await;
    let resumed = admin_view(app, &admin, &shopper).await;
    assert_eq!((resumed["status"].clone(), resumed["end_date"].clone()), (json!("active"), Value::Null));

    assert_eq!(
        paid.send(app, &event("evt_4", "customer.subscription.deleted", deleted(&paid))).await.0,
        StatusCode::OK
    );
    let after = access(app, &admin, &shopper).await;
    assert_eq!((after["has_access"].clone(), after["reason"].clone()), (json!(false), json!("cancelled")));
    assert!(after["subscription"]["cancelled_at"].is_i64(), "{after}");
    assert_eq!(app.get(&admin.store("/audiences/club"), Some(&admin.token)).await.1["subscriber_count"], 0);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM payment_events", &[]).await, 4);
    // Each transition is an event, in the transaction that made it (§9.1).
    let (_, feed) = app.get(&admin.store("/events?types=[\"subscription.created\",\"subscription.activated\",\"subscription.cancellation_scheduled\",\"subscription.cancelled\"]"), Some(&admin.token)).await;
    let kinds: Vec<&str> = feed["items"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "subscription.created",
            "subscription.activated",
            "subscription.cancellation_scheduled",
            "subscription.activated",
            "subscription.cancelled"
        ],
        "{feed}"
    );
    assert!(feed["items"].as_array().unwrap().iter().all(|e| e["data"]["object"]["id"] == sub["id"]));
    // And each is a record of the consent ledger: the checkout, then Stripe's word for the rest.
    let pid = shopper["profile_id"].as_str().unwrap();
    let (_, ledger) = app.get(&admin.store(&format!("/profiles/{pid}/consents")), Some(&admin.token)).await;
    let records: Vec<(&str, &str)> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["action"].as_str().unwrap(), r["status_after"].as_str().unwrap()))
        .collect();
    assert_eq!(
        records,
        [
            ("checkout", "pending"),
            ("payment", "active"),
            ("payment", "cancellation_scheduled"),
            ("payment", "active"),
            ("payment", "cancelled")
        ],
        "{ledger}"
    );
    assert_eq!(ledger["items"][1]["source"], "stripe checkout.session.completed");
    owned.stop().await;
}

async fn one_time_price_pays_once(app: &TestApp) {
    let fake = FakeStripe::start().await;
    let owned = stripe_app(app, &fake, &[]).await;
    let app = &owned;
    let (admin, audience, shopper) = club(app).await;
    let (status, body) = subscribe(app, &admin, &shopper, json!({"price_id": "once"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sent = &fake.requests()[0];
    assert_eq!(sent.field("mode"), Some("payment"));
    assert_eq!(sent.field("line_items[0][price]"), Some("price_once"));
    assert!(!sent.form.iter().any(|(k, _)| k.starts_with("subscription_data")), "{:?}", sent.form);

    let mut paid = Paid::from_subscription(&body["subscription"], &audience);
    paid.stripe_subscription = None;
    paid.send(app, &event("evt_once", "checkout.session.completed", checkout_completed(&paid))).await;
    let view = admin_view(app, &admin, &shopper).await;
    assert_eq!((view["status"].clone(), view["end_date"].clone()), (json!("active"), Value::Null));
    assert_eq!(view["payment"]["provider"]["customer_id"], "cus_T1");
    assert!(view["payment"]["provider"].get("subscription_id").is_none(), "{view}");
    owned.stop().await;
}

async fn webhook_refuses_unsigned_stale_and_non_json(app: &TestApp) {
    let unsigned = events::sign("{}", events::SECRET, storecrm::now());
    expect_error(&events::post_raw(app, Some(&unsigned), "{}".into()).await, 503, "payments_not_configured");
    let fake = FakeStripe::start().await;
    let owned = stripe_app(app, &fake, &[]).await;
    let app = &owned;
    let (admin, audience, shopper) = club(app).await;
    let paid = pending_membership(app, &admin, &audience, &shopper).await;
    let body = event("evt_sig", "checkout.session.completed", checkout_completed(&paid)).to_string();
    let now = storecrm::now();
    let cases = [
        (Some(events::sign(&body, "whsec_other", now)), body.clone(), "invalid_signature"),
        (Some(events::sign(&body, events::SECRET, now - 301)), body.clone(), "timestamp_out_of_tolerance"),
        (None, body.clone(), "invalid_signature"),
        (Some(format!("v1={}", "ab".repeat(32))), body.clone(), "invalid_signature"),
        (Some("garbage".into()), body.clone(), "invalid_signature"),
        (Some(events::sign(&body, events::SECRET, now)), body.replace("evt_sig", "evt_x"), "invalid_signature"),
        (Some(events::sign("not json {", events::SECRET, now)), "not json {".to_string(), "invalid_json"),
    ];
    for (signature, payload, code) in cases {
        let got = events::post_raw(app, signature.as_deref(), payload).await;
        expect_error(&got, 400, code);
    }
    assert_eq!(app.scalar("SELECT COUNT(*) FROM payment_events", &[]).await, 0);
    assert_eq!(admin_view(app, &admin, &shopper).await["status"], "pending", "nothing changed");
    let ok = events::post_raw(app, Some(&events::sign(&body, events::SECRET, now)), body.clone()).await;
    assert_eq!(ok.0, StatusCode::OK, "{}", ok.1);
    owned.stop().await;
}

async fn replayed_events_apply_once(app: &TestApp) {
    let fake = FakeStripe::start().await;
    let owned = stripe_app(app, &fake, &[]).await;
    let app = &owned;
    let (admin, audience, shopper) = club(app).await;
    let paid = pending_membership(app, &admin, &audience, &shopper).await;
    let completed = event("evt_once_only", "checkout.session.completed", checkout_completed(&paid));
    assert_eq!(paid.send(app, &completed).await.1["duplicate"], false);
    let end = storecrm::now() + 86_400;
    paid.send(app, &event("evt_cancel", "customer.subscription.updated", updated(&paid, "active", true, end))).await;
    let before = admin_view(app, &admin, &shopper).await;
    // Stripe redelivers the completion (a retry after a lost answer): acknowledged, not re-applied.
    let got = paid.send(app, &completed).await;
    assert_eq!(got, (StatusCode::OK, json!({"received": true, "duplicate": true})));
    assert_eq!(admin_view(app, &admin, &shopper).await, before);
    assert_eq!(before["status"], "cancellation_scheduled");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM payment_events", &[]).await, 2);
    owned.stop().await;
}

async fn subscription_update_before_checkout_completed(app: &TestApp) {
    let fake = FakeStripe::start().await;
    let owned = stripe_app(app, &fake, &[]).await;
    let app = &owned;
    let (admin, audience, shopper) = club(app).await;
    let paid = pending_membership(app, &admin, &audience, &shopper).await;
    // Not yet known by its Stripe id: found through the metadata Stripe copied onto the subscription.
    let incomplete = updated(&paid, "incomplete", false, storecrm::now() + 86_400);
    paid.send(app, &event("evt_a", "customer.subscription.created", incomplete)).await;
    assert_eq!(admin_view(app, &admin, &shopper).await["status"], "pending", "no payment yet");
    let end = storecrm::now() + 30 * 86_400;
    paid.send(app, &event("evt_b", "customer.subscription.updated", updated(&paid, "active", true, end))).await;
    let early = admin_view(app, &admin, &shopper).await;
    assert_eq!((early["status"].clone(), early["end_date"].clone()), (json!("cancellation_scheduled"), json!(end)));
    assert_eq!(early["payment"]["provider"]["subscription_id"], "sub_T1");

    paid.send(app, &event("evt_c", "checkout.session.completed", checkout_completed(&paid))).await;
    let late = admin_view(app, &admin, &shopper).await;
    assert_eq!(late["status"], "cancellation_scheduled", "the later state is not overwritten: {late}");
    assert_eq!(late["end_date"], end);
    assert_eq!(late["payment"]["provider"]["customer_id"], "cus_T1");
    assert_eq!(access(app, &admin, &shopper).await["has_access"], true);
    owned.stop().await;
}

async fn payment_failure_keeps_access_until_period_end(app: &TestApp) {
    let fake = FakeStripe::start().await;
    let owned = stripe_app(app, &fake, &[]).await;
    let app = &owned;
    let (admin, audience, shopper) = club(app).await;
    let paid = pending_membership(app, &admin, &audience, &shopper).await;
    paid.send(app, &event("evt_1", "checkout.session.completed", checkout_completed(&paid))).await;
    let period_end = storecrm::now() + 7 * 86_400;
    let got =
        paid.send(app, &event("evt_2", "invoice.payment_failed", events::invoice_failed(&paid, period_end))).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let failing = access(app, &admin, &shopper).await;
    assert_eq!(failing["has_access"], true, "never an immediate loss: {failing}");
    assert_eq!(failing["subscription"]["status"], "cancellation_scheduled");
    assert_eq!(failing["subscription"]["end_date"], period_end);
    // Stripe's retry succeeds: the subscription is active again.
    paid.send(app, &event("evt_3", "customer.subscription.updated", updated(&paid, "active", false, period_end))).await;
    assert_eq!(admin_view(app, &admin, &shopper).await["status"], "active");
    // A period that has passed ends access.
    paid.send(app, &event("evt_4", "invoice.payment_failed", events::invoice_failed(&paid, storecrm::now() - 1))).await;
    let lapsed = access(app, &admin, &shopper).await;
    assert_eq!((lapsed["has_access"].clone(), lapsed["reason"].clone()), (json!(false), json!("expired")));
    // The janitor records what the clock did: the membership is `expired`, with its event.
    let report = app.state.services.sessions.sweep(storecrm::now()).await.unwrap();
    assert_eq!(report.expired, 1);
    assert_eq!(admin_view(app, &admin, &shopper).await["status"], "expired");
    let (_, feed) = app.get(&admin.store("/events?types=subscription.expired"), Some(&admin.token)).await;
    assert_eq!(feed["items"].as_array().unwrap().len(), 1, "{feed}");
    assert_eq!(feed["items"][0]["data"]["object"]["status"], "expired");
    let pid = shopper["profile_id"].as_str().unwrap();
    let (_, ledger) = app.get(&admin.store(&format!("/profiles/{pid}/consents")), Some(&admin.token)).await;
    let last = ledger["items"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!((last["action"].as_str(), last["status_after"].as_str()), (Some("expire"), Some("expired")), "{ledger}");
    assert_eq!(app.state.services.sessions.sweep(storecrm::now()).await.unwrap().expired, 0);
    owned.stop().await;
}

async fn unknown_events_and_subscriptions_are_acknowledged(app: &TestApp) {
    let spec = app.get("/openapi.json", None).await.1;
    let webhook = &spec["paths"]["/v1/payments/webhooks/stripe"]["post"];
    assert!(webhook["description"].as_str().is_some_and(|d| d.contains("invoice.payment_failed")), "{webhook}");
    let fake = FakeStripe::start().await;
    let owned = stripe_app(app, &fake, &[]).await;
    let app = &owned;
    let (admin, audience, shopper) = club(app).await;
    let paid = pending_membership(app, &admin, &audience, &shopper).await;
    let got = paid.send(app, &event("evt_refund", "charge.refunded", json!({"id": "ch_1", "object": "charge"}))).await;
    assert_eq!(got, (StatusCode::OK, json!({"received": true, "duplicate": false})));
    assert_eq!(paid.send(app, &event("evt_refund", "charge.refunded", json!({}))).await.1["duplicate"], true);
    let mut stranger = paid.clone();
    stranger.subscription_id = uuid::Uuid::now_v7().to_string();
    stranger.profile_id = uuid::Uuid::now_v7().to_string();
    stranger.stripe_subscription = Some("sub_unknown".into());
    let got = paid.send(app, &event("evt_x", "customer.subscription.deleted", deleted(&stranger))).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(admin_view(app, &admin, &shopper).await["status"], "pending");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM payment_events", &[]).await, 1, "only the ignored type is recorded");
    owned.stop().await;
}

async fn stripe_failure_or_timeout_writes_nothing(app: &TestApp) {
    let fake = FakeStripe::start().await;
    let owned = stripe_app(app, &fake, &[("STRIPE_TIMEOUT_SECS", "1")]).await;
    let app = &owned;
    let (admin, _, shopper) = club(app).await;
    fake.set(Behaviour::Fail);
    expect_error(
        &subscribe(app, &admin, &shopper, json!({"price_id": "monthly"})).await,
        502,
        "payment_provider_error",
    );
    fake.set(Behaviour::Hang);
    let started = std::time::Instant::now();
    expect_error(
        &subscribe(app, &admin, &shopper, json!({"price_id": "monthly"})).await,
        502,
        "payment_provider_error",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "timed out after {:?}", started.elapsed());
    assert_eq!(fake.requests().len(), 2);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM subscriptions", &[]).await, 0, "no pending row left behind");
    fake.set(Behaviour::Succeed);
    assert_eq!(subscribe(app, &admin, &shopper, json!({"price_id": "monthly"})).await.0, StatusCode::CREATED);
    owned.stop().await;
}

async fn invalid_paid_subscribes_write_nothing(app: &TestApp) {
    let fake = FakeStripe::start().await;
    let owned = stripe_app(app, &fake, &[]).await;
    let app = &owned;
    let (admin, _, shopper) = club(app).await;
    let cases = [
        (json!({"price_id": "yearly"}), "price_id", "unknown_price"),
        (json!({"price_id": "local"}), "price_id", "price_not_on_stripe"),
        (json!({"price_id": "monthly", "success_url": null}), "success_url", "required"),
        (json!({"price_id": "monthly", "cancel_url": null}), "cancel_url", "required"),
        (json!({"price_id": "monthly", "success_url": "/welcome"}), "success_url", "invalid_url"),
        (json!({"price_id": "monthly", "cancel_url": "ftp://shop.example/x"}), "cancel_url", "invalid_url"),
    ];
    for (extra, field, error) in cases {
        let got = subscribe(app, &admin, &shopper, extra).await;
        expect_error(&got, 422, "validation_failed");
        assert_eq!(got.1["validation_errors"], json!([{"field": field, "error": error}]));
    }
    assert!(fake.requests().is_empty(), "Stripe was not called");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM subscriptions", &[]).await, 0);
    owned.stop().await;
}
