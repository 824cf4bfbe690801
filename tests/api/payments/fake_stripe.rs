//! A fake Stripe API on 127.0.0.1:0: `POST /v1/checkout/sessions` answers a Checkout Session shaped
//! like Stripe's, records the form it was sent, and can be told to fail with 500 or to hang.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Succeed,
    /// Answers 500 with Stripe's error body.
    Fail,
    /// Never answers within any sane timeout.
    Hang,
}

/// One recorded request: the form fields in order, and the bearer it carried.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub form: Vec<(String, String)>,
    pub authorization: Option<String>,
}

impl Recorded {
    pub fn field(&self, key: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Inner {
    behaviour: Option<Behaviour>,
    requests: Vec<Recorded>,
    created: u32,
}

pub struct FakeStripe {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeStripe {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().route("/v1/checkout/sessions", post(create_session)).with_state(inner.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, inner, server }
    }

    pub fn set(&self, behaviour: Behaviour) {
        self.inner.lock().unwrap().behaviour = Some(behaviour);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn create_session(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    let recorded = Recorded { form, authorization };
    let (behaviour, n) = {
        let mut inner = inner.lock().unwrap();
        inner.requests.push(recorded.clone());
        inner.created += 1;
        (inner.behaviour.unwrap_or(Behaviour::Succeed), inner.created)
    };
    match behaviour {
        Behaviour::Succeed => (StatusCode::OK, axum::Json(session(&recorded, n))),
        Behaviour::Fail => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"type": "api_error", "message": "An unknown error occurred"}})),
        ),
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            (StatusCode::OK, axum::Json(session(&recorded, n)))
        }
    }
}

/// A freshly created hosted Checkout Session, as Stripe returns it (API version 2025-xx).
fn session(r: &Recorded, n: u32) -> Value {
    let id = format!("cs_test_a1{n:04}b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v2W3x4Y5z6");
    let metadata: serde_json::Map<String, Value> = r
        .form
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("metadata[")?.strip_suffix(']')?.to_string(), json!(v))))
        .collect();
    let now = storecrm::now();
    let mut session = json!({
        "id": id,
        "object": "checkout.session",
        "adaptive_pricing": {"enabled": false},
        "after_expiration": null,
        "allow_promotion_codes": null,
        "amount_subtotal": 900,
        "amount_total": 900,
        "automatic_tax": {"enabled": false, "liability": null, "provider": null, "status": null},
        "billing_address_collection": null,
        "cancel_url": r.field("cancel_url"),
        "client_reference_id": r.field("client_reference_id"),
        "client_secret": null,
        "collected_information": null,
        "consent": null,
        "consent_collection": null,
        "created": now,
        "currency": "eur",
        "currency_conversion": null,
        "custom_fields": [],
        "custom_text": {"after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null},
        "customer": null,
        "customer_creation": if r.field("mode") == Some("payment") { "if_required" } else { "always" },
        "customer_details": null,
        "customer_email": r.field("customer_email"),
        "discounts": [],
        "expires_at": now + 86_400,
        "invoice": null,
        "invoice_creation": null,
    });
    let rest = json!({
        "livemode": false,
        "locale": null,
        "metadata": metadata,
        "mode": r.field("mode"),
        "payment_intent": null,
        "payment_link": null,
        "payment_method_collection": "always",
        "payment_method_configuration_details": null,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "phone_number_collection": {"enabled": false},
        "recovered_from": null,
        "saved_payment_method_options": null,
        "setup_intent": null,
        "shipping_address_collection": null,
        "shipping_cost": null,
        "shipping_options": [],
        "status": "open",
        "submit_type": null,
        "subscription": null,
        "success_url": r.field("success_url"),
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": format!("https://checkout.stripe.com/c/pay/{id}#fidkdWxOYHwnPyd1blpxYHZxWjA0"),
        "wallet_options": null
    });
    session.as_object_mut().unwrap().extend(rest.as_object().unwrap().clone());
    session
}
