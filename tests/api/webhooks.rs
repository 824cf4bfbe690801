//! Events and outgoing webhooks (CONTRACT §9.1) against a real HTTP receiver on 127.0.0.1: every
//! event type arrives signed (Standard Webhooks), only what committed is sent, retries after a 500
//! or a receiver that is down, the delivery log and manual retry, secret rotation, two instances
//! delivering each event once, erasure scrubbing events and pending deliveries, and private
//! addresses refused without `WEBHOOKS_ALLOW_PRIVATE` — both backends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::{Admin, Backend, Bind, TestApp, expect_error};

backend_tests!(
    run = with_private;
    every_event_type_arrives_signed,
    a_profile_connect_creates_is_recorded_as_the_api_answers_it,
    failed_changes_send_nothing,
    endpoints_get_the_changes_written_after_them,
    retries_after_500_and_when_down_then_manual_retry,
    endpoint_disabled_after_failing_too_long,
    rotated_secret_signs_alongside_the_old_one,
    erasure_scrubs_events_and_pending_deliveries,
    two_instances_deliver_each_event_once,
    feed_filters_pages_and_is_admin_only,
    private_addresses_are_refused,
    janitor_sweeps_are_events_too,
    a_worker_dying_mid_delivery_loses_nothing,
    a_store_deleted_by_hand_takes_its_rows,
);

/// An app that may call the loopback receiver, retrying after 1 s.
async fn with_private(backend: Backend, case: impl AsyncFnOnce(&TestApp)) {
    let app = TestApp::spawn_with(
        backend,
        &[("WEBHOOKS_ALLOW_PRIVATE", "true"), ("WEBHOOK_RETRY_SCHEDULE_SECS", "1,1"), ("WEBHOOK_TIMEOUT_SECS", "2")],
    )
    .await;
    case(&app).await;
    app.stop().await;
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct ReceiverState {
    got: Mutex<Vec<Received>>,
    /// Statuses to answer, in order (0: never answer); 200 once they run out.
    answers: Mutex<VecDeque<u16>>,
}

/// A webhook receiver on 127.0.0.1.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    |State(s): State<Arc<ReceiverState>>, headers: HeaderMap, body: Bytes| async move {
                        let headers = headers
                            .iter()
                            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                            .collect();
                        s.got.lock().unwrap().push(Received { headers, body: body.to_vec() });
                        let status = s.answers.lock().unwrap().pop_front().unwrap_or(200);
                        if status == 0 {
                            // Never answer: the caller times out or is stopped while waiting.
                            std::future::pending::<()>().await;
                        }
                        AxStatus::from_u16(status).unwrap()
                    },
                ),
            )
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, state }
    }

    fn answer(&self, statuses: &[u16]) {
        self.state.answers.lock().unwrap().extend(statuses);
    }

    fn got(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what arrived (10 s at most).
    async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        for _ in 0..200 {
            let got = self.got();
            if done(&got) {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("receiver: {what}; got {:?}", self.got().iter().map(Received::json).collect::<Vec<_>>());
    }

    /// Waits for events of these types, in any order, and returns the matching bodies.
    async fn wait_types(&self, types: &[&str]) -> Vec<Received> {
        self.wait_for(&format!("waiting for {types:?}"), |got| {
            types.iter().all(|t| got.iter().filter(|r| r.json()["type"] == *t).count() >= 1)
        })
        .await
    }
}

/// A URL nothing listens on.
async fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    drop(listener);
    url
}

