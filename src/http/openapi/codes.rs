//! The stable error codes, listed once: in the document (`x-error-codes` of `info`, and the
//! descriptions of `ErrorBody.error` and `FieldError.error`) and, by a test, in docs/api-guide.md.

use serde_json::{Value, json};

/// `error` codes: status, codes, when.
pub const ERROR_CODES: &[(u16, &[&str], &str)] = &[
    (400, &["invalid_json"], "the body is not valid JSON"),
    (400, &["invalid_body"], "the body cannot be read as the route's form"),
    (400, &["invalid_token"], "a confirm / unsubscribe token is unknown, used or expired"),
    (
        400,
        &["invalid_signature", "timestamp_out_of_tolerance", "invalid_event"],
        "Stripe webhook: signature does not match, signed more than 5 minutes off, not an event",
    ),
    (400, &["bad_request"], "a request the server cannot understand otherwise"),
    (401, &["unauthorized"], "bearer missing, invalid, expired or revoked"),
    (401, &["invalid_credentials"], "login: unknown email or wrong password (answered alike)"),
    (
        401,
        &["invalid_refresh_token", "refresh_token_reused"],
        "refresh token unknown/expired, or reused after the grace window (the session is revoked)",
    ),
    (401, &["invalid_code"], "sign-in code wrong, expired or used up"),
    (
        403,
        &["forbidden"],
        "valid credential without the right (an API key on account routes, a profile on admin routes, an admin credential on `connect`/`verify`, a profile subscribing another profile)",
    ),
    (
        403,
        &["verification_required"],
        "a claim (unverified session that named an existing address) asked for what needs proof",
    ),
    (404, &["not_found"], "no such store, record or route (records of other stores included)"),
    (405, &["method_not_allowed"], "the route does not take that method"),
    (408, &["request_timeout"], "the request took longer than `REQUEST_TIMEOUT_SECS`"),
    (409, &["email_taken"], "another profile of the store (or account) has this email"),
    (409, &["key_taken"], "another taxonomy / template / audience of the store has this key"),
    (409, &["audience_archived"], "subscribe to an archived audience"),
    (409, &["already_unsubscribed"], "unsubscribe of a subscription that has already ended"),
    (409, &["order_linked_elsewhere"], "the order is linked to another profile"),
    (409, &["too_many_webhooks"], "the store already has the most webhook endpoints it may have"),
    (
        409,
        &["delivery_in_progress", "not_failed"],
        "retry of a webhook delivery that is still being sent; retry of a mail that has not failed",
    ),
    (409, &["concurrent_change", "conflict"], "a record the request refers to changed meanwhile; retry"),
    (413, &["payload_too_large"], "body over 1 MiB"),
    (415, &["unsupported_media_type"], "the body is not `application/json` (or the one-click form where accepted)"),
    (422, &["validation_failed"], "see `validation_errors` below"),
    (429, &["rate_limited"], "a limit of section 8; wait `retry_after` seconds"),
    (502, &["payment_provider_error"], "Stripe failed or timed out; nothing was stored"),
    (503, &["payments_not_configured"], "a paid subscribe or a webhook without Stripe configured"),
    (
        503,
        &["database_unavailable", "contention", "not_ready"],
        "the database is unreachable, or concurrent changes kept winning; retry",
    ),
    (500, &["internal_error"], "a bug; the log has the cause under `request_id`"),
];

