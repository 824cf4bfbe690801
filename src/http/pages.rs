//! The few pages a person sees: the confirm and unsubscribe links of the store's mail (CONTRACT §6).
//! Plain HTML with one form each, no script, no external asset, every text escaped; a GET only
//! shows, the button POSTs. `no-store` and a strict Content-Security-Policy on every page, and no
//! referrer, since the URL carries a token.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::crypto::sha256;
use crate::domain::SubscriptionStatus;
use crate::services::audiences::PageSubject;

const STYLE: &str = "body{font-family:system-ui,-apple-system,sans-serif;max-width:32rem;margin:4rem auto;\
padding:0 1rem;line-height:1.5;color:#1f2328}h1{font-size:1.5rem}button{font:inherit;padding:.6rem 1.4rem;\
border:0;border-radius:.4rem;background:#1f6feb;color:#fff;cursor:pointer}.muted{color:#59636e}";

/// The policy allows this page's one stylesheet (by its hash) and posting forms to this server.
static CSP: LazyLock<String> = LazyLock::new(|| {
    use base64::Engine;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha256(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
});

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `title` and the already-escaped `body`.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><meta name=\"robots\" content=\"noindex\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        escape(title)
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Ok(csp) = HeaderValue::from_str(&CSP) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

/// A form that POSTs `token` to `action` (a path on this server).
fn button(action: &str, token: &str, label: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"token\" value=\"{}\">\
         <button type=\"submit\">{}</button></form>",
        escape(action),
        escape(token),
        escape(label)
    )
}

/// The page for a link that is unknown, used or expired.
pub fn invalid_link(what: &str) -> Response {
    page(
        StatusCode::NOT_FOUND,
        "This link does not work",
        &format!(
            "<h1>This link does not work</h1><p>The {} link is unknown, already used or expired. \
             If you still want this, ask for a new mail.</p>",
            escape(what)
        ),
    )
}

/// `GET .../audiences/confirm?token=`: names the store and the audience, with one button.
pub fn confirm(action: &str, token: &str, subject: Option<PageSubject>) -> Response {
    let Some(s) = subject else { return invalid_link("confirmation") };
    if s.status != SubscriptionStatus::Pending {
        return confirmed(&s.store_name, &s.audience_name);
    }
    page(
        StatusCode::OK,
        "Confirm your subscription",
        &format!(
            "<h1>Confirm your subscription</h1><p>Subscribe to <strong>{}</strong> from {}?</p>{}\
             <p class=\"muted\">Nothing happens until you press the button.</p>",
            escape(&s.audience_name),
            escape(&s.store_name),
            button(action, token, "Confirm my subscription")
        ),
    )
}

pub fn confirmed(store_name: &str, audience_name: &str) -> Response {
    page(
        StatusCode::OK,
        "Subscription confirmed",
        &format!(
            "<h1>Subscription confirmed</h1><p>You are subscribed to <strong>{}</strong> from {}. \
             Every mail has a link to unsubscribe.</p>",
            escape(audience_name),
            escape(store_name)
        ),
    )
}

/// `GET .../audiences/unsubscribe?token=`: one button; an ended subscription says so.
pub fn unsubscribe(action: &str, token: &str, subject: Option<PageSubject>) -> Response {
    let Some(s) = subject else { return invalid_link("unsubscribe") };
    if s.status.is_ended() {
        return unsubscribed(&s.store_name, &s.audience_name);
    }
    page(
        StatusCode::OK,
        "Unsubscribe",
        &format!(
            "<h1>Unsubscribe</h1><p>Stop receiving <strong>{}</strong> from {}?</p>{}",
            escape(&s.audience_name),
            escape(&s.store_name),
            button(action, token, "Unsubscribe")
        ),
    )
}

pub fn unsubscribed(store_name: &str, audience_name: &str) -> Response {
    page(
        StatusCode::OK,
        "You are unsubscribed",
        &format!(
            "<h1>You are unsubscribed</h1><p>You will get no more <strong>{}</strong> from {}.</p>\
             <p class=\"muted\">Changed your mind? You can subscribe again on {}'s site at any time.</p>",
            escape(audience_name),
            escape(store_name),
            escape(store_name)
        ),
    )
}

/// A browser's form post (it asks for HTML), as opposed to an API client or a mail client's
/// RFC 8058 one-click post: answered with a page.
pub fn wants_page(headers: &HeaderMap) -> bool {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    form && accept.contains("text/html")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_pages_are_locked_down() {
        let subject = PageSubject {
            store_name: "<b>Shop</b> & Co".into(),
            audience_name: "\"News\"".into(),
            status: SubscriptionStatus::Pending,
        };
        let response = confirm("/v1/stores/x/audiences/confirm", "tok\"en", Some(subject));
        let headers = response.headers().clone();
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-") && !csp.contains("unsafe"), "{csp}");
        assert_eq!(escape("<a href=\"x\">&'</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }
}