async fn endpoint(app: &TestApp, admin: &Admin, url: &str, events: Value) -> Value {
    let (status, body) =
        app.post(&admin.store("/webhooks"), Some(&admin.token), json!({"url": url, "events": events})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// Checks the Standard Webhooks headers and the signature under `secret`.
fn assert_signed(r: &Received, secret: &str) {
    let body = r.json();
    assert_eq!(r.headers["webhook-id"], body["id"].as_str().unwrap(), "the event id is the message id");
    assert_eq!(r.headers["content-type"], "application/json");
    let ts = &r.headers["webhook-timestamp"];
    assert!(
        storecrm::webhooks::verify(
            secret,
            &r.headers["webhook-id"],
            ts,
            &r.headers["webhook-signature"],
            &r.body,
            storecrm::now(),
            300
        ),
        "signature {} does not verify",
        r.headers["webhook-signature"]
    );
    assert!(!storecrm::webhooks::verify(
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        &r.headers["webhook-id"],
        ts,
        &r.headers["webhook-signature"],
        &r.body,
        storecrm::now(),
        300
    ));
}

async fn deliveries(app: &TestApp, admin: &Admin, endpoint_id: &str) -> Vec<Value> {
    let (status, body) =
        app.get(&admin.store(&format!("/webhooks/{endpoint_id}/deliveries")), Some(&admin.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

/// Waits until the endpoint's deliveries satisfy `done`.
async fn wait_deliveries(app: &TestApp, admin: &Admin, id: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..200 {
        let d = deliveries(app, admin, id).await;
        if done(&d) {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("deliveries never got there: {:#}", json!(deliveries(app, admin, id).await));
}

async fn feed(app: &TestApp, admin: &Admin, query: &str) -> Vec<Value> {
    let (status, body) = app.get(&admin.store(&format!("/events{query}")), Some(&admin.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

/// `connect` builds its new profile's `profile.created` object instead of reading it back: it
/// must be what the API answers, the codes the address had before it had a profile included.
async fn a_profile_connect_creates_is_recorded_as_the_api_answers_it(app: &TestApp) {
    let admin = app.shop_admin("opened").await;
    let path = |rest: &str| format!("/v1/stores/{}/profiles{rest}", admin.store_id);
    for _ in 0..2 {
        let (status, _) = app.post(&path("/auth/code"), None, json!({"email": "Opened@Example.com"})).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let response = app
        .req(reqwest::Method::POST, &path("/connect"))
        .header("user-agent", "Shop/1.0")
        .json(&json!({"email": "Opened@Example.com"}))
        .send()
        .await
        .expect("connect sent");
    assert_eq!(response.status(), StatusCode::OK);
    let created = feed(app, &admin, "?types=profile.created").await;
    assert_eq!(created.len(), 1, "{created:?}");
    let object = &created[0]["data"]["object"];
    let (_, view) =
        app.get(&admin.store(&format!("/profiles/{}", object["id"].as_str().unwrap())), Some(&admin.token)).await;
    assert_eq!(object, &view, "the event carries the profile as the API answers it");
    assert_eq!(view["verification_codes"].as_array().unwrap().len(), 2, "{view}");
    assert_eq!(view["auth_tokens"][0]["user_agent"], "Shop/1.0", "{view}");
}

fn of_type<'a>(got: &'a [Received], t: &str) -> Vec<&'a Received> {
    got.iter().filter(|r| r.json()["type"] == t).collect()
}

async fn every_event_type_arrives_signed(app: &TestApp) {
    let receiver = Receiver::start().await;
    let admin = app.shop_admin("events").await;
    let hook = endpoint(app, &admin, &receiver.url, json!(["*"])).await;
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(hook["status"], "active");
    let got = app.get(&admin.store(&format!("/webhooks/{}", hook["id"].as_str().unwrap())), Some(&admin.token)).await;
    assert!(got.1.get("secret").is_none(), "the secret is shown once: {}", got.1);

    // The storefront: a guest, who gives an email, then signs in with a code.
    let (_, guest) = app.post(&admin.store("/profiles/initialize"), None, json!({})).await;
    let guest_id = guest["profile_id"].as_str().unwrap().to_string();
    let tok = guest["access_token"].as_str().unwrap().to_string();
    let (status, _) =
        app.post(&admin.store("/profiles/connect"), Some(&tok), json!({"email": "ann@example.com"})).await;
    assert_eq!(status, StatusCode::OK);
    app.post(&admin.store("/profiles/auth/code"), None, json!({"email": "ann@example.com"})).await;
    let code = app.code_for("ann@example.com", 1).await;
    let (status, verified) =
        app.post(&admin.store("/profiles/auth/verify"), None, json!({"email": "ann@example.com", "code": code})).await;
    assert_eq!(status, StatusCode::OK, "{verified}");
    // The admin: a profile, an edit, a merge, an order, a subscription and its end, an erasure.
    let (_, bob) = app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "bob@example.com"})).await;
    let bob_id = bob["id"].as_str().unwrap().to_string();
    let (status, _) =
        app.put(&admin.store(&format!("/profiles/{bob_id}")), Some(&admin.token), json!({"status": "archived"})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, carl) = app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "carl@example.com"})).await;
    let carl_id = carl["id"].as_str().unwrap().to_string();
    let (status, _) = app
        .post(&admin.store(&format!("/profiles/{bob_id}/merge")), Some(&admin.token), json!({"source_id": carl_id}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .post(&admin.store(&format!("/profiles/{bob_id}/orders")), Some(&admin.token), json!({"order_id": "o-1"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    app.post(&admin.store("/audiences"), Some(&admin.token), json!({"key": "news"})).await;
    let (status, sub) =
        app.post(&admin.store("/audiences/news/subscribe"), Some(&admin.token), json!({"profile_id": bob_id})).await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    let (status, _) =
        app.delete(&admin.store(&format!("/audiences/news/subscribers/{bob_id}")), Some(&admin.token)).await;
    assert_eq!(status, StatusCode::OK);
    // (An erasure scrubs the profile's events, also those not yet delivered: another profile goes.)
    let (_, dan) = app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "dan@example.com"})).await;
    let dan_id = dan["id"].as_str().unwrap().to_string();
    let (status, _) = app.delete(&admin.store(&format!("/profiles/{dan_id}")), Some(&admin.token)).await;
    assert_eq!(status, StatusCode::OK);

    let types = [
        "profile.created",
        "profile.updated",
        "profile.verified",
        "profile.merged",
        "profile.erased",
        "subscription.created",
        "subscription.activated",
        "subscription.cancelled",
        "order.linked",
    ];
    let got = receiver.wait_types(&types).await;
    for r in &got {
        assert_signed(r, &secret);
        let e = r.json();
        assert_eq!(e["store_id"], admin.store_id.as_str());
        assert!(e["created_at"].is_i64() && e["data"].get("object").is_some(), "{e}");
    }
    // Each object as the API answers it.
    let created = of_type(&got, "profile.created");
    assert_eq!(created.len(), 4, "the guest, bob, carl and dan");
    let guest_created = created.iter().find(|r| r.json()["data"]["object"]["id"] == guest_id.as_str()).unwrap().json();
    assert_eq!(guest_created["data"]["object"]["email"], Value::Null);
    assert_eq!(guest_created["data"]["object"]["auth_tokens"].as_array().unwrap().len(), 1);
    let attached = of_type(&got, "profile.updated")
        .into_iter()
        .map(Received::json)
        .find(|e| e["data"]["object"]["id"] == guest_id.as_str())
        .expect("connect gave the guest its email");
    assert_eq!(attached["data"]["object"]["email"], "ann@example.com");
    let verified_event = of_type(&got, "profile.verified")[0].json();
    assert_eq!(verified_event["data"]["object"]["verified"], true);
    assert_eq!(
        of_type(&got, "profile.merged")[0].json()["data"]["object"],
        json!({"target_id": bob_id, "source_id": carl_id})
    );
    assert_eq!(of_type(&got, "order.linked")[0].json()["data"]["object"]["order_id"], "o-1");
    assert_eq!(of_type(&got, "subscription.activated")[0].json()["data"]["object"]["id"], sub["subscription"]["id"]);
    assert_eq!(of_type(&got, "subscription.cancelled")[0].json()["data"]["object"]["status"], "cancelled");
    assert_eq!(of_type(&got, "profile.erased")[0].json()["data"]["object"], json!({"id": dan_id}));
    // The delivery log agrees, and the feed lists the same events.
    let log = wait_deliveries(app, &admin, hook["id"].as_str().unwrap(), |d| {
        d.len() == got.len() && d.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    assert!(log.iter().all(|d| d["attempts"][0]["status_code"] == 200), "{log:?}");
    assert_eq!(feed(app, &admin, "?limit=200").await.len(), got.len());
}

async fn failed_changes_send_nothing(app: &TestApp) {
    let receiver = Receiver::start().await;
    let admin = app.shop_admin("rollback").await;
    endpoint(app, &admin, &receiver.url, json!(["profile.updated", "profile.created"])).await;
    let (_, a) = app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "a@example.com"})).await;
    let (_, b) = app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "b@example.com"})).await;
    // An edit the database refuses (the address belongs to another profile) rolls back whole.
    let got = app
        .put(
            &admin.store(&format!("/profiles/{}", b["id"].as_str().unwrap())),
            Some(&admin.token),
            json!({"email": "A@example.com", "status": "archived"}),
        )
        .await;
    assert_eq!(got.0, StatusCode::CONFLICT, "{}", got.1);
    // The same create again changes nothing and says nothing.
    let again = app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "a@example.com"})).await;
    assert_eq!((again.0, again.1["id"].clone()), (StatusCode::OK, a["id"].clone()));
    // A change that commits afterwards: its event arrives, and only after the two creations.
    app.put(
        &admin.store(&format!("/profiles/{}", a["id"].as_str().unwrap())),
        Some(&admin.token),
        json!({"status": "archived"}),
    )
    .await;
    let got = receiver.wait_types(&["profile.updated"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = if receiver.got().len() > got.len() { receiver.got() } else { got };
    let kinds: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let e = r.json();
            (e["type"].as_str().unwrap().into(), e["data"]["object"]["id"].as_str().unwrap().into())
        })
        .collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert_eq!(of_type(&got, "profile.updated").len(), 1, "{kinds:?}");
    assert_eq!(of_type(&got, "profile.updated")[0].json()["data"]["object"]["id"], a["id"]);
    let events = feed(app, &admin, "").await;
    assert_eq!(events.len(), 3, "{events:?}");
}