/// `validation_errors[].error` codes: codes, meaning.
pub const VALIDATION_CODES: &[(&[&str], &str)] = &[
    (&["required"], "missing or empty"),
    (&["unknown_field"], "the route does not know this body field (a typo is never dropped silently)"),
    (&["invalid_text", "invalid_characters"], "text containing U+0000 or other forbidden control characters"),
    (
        &["invalid_type", "invalid_value", "invalid_length", "invalid_json"],
        "wrong JSON type, value not among the accepted ones (enums), wrong length, a query parameter that is not the JSON it must be",
    ),
    (
        &["too_long", "too_short", "too_many"],
        "over a length limit, a password under 8 characters, too many items (e.g. `allowed_origins`)",
    ),
    (
        &["out_of_range", "not_finite"],
        "a number outside its bounds (`limit` 1–200, a taxonomy `min`/`max`), NaN or infinite",
    ),
    (&["invalid_email"], "not an email address"),
    (
        &["invalid_url", "invalid_origin"],
        "not an http(s) URL; not an origin (`https://shop.example` or `https://*.shop.example`)",
    ),
    (
        &["https_required", "unresolvable_host", "private_address"],
        "a webhook URL that is not https, whose host does not resolve, or that reaches a private, loopback or link-local address",
    ),
    (&["origin_not_allowed"], "`confirm_url` / `success_url` / `cancel_url` not on the store's `allowed_origins`"),
    (&["invalid_key"], "a key that is not 1–64 of `[A-Za-z0-9_-]`"),
    (&["reserved_key"], "an audience key that is a route word under `/audiences/` (`confirm`, `unsubscribe`)"),
    (&["invalid_code_format"], "a sign-in code that is not 6 digits"),
    (
        &["invalid_cursor", "cursor_mismatch"],
        "a cursor that is not one the server gave, or that belongs to another list or query",
    ),
    (
        &["invalid_ids", "invalid_types"],
        "`ids` (`types`) is neither a JSON array nor a comma-separated list of UUIDs (event types)",
    ),
    (
        &["unknown_taxonomy", "unknown_template", "unknown_price"],
        "a reference to a taxonomy / template / price the store does not have",
    ),
    (
        &[
            "type_mismatch",
            "option_not_allowed",
            "too_many_values",
            "expected_pair",
            "invalid_range",
            "duplicate_taxonomy",
            "duplicate_field",
        ],
        "profile taxonomy values or queries against the taxonomy definition",
    ),
    (
        &[
            "invalid_options",
            "only_for_text",
            "only_for_number",
            "greater_than_max",
            "duplicate_key",
            "too_many_fields",
            "too_many_filters",
        ],
        "taxonomy definitions (options only for text, bounds only for numbers, `min` ≤ `max`) and queries",
    ),
    (
        &[
            "invalid_currency",
            "invalid_interval",
            "below_amount",
            "duplicate_id",
            "price_not_on_stripe",
            "only_for_paid",
            "type_immutable",
        ],
        "prices of paid audiences: ISO 4217 currency, interval, `compare_at` ≥ `amount`, unique price ids, a price without a Stripe price, prices on a standard audience, changing an audience's type",
    ),
    (&["email_required"], "a double opt-in subscribe of a profile without email"),
    (&["same_as_target"], "merge of a profile into itself"),
    (
        &["invalid_template", "render_failed"],
        "a template that does not compile (the part is named); a preview that fails to render",
    ),
];

fn list(codes: &[&str]) -> String {
    codes.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
}

/// Puts the lists into the document.
pub fn describe(doc: &mut Value) {
    doc["info"]["x-error-codes"] = json!({
        "error": ERROR_CODES.iter().map(|(status, codes, when)| json!({"status": status, "codes": codes, "when": when})).collect::<Vec<_>>(),
        "validation_errors": VALIDATION_CODES.iter().map(|(codes, when)| json!({"codes": codes, "when": when})).collect::<Vec<_>>(),
    });
    let errors: Vec<String> =
        ERROR_CODES.iter().map(|(status, codes, _)| format!("{status}: {}", list(codes))).collect();
    let fields: Vec<&str> = VALIDATION_CODES.iter().flat_map(|(codes, _)| codes.iter().copied()).collect();
    let schemas = &mut doc["components"]["schemas"];
    schemas["ErrorBody"]["properties"]["error"]["description"] = Value::String(format!(
        "A stable snake_case code (the document's `info.x-error-codes` says when each is answered): {}.",
        errors.join("; ")
    ));
    schemas["FieldError"]["properties"]["error"]["description"] =
        Value::String(format!("A stable snake_case code: {}.", list(&fields)));
}

#[cfg(test)]
mod tests {
    /// The API guide lists every code the document lists.
    #[test]
    fn the_api_guide_lists_every_code() {
        let guide = include_str!("../../../docs/api-guide.md");
        let codes = super::ERROR_CODES
            .iter()
            .flat_map(|(_, c, _)| c.iter())
            .chain(super::VALIDATION_CODES.iter().flat_map(|(c, _)| c.iter()));
        let missing: Vec<&&str> = codes.filter(|c| !guide.contains(&format!("`{c}`"))).collect();
        assert!(missing.is_empty(), "docs/api-guide.md does not list {missing:?}");
    }
}