/// An event written while its store has no active endpoint is in the feed but fanned out to
/// nobody, also to an endpoint created within the same second (it is written dispatched, so the
/// worker has nothing to do for stores without webhooks); the next change reaches the endpoint.
async fn endpoints_get_the_changes_written_after_them(app: &TestApp) {
    let receiver = Receiver::start().await;
    let admin = app.shop_admin("after").await;
    let (status, before) =
        app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "before@example.com"})).await;
    assert_eq!(status, StatusCode::CREATED, "{before}");
    let ep = endpoint(app, &admin, &receiver.url, json!(["profile.created"])).await;
    let (_, after) =
        app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "after@example.com"})).await;
    let got = receiver.wait_types(&["profile.created"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = if receiver.got().len() > got.len() { receiver.got() } else { got };
    let ids: Vec<Value> = got.iter().map(|r| r.json()["data"]["object"]["id"].clone()).collect();
    assert_eq!(ids, vec![after["id"].clone()], "only the change after the endpoint");
    assert_eq!(deliveries(app, &admin, ep["id"].as_str().unwrap()).await.len(), 1);
    let created: Vec<Value> =
        feed(app, &admin, "?types=profile.created").await.iter().map(|e| e["data"]["object"]["id"].clone()).collect();
    assert_eq!(created, vec![before["id"].clone(), after["id"].clone()], "both are in the feed");
}

async fn retries_after_500_and_when_down_then_manual_retry(app: &TestApp) {
    let receiver = Receiver::start().await;
    receiver.answer(&[500]);
    let admin = app.shop_admin("retries").await;
    let flaky = endpoint(app, &admin, &receiver.url, json!(["profile.created"])).await;
    let down = endpoint(app, &admin, &closed_url().await, json!(["profile.created"])).await;
    app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "r@example.com"})).await;

    // The flaky receiver: a 500, then the retry a second later is delivered.
    let log = wait_deliveries(app, &admin, flaky["id"].as_str().unwrap(), |d| {
        d.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    let attempts = log[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{log:?}");
    assert_eq!((attempts[0]["status_code"].clone(), attempts[0]["error"].clone()), (json!(500), json!("answered 500")));
    assert_eq!((attempts[1]["status_code"].clone(), attempts[1]["error"].clone()), (json!(200), Value::Null));
    assert!(attempts[1]["at"].as_i64() > attempts[0]["at"].as_i64());
    let got = receiver.got();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].headers["webhook-id"], got[1].headers["webhook-id"], "a retry keeps the message id");

    // Down: three attempts (the schedule is 1 s, 1 s), then failed; the endpoint keeps its status.
    let down_id = down["id"].as_str().unwrap();
    let log = wait_deliveries(app, &admin, down_id, |d| d.first().is_some_and(|d| d["status"] == "failed")).await;
    let attempts = log[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{log:?}");
    assert!(attempts.iter().all(|a| a["status_code"].is_null() && a["error"].as_str().is_some_and(|e| !e.is_empty())));
    assert_eq!(log[0]["next_attempt_at"], Value::Null);
    let (_, ep) = app.get(&admin.store(&format!("/webhooks/{down_id}")), Some(&admin.token)).await;
    assert_eq!(ep["status"], "active");
    assert!(ep["failing_since"].is_i64(), "{ep}");

    // Pointed at the receiver and retried by hand: delivered, as a fourth attempt.
    let (status, _) =
        app.put(&admin.store(&format!("/webhooks/{down_id}")), Some(&admin.token), json!({"url": receiver.url})).await;
    assert_eq!(status, StatusCode::OK);
    let delivery_id = log[0]["id"].as_str().unwrap();
    let retry = format!("/webhooks/{down_id}/deliveries/{delivery_id}/retry");
    let (status, body) = app.post(&admin.store(&retry), Some(&admin.token), json!({})).await;
    assert_eq!((status, body["status"].clone()), (StatusCode::OK, json!("pending")), "{body}");
    let log = wait_deliveries(app, &admin, down_id, |d| d.first().is_some_and(|d| d["status"] == "delivered")).await;
    assert_eq!(log[0]["attempts"].as_array().unwrap().len(), 4);
    let (_, ep) = app.get(&admin.store(&format!("/webhooks/{down_id}")), Some(&admin.token)).await;
    assert_eq!(ep["failing_since"], Value::Null, "a success ends the failure streak");
    // Unknown ids.
    let missing = format!("/webhooks/{down_id}/deliveries/{}/retry", uuid::Uuid::now_v7());
    expect_error(&app.post(&admin.store(&missing), Some(&admin.token), json!({})).await, 404, "not_found");
}

async fn endpoint_disabled_after_failing_too_long(app: &TestApp) {
    let owned = TestApp::spawn_with(
        app.backend,
        &[
            ("WEBHOOKS_ALLOW_PRIVATE", "true"),
            ("WEBHOOK_RETRY_SCHEDULE_SECS", "2,2,2"),
            ("WEBHOOK_DISABLE_AFTER_SECS", "1"),
        ],
    )
    .await;
    let app = &owned;
    let admin = app.shop_admin("disable").await;
    let down = endpoint(app, &admin, &closed_url().await, json!(["*"])).await;
    let id = down["id"].as_str().unwrap().to_string();
    app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "d@example.com"})).await;
    let mut status = Value::Null;
    for _ in 0..160 {
        status = app.get(&admin.store(&format!("/webhooks/{id}")), Some(&admin.token)).await.1["status"].clone();
        if status == "disabled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "disabled");
    // Disabled: no more attempts, and new events make no deliveries for it.
    let attempts = deliveries(app, &admin, &id).await[0]["attempts"].as_array().unwrap().len();
    app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "e@example.com"})).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let log = deliveries(app, &admin, &id).await;
    assert_eq!((log.len(), log[0]["attempts"].as_array().unwrap().len()), (1, attempts));
    // Re-enabled: it starts afresh.
    let (_, ep) =
        app.put(&admin.store(&format!("/webhooks/{id}")), Some(&admin.token), json!({"status": "active"})).await;
    assert_eq!((ep["status"].clone(), ep["failing_since"].clone()), (json!("active"), Value::Null));
    owned.stop().await;
}

async fn rotated_secret_signs_alongside_the_old_one(app: &TestApp) {
    let receiver = Receiver::start().await;
    let admin = app.shop_admin("rotate").await;
    let hook = endpoint(app, &admin, &receiver.url, json!(["profile.created"])).await;
    let old = hook["secret"].as_str().unwrap().to_string();
    let id = hook["id"].as_str().unwrap();
    let (status, rotated) =
        app.post(&admin.store(&format!("/webhooks/{id}/rotate-secret")), Some(&admin.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(old, new);
    assert!(rotated["previous_secret_until"].as_i64().unwrap() >= storecrm::now() + 24 * 3600 - 5);
    app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "rot@example.com"})).await;
    let got = receiver.wait_types(&["profile.created"]).await;
    let signatures = &got[0].headers["webhook-signature"];
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert_signed(&got[0], &new);
    assert_signed(&got[0], &old);
}

async fn erasure_scrubs_events_and_pending_deliveries(app: &TestApp) {
    let receiver = Receiver::start().await;
    let admin = app.shop_admin("erase").await;
    // The receiver is down while the profile lives and is erased: the deliveries wait.
    let down = endpoint(app, &admin, &closed_url().await, json!(["*"])).await;
    let down_id = down["id"].as_str().unwrap();
    let (_, p) = app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "gdpr@example.com"})).await;
    let pid = p["id"].as_str().unwrap();
    app.put(&admin.store(&format!("/profiles/{pid}")), Some(&admin.token), json!({"status": "archived"})).await;
    app.post(
        &admin.store(&format!("/profiles/{pid}/orders")),
        Some(&admin.token),
        json!({"order_id": "o-9", "metadata": {"address": "1 Secret Street"}}),
    )
    .await;
    // Tried at least once (on a busy machine the 1 s retries may have run already: no matter,
    // a manual retry below sends every delivery again, pending or failed).
    wait_deliveries(app, &admin, down_id, |d| {
        d.len() == 3 && d.iter().all(|d| !d["attempts"].as_array().unwrap().is_empty())
    })
    .await;
    let (status, _) = app.delete(&admin.store(&format!("/profiles/{pid}")), Some(&admin.token)).await;
    assert_eq!(status, StatusCode::OK);
    let events = feed(app, &admin, "").await;
    let text = json!(events).to_string();
    assert!(!text.contains("gdpr@example.com") && !text.contains("Secret Street"), "{text}");
    assert_eq!(events.len(), 4, "{events:?}");
    for e in &events[..3] {
        assert_eq!(e["data"]["object"]["profile_id"], pid, "{e}");
        assert_eq!(e["data"]["redacted"], true);
    }
    assert_eq!(events[3]["data"]["object"], json!({"id": pid}));
    // The pending deliveries, sent now, carry the scrubbed events.
    app.put(&admin.store(&format!("/webhooks/{down_id}")), Some(&admin.token), json!({"url": receiver.url})).await;
    for d in deliveries(app, &admin, down_id).await {
        let retry = format!("/webhooks/{down_id}/deliveries/{}/retry", d["id"].as_str().unwrap());
        app.post(&admin.store(&retry), Some(&admin.token), json!({})).await;
    }
    let got = receiver.wait_for("four deliveries", |g| g.len() >= 4).await;
    for r in &got {
        let body = String::from_utf8(r.body.clone()).unwrap();
        assert!(!body.contains("gdpr@example.com") && !body.contains("Secret Street"), "{body}");
    }
}

async fn two_instances_deliver_each_event_once(app: &TestApp) {
    let receiver = Receiver::start().await;
    let other = app.sibling().await;
    let admin = app.shop_admin("twice").await;
    endpoint(app, &admin, &receiver.url, json!(["profile.created"])).await;
    let n = 40;
    for i in 0..n {
        let server = if i % 2 == 0 { app } else { &other };
        let email = format!("p{i}@example.com");
        let (status, body) = server.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": email})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let got = receiver.wait_for("40 deliveries", |g| g.len() >= n).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = if receiver.got().len() > got.len() { receiver.got() } else { got };
    let mut ids: Vec<&str> = got.iter().map(|r| r.headers["webhook-id"].as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((got.len(), ids.len()), (n, n), "each event exactly once");
    other.stop().await;
}

async fn feed_filters_pages_and_is_admin_only(app: &TestApp) {
    let admin = app.shop_admin("feed").await;
    let other = app.shop_admin("elsewhere").await;
    for i in 0..5 {
        app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": format!("f{i}@example.com")})).await;
    }
    let (_, p) = app.post(&other.store("/profiles"), Some(&other.token), json!({"email": "x@example.com"})).await;
    app.put(
        &other.store(&format!("/profiles/{}", p["id"].as_str().unwrap())),
        Some(&other.token),
        json!({"status": "archived"}),
    )
    .await;
    let all = feed(app, &admin, "").await;
    assert_eq!(all.len(), 5, "only the store's own events");
    // Pages of two, oldest first, without gaps or repeats.
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            None => "?limit=2".to_string(),
            Some(c) => format!("?limit=2&cursor={c}"),
        };
        let (_, page) = app.get(&admin.store(&format!("/events{q}")), Some(&admin.token)).await;
        let items = page["items"].as_array().unwrap();
        if items.is_empty() {
            // Caught up: the feed gives back the cursor it was sent, to poll with later.
            assert_eq!(page["cursor"].as_str(), cursor.as_deref(), "{page}");
            break;
        }
        seen.extend(items.iter().map(|e| e["id"].clone()));
        cursor = Some(page["cursor"].as_str().expect("a feed page always carries a cursor").to_string());
    }
    assert_eq!(seen, all.iter().map(|e| e["id"].clone()).collect::<Vec<_>>());
    // A poller resumes from its cursor: only what is newer, never the whole feed again.
    for i in 5..7 {
        app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": format!("f{i}@example.com")})).await;
    }
    let (_, page) = app.get(&admin.store(&format!("/events?cursor={}", cursor.unwrap())), Some(&admin.token)).await;
    let newer: Vec<&str> = page["items"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(newer, ["profile.created", "profile.created"], "{page}");
    assert_eq!(feed(app, &other, "?types=profile.updated").await.len(), 1);
    assert_eq!(feed(app, &other, r#"?types=["profile.created","profile.updated"]"#).await.len(), 2);
    expect_error(
        &app.get(&admin.store("/events?types=profile.nope"), Some(&admin.token)).await,
        422,
        "validation_failed",
    );
    // A shopper's token is not an admin's.
    let (_, guest) = app.post(&admin.store("/profiles/initialize"), None, json!({})).await;
    let got = app.get(&admin.store("/events"), guest["access_token"].as_str()).await;
    assert!(got.0 == StatusCode::FORBIDDEN || got.0 == StatusCode::UNAUTHORIZED, "{got:?}");
    let got = app.get(&admin.store("/webhooks"), guest["access_token"].as_str()).await;
    assert!(got.0 == StatusCode::FORBIDDEN || got.0 == StatusCode::UNAUTHORIZED, "{got:?}");
    // Another store's admin sees neither.
    let got = app.get(&admin.store("/events"), Some(&other.token)).await;
    assert!(got.0 == StatusCode::FORBIDDEN || got.0 == StatusCode::NOT_FOUND, "{got:?}");
}

async fn private_addresses_are_refused(app: &TestApp) {
    // Without WEBHOOKS_ALLOW_PRIVATE (the default).
    let owned = TestApp::spawn(app.backend).await;
    let app = &owned;
    let admin = app.shop_admin("ssrf").await;
    let path = admin.store("/webhooks");
    let create = |url: &str| app.post(&path, Some(&admin.token), json!({"url": url, "events": ["*"]}));
    for (url, code) in [
        ("http://127.0.0.1:9/hook", "https_required"),
        ("https://127.0.0.1/hook", "private_address"),
        ("https://localhost/hook", "private_address"),
        ("https://169.254.169.254/latest/meta-data", "private_address"),
        ("https://10.0.0.8/hook", "private_address"),
        ("https://[::1]/hook", "private_address"),
        ("https://[::ffff:192.168.1.1]/hook", "private_address"),
        ("ftp://example.com/hook", "invalid_url"),
        ("not a url", "invalid_url"),
    ] {
        let got = create(url).await;
        expect_error(&got, 422, "validation_failed");
        assert_eq!(got.1["validation_errors"][0]["error"], code, "{url}: {}", got.1);
    }
    let got = app
        .post(
            &admin.store("/webhooks"),
            Some(&admin.token),
            json!({"url": "https://93.184.216.34/h", "events": ["nope"]}),
        )
        .await;
    assert_eq!(got.1["validation_errors"][0]["field"], "events[0]", "{}", got.1);
    // A public address literal is accepted (no DNS needed).
    let got = app
        .post(&admin.store("/webhooks"), Some(&admin.token), json!({"url": "https://93.184.216.34/h", "events": ["*"]}))
        .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    // At delivery time too: the client refuses a private address (DNS may have changed since).
    let client = storecrm::webhooks::WebhookClient::new(false, Duration::from_secs(2));
    let receiver = Receiver::start().await;
    let https_local = receiver.url.replace("http://", "https://");
    let outcome = client.send(&https_local, &[], Bytes::from_static(b"{}")).await;
    assert!(outcome.error.as_deref().is_some_and(|e| e.contains("private")), "{outcome:?}");
    let outcome = client.send("https://localhost:1/hook", &[], Bytes::from_static(b"{}")).await;
    assert!(outcome.error.as_deref().is_some_and(|e| e.contains("private")), "{outcome:?}");
    assert!(receiver.got().is_empty());
    owned.stop().await;
}

async fn janitor_sweeps_are_events_too(app: &TestApp) {
    let owned = TestApp::spawn_with(app.backend, &[("GUEST_TTL_SECS", "1")]).await;
    let app = &owned;
    let admin = app.shop_admin("janitor").await;
    let (_, guest) = app.post(&admin.store("/profiles/initialize"), None, json!({})).await;
    let guest_id = guest["profile_id"].as_str().unwrap();
    let report = app.state.services.sessions.sweep(storecrm::now() + 5).await.unwrap();
    assert_eq!(report.guests, 1, "{report:?}");
    let events = feed(app, &admin, "").await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["profile.created", "profile.erased"]);
    assert_eq!(events[1]["data"]["object"], json!({"id": guest_id}));
    assert_eq!(events[0]["data"]["redacted"], true, "the guest's user agent is gone too: {}", events[0]);
    // Retention: the janitor deletes events older than EVENT_RETENTION_SECS (30 days), of every
    // store (it walks each store's events by id), and none younger.
    let other = app.shop_admin("janitor-other").await;
    app.post(&other.store("/profiles"), Some(&other.token), json!({"email": "kept@example.com"})).await;
    let report = app.state.services.sessions.sweep(storecrm::now() + 29 * 86_400).await.unwrap();
    assert_eq!(report.events, 0, "{report:?}");
    assert_eq!(feed(app, &admin, "").await.len(), 2);
    let report = app.state.services.sessions.sweep(storecrm::now() + 31 * 86_400).await.unwrap();
    assert_eq!(report.events, 3, "{report:?}");
    assert!(feed(app, &admin, "").await.is_empty());
    assert!(feed(app, &other, "").await.is_empty());
    owned.stop().await;
}

/// The application never deletes a store; one deleted by hand takes its events (with their
/// deliveries), profiles, sessions and rate-limit hits with it (a trigger on Postgres, where these
/// have no foreign key to `stores` or to their profile; the foreign keys on SQLite).
async fn a_store_deleted_by_hand_takes_its_rows(app: &TestApp) {
    let receiver = Receiver::start().await;
    let gone = app.shop_admin("deleted-by-hand").await;
    let kept = app.shop_admin("kept-by-hand").await;
    for admin in [&gone, &kept] {
        endpoint(app, admin, &receiver.url, json!(["profile.created"])).await;
        app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "d@example.com"})).await;
        app.post(&admin.store("/profiles/initialize"), None, json!({})).await;
    }
    receiver.wait_for("four deliveries", |g| g.len() == 4).await;
    let count = |table: &'static str, store: uuid::Uuid| async move {
        app.scalar(&format!("SELECT COUNT(*) FROM {table} WHERE store_id = $1"), &[Bind::U(store)]).await
    };
    let (gone_id, kept_id) = (gone.store_id.parse().unwrap(), kept.store_id.parse().unwrap());
    let tables = ["events", "webhook_deliveries", "profiles", "profile_sessions", "rate_limits"];
    for table in tables {
        assert!(count(table, gone_id).await > 0, "{table}");
    }
    let mut kept_rows = vec![];
    for table in tables {
        kept_rows.push(count(table, kept_id).await);
    }
    app.exec("DELETE FROM stores WHERE id = $1", &[Bind::U(gone_id)]).await;
    for table in tables {
        assert_eq!(count(table, gone_id).await, 0, "{table}");
    }
    for (table, rows) in tables.into_iter().zip(kept_rows) {
        assert_eq!(count(table, kept_id).await, rows, "{table}");
    }
}

async fn a_worker_dying_mid_delivery_loses_nothing(app: &TestApp) {
    use storecrm::webhooks::{WebhookClient, WebhookSettings, WebhookWorker};
    // No background worker: the test runs two by hand, the first of which dies mid-attempt.
    let owned =
        TestApp::spawn_with(app.backend, &[("WEBHOOK_WORKER", "false"), ("WEBHOOKS_ALLOW_PRIVATE", "true")]).await;
    let app = &owned;
    let receiver = Receiver::start().await;
    receiver.answer(&[0]);
    let admin = app.shop_admin("crash").await;
    let hook = endpoint(app, &admin, &receiver.url, json!(["profile.created"])).await;
    app.post(&admin.store("/profiles"), Some(&admin.token), json!({"email": "c@example.com"})).await;
    let worker = || {
        let settings = WebhookSettings { lease: Duration::from_secs(2), ..WebhookSettings::default() };
        let client = WebhookClient::new(true, Duration::from_secs(30));
        WebhookWorker::new(app.state.db.clone(), app.state.keys.clone(), client, settings, Default::default())
    };
    let first = worker();
    let dying = tokio::spawn(async move { first.run_once().await });
    receiver.wait_for("the first attempt", |g| g.len() == 1).await;
    dying.abort();
    let _ = dying.await;
    // Leased: another worker leaves it alone until the lease runs out, then delivers it.
    let second = worker();
    assert_eq!(second.run_once().await.unwrap().attempted, 0, "still leased to the dead worker");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(second.run_once().await.unwrap().attempted, 1);
    let got = receiver.got();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].headers["webhook-id"], got[1].headers["webhook-id"]);
    let log = deliveries(app, &admin, hook["id"].as_str().unwrap()).await;
    assert_eq!(log[0]["status"], "delivered", "{log:?}");
    owned.stop().await;
}
