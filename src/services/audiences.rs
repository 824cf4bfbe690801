//! Audiences (§6): definitions, subscribe with double opt-in, access, subscribers, unsubscribe.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config::Limits;
use crate::crypto::{Keys, b64, random_token, sha256, to_hex, unb64};
use crate::domain::audience::{AudienceType, Price, key_error, validate_prices};
use crate::domain::trimmed_within;
use crate::domain::{
    AccessDenied, AudienceKind, Keyset, LinkError, MailKind, OriginPattern, Status, SubscriptionSource,
    SubscriptionStatus, double_option, link_target,
};
use crate::error::{AppError, AppResult, FieldError};
use crate::mail::render::render;
use crate::mail::{OutgoingMail, mailbox_display};
use crate::payments::PaymentGateway;
use crate::repo::{AudienceRow, AudienceSearch, Database, NewOutboxMail, StoreRow, SubscriberRow, SubscriptionRow, Tx};
use crate::services::auth::{ProfileAuth, ProfileToken};
use crate::services::checkout::{self, PaidSubscribe};
use crate::services::consents::{Consent, ConsentAction, Witness};
use crate::services::limits::{self, Limit, email_bucket};
use crate::services::templates::source;
use crate::services::{events, retrying};

/// Double opt-in links stay valid this long.
const CONFIRM_TTL_SECS: i64 = 7 * 24 * 3600;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAudience {
    /// 1–64 of `[A-Za-z0-9_-]`, unique per store.
    pub key: String,
    pub name: Option<String>,
    /// `standard` (default) or `{"type": "paid", "prices": [...]}`.
    #[serde(rename = "type")]
    pub ty: Option<AudienceType>,
    /// Double opt-in template; omit for single opt-in.
    #[serde(alias = "confirmTemplateId")]
    pub confirm_template_id: Option<Uuid>,
}

/// Absent fields stay; `confirm_template_id: null` makes the audience single opt-in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAudience {
    pub key: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    pub status: Option<Status>,
    #[serde(default, alias = "confirmTemplateId", deserialize_with = "double_option")]
    #[schema(value_type = Option<Uuid>)]
    pub confirm_template_id: Option<Option<Uuid>>,
    /// Paid audiences only.
    pub prices: Option<Vec<Price>>,
    /// Must equal the current type (`type_immutable` otherwise).
    #[serde(rename = "type")]
    pub ty: Option<AudienceType>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    #[serde(alias = "profileId")]
    pub profile_id: Uuid,
    #[serde(alias = "priceId")]
    pub price_id: Option<String>,
    #[serde(alias = "successUrl")]
    pub success_url: Option<String>,
    #[serde(alias = "cancelUrl")]
    pub cancel_url: Option<String>,
    /// Required for double opt-in audiences: the storefront page that POSTs the token to `/audiences/confirm`.
    #[serde(alias = "confirmUrl")]
    pub confirm_url: Option<String>,
    /// The wording the shopper agreed to (the sign-up form's text, at most 10,000 characters):
    /// the consent ledger keeps its SHA-256, so the store can later prove which text it was.
    #[serde(alias = "consentText")]
    #[schema(max_length = 10000)]
    pub consent_text: Option<String>,
}

/// What a hosted page (confirm, unsubscribe) names: the store, the audience, where it stands.
pub struct PageSubject {
    pub store_name: String,
    pub audience_name: String,
    pub status: SubscriptionStatus,
}

/// Who subscribes: an admin of the store, or the profile itself.
pub enum Subscriber<'a> {
    Admin,
    Profile(&'a ProfileAuth),
}

pub struct Subscribed {
    pub subscription: SubscriptionRow,
    pub created: bool,
    pub checkout_url: Option<String>,
    /// The caller is a claim (§4): it learns the subscription's id and status, not the row.
    pub claim: bool,
}

pub struct Access {
    pub has_access: bool,
    pub subscription: Option<SubscriptionRow>,
    pub reason: Option<AccessDenied>,
}

pub struct Audiences {
    db: Database,
    limits: Limits,
    keys: Keys,
    public_base_url: String,
    mail_from: String,
    mail_wake: Arc<Notify>,
    /// `None` when Stripe is not configured: paid subscribes answer 503.
    payments: Option<Arc<dyn PaymentGateway>>,
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// The store's `allowed_origins` as patterns (each was checked when it was saved).
fn allowed_origins(store: &StoreRow) -> Vec<OriginPattern> {
    store.allowed_origins.iter().filter_map(|o| OriginPattern::parse(o).ok()).collect()
}

/// 422 for refused link fields; the message says which origins would pass.
fn links_refused(errors: Vec<FieldError>, allowed: &[OriginPattern]) -> AppError {
    if !errors.iter().any(|e| e.error == LinkError::NotAllowed.code()) {
        return AppError::validation(errors);
    }
    let allowed = if allowed.is_empty() {
        "none are set, so only http://localhost[:port] and http://127.0.0.1[:port] pass".to_string()
    } else {
        allowed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    };
    let fields = errors.iter().map(|e| format!("{}: {}", e.field, e.error)).collect::<Vec<_>>().join(", ");
    AppError::Validation {
        message: format!("{fields}; links must be on one of the store's allowed_origins ({allowed})"),
        errors,
    }
}

/// Whether a template is one of the store's (share-locked inside a transaction).
async fn check_template(tx: &mut Tx, store_id: Uuid, id: Option<Uuid>, errors: &mut Vec<FieldError>) -> AppResult<()> {
    if let Some(id) = id
        && !tx.template_exists(store_id, id).await?
    {
        errors.push(FieldError::new("confirm_template_id", "unknown_template"));
    }
    Ok(())
}

fn invalid_token() -> AppError {
    AppError::BadRequest { code: "invalid_token", message: "the token is unknown, used or expired".into() }
}

/// What a subscribe writes once validated.
struct Plan<'a> {
    store: &'a StoreRow,
    audience: &'a AudienceRow,
    profile_id: Uuid,
    source: SubscriptionSource,
    confirm_url: Option<&'a str>,
    claim: bool,
    /// Who asked, and the SHA-256 of the wording they agreed to (the ledger's evidence).
    witness: Witness,
    wording_hash: Option<String>,
}

/// The hex SHA-256 of a consent wording.
fn wording_hash(text: &str) -> String {
    to_hex(&sha256(text.as_bytes()))
}

impl Audiences {
    pub fn new(
        db: Database,
        keys: Keys,
        limits: Limits,
        public_base_url: String,
        mail_from: String,
        mail_wake: Arc<Notify>,
        payments: Option<Arc<dyn PaymentGateway>>,
    ) -> Self {
        Self { db, keys, limits, public_base_url, mail_from, mail_wake, payments }
    }

    /// A stable one-click unsubscribe token for (audience, profile): MAC'd, nothing stored.
    pub fn unsubscribe_token(&self, store_id: Uuid, audience_id: Uuid, profile_id: Uuid) -> String {
        let mut data = store_id.as_bytes().to_vec();
        data.extend_from_slice(audience_id.as_bytes());
        data.extend_from_slice(profile_id.as_bytes());
        let mut token = data[16..].to_vec();
        token.extend_from_slice(&self.keys.link_mac(&data));
        b64(&token)
    }

    fn parse_unsubscribe_token(&self, store_id: Uuid, token: &str) -> Option<(Uuid, Uuid)> {
        let raw = unb64(token.trim())?;
        if raw.len() != 48 {
            return None;
        }
        let audience_id = Uuid::from_slice(&raw[..16]).ok()?;
        let profile_id = Uuid::from_slice(&raw[16..32]).ok()?;
        let expected = self.unsubscribe_token(store_id, audience_id, profile_id);
        crate::crypto::constant_time_eq(expected.as_bytes(), token.trim().as_bytes())
            .then_some((audience_id, profile_id))
    }

    /// The hosted page a double opt-in mail links when the subscribe named no `confirm_url`.
    pub fn confirm_page_url(&self, store_id: Uuid) -> String {
        format!("{}/v1/stores/{store_id}/audiences/confirm", self.public_base_url)
    }

    pub fn unsubscribe_url(&self, store_id: Uuid, audience_id: Uuid, profile_id: Uuid) -> String {
        format!(
            "{}/v1/stores/{store_id}/audiences/unsubscribe?token={}",
            self.public_base_url,
            self.unsubscribe_token(store_id, audience_id, profile_id)
        )
    }

    pub async fn create(&self, store_id: Uuid, input: CreateAudience) -> AppResult<AudienceRow> {
        let mut errors = vec![];
        if let Some(error) = key_error(&input.key) {
            errors.push(FieldError::new("key", error));
        }
        let name = input.name.filter(|n| !n.trim().is_empty());
        let name = match name.as_deref().map(|n| trimmed_within(n, 200)) {
            Some(Err(e)) => {
                errors.push(FieldError::new("name", e));
                None
            }
            Some(Ok(n)) => Some(n.to_string()),
            None => None,
        };
        let (kind, prices) = match input.ty.unwrap_or(AudienceType::Standard) {
            AudienceType::Standard => (AudienceKind::Standard, vec![]),
            AudienceType::Paid { mut prices } => {
                errors.extend(validate_prices(&mut prices, "type.prices"));
                (AudienceKind::Paid, prices)
            }
        };
        let mut tx = self.db.begin().await?;
        check_template(&mut tx, store_id, input.confirm_template_id, &mut errors).await?;
        if !errors.is_empty() {
            return Err(AppError::validation(errors));
        }
        let now = crate::now();
        let row = AudienceRow {
            store_id,
            id: Uuid::now_v7(),
            key: input.key,
            name,
            status: Status::Active,
            kind,
            prices,
            confirm_template_id: input.confirm_template_id,
            subscriber_count: 0,
            created_at: now,
            updated_at: now,
        };
        tx.insert_audience(&row).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// By id or key. `public` callers see active audiences only.
    pub async fn get(&self, store_id: Uuid, id_or_key: &str, public: bool) -> AppResult<AudienceRow> {
        let id = Uuid::parse_str(id_or_key).ok();
        match self.db.auto().audience(store_id, id, id_or_key).await? {
            Some(a) if !public || a.status == Status::Active => Ok(a),
            _ => Err(AppError::NotFound("audience")),
        }
    }

    pub async fn find(
        &self,
        store_id: Uuid,
        ids: Option<&str>,
        status: Option<Status>,
        query: Option<&str>,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> AppResult<(Vec<AudienceRow>, Option<String>)> {
        let mut errors = vec![];
        let ids: Vec<Uuid> = match ids.map(str::trim).filter(|s| !s.is_empty()) {
            None => vec![],
            Some(raw) => {
                let parts: Option<Vec<String>> = if raw.starts_with('[') {
                    serde_json::from_str(raw).ok()
                } else {
                    Some(raw.split(',').map(|s| s.trim().to_string()).collect())
                };
                match parts.and_then(|p| p.iter().map(|s| Uuid::parse_str(s).ok()).collect::<Option<Vec<_>>>()) {
                    Some(ids) if ids.len() <= 200 => ids,
                    _ => {
                        errors.push(FieldError::new("ids", "invalid_ids"));
                        vec![]
                    }
                }
            }
        };
        let query = query.map(str::trim).filter(|q| !q.is_empty()).map(str::to_lowercase);
        let scope = format!("audiences\n{store_id}\n{ids:?}\n{:?}\n{query:?}", status.map(Status::as_str));
        let keyset = Keyset::parse(limit, cursor, scope).map_err(|e| errors.extend(e)).ok();
        let after = keyset.as_ref().map(Keyset::after_id).transpose().map_err(|e| errors.push(e)).ok().flatten();
        let Some(keyset) = keyset.filter(|_| errors.is_empty()) else {
            return Err(AppError::validation(errors));
        };
        let search = AudienceSearch { store_id, ids, status, query, after: after.flatten(), limit: keyset.fetch() };
        let rows = self.db.auto().find_audiences(&search).await?;
        Ok(keyset.page(rows, |a| vec![a.id.to_string().into()]))
    }

    pub async fn update(&self, store_id: Uuid, id_or_key: &str, patch: UpdateAudience) -> AppResult<AudienceRow> {
        let mut tx = self.db.begin().await?;
        let id = Uuid::parse_str(id_or_key).ok();
        let mut row = tx.lock_audience(store_id, id, id_or_key).await?.ok_or(AppError::NotFound("audience"))?;
        let mut errors = vec![];
        if let Some(ty) = &patch.ty
            && ty.kind() != row.kind
        {
            return Err(AppError::Validation {
                message: "an audience's type cannot change".into(),
                errors: vec![FieldError::new("type", "type_immutable")],
            });
        }
        if let Some(key) = patch.key {
            match key_error(&key) {
                None => row.key = key,
                Some(error) => errors.push(FieldError::new("key", error)),
            }
        }
        if let Some(name) = patch.name {
            match name.filter(|n| !n.trim().is_empty()).as_deref().map(|n| trimmed_within(n, 200)) {
                Some(Err(e)) => errors.push(FieldError::new("name", e)),
                Some(Ok(n)) => row.name = Some(n.to_string()),
                None => row.name = None,
            }
        }
        if let Some(status) = patch.status {
            row.status = status;
        }
        let prices = patch.prices.or(match patch.ty {
            Some(AudienceType::Paid { prices }) => Some(prices),
            _ => None,
        });
        if let Some(mut prices) = prices {
            if row.kind != AudienceKind::Paid {
                errors.push(FieldError::new("prices", "only_for_paid"));
            } else {
                errors.extend(validate_prices(&mut prices, "prices"));
                row.prices = prices;
            }
        }
        if let Some(template) = patch.confirm_template_id {
            check_template(&mut tx, store_id, template, &mut errors).await?;
            row.confirm_template_id = template;
        }
        if !errors.is_empty() {
            return Err(AppError::validation(errors));
        }
        row.updated_at = crate::now();
        tx.update_audience(&row).await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn subscribe(
        &self,
        store: &StoreRow,
        id_or_key: &str,
        who: Subscriber<'_>,
        input: SubscribeRequest,
        witness: Witness,
    ) -> AppResult<Subscribed> {
        if let Subscriber::Profile(auth) = &who
            && auth.profile_id != input.profile_id
        {
            return Err(AppError::Forbidden("a profile may only subscribe itself".into()));
        }
        let audience = self.get(store.id, id_or_key, matches!(who, Subscriber::Profile(_))).await?;
        if audience.status != Status::Active {
            return Err(AppError::Conflict { code: "audience_archived", message: "this audience is archived".into() });
        }
        let mut errors = vec![];
        let allowed = allowed_origins(store);
        let mut link = |field: &str, url: &Option<String>| -> Option<String> {
            match link_target(url.as_deref()?, &allowed) {
                Ok(u) => Some(u.to_string()),
                Err(e) => {
                    errors.push(FieldError::new(field, e.code()));
                    None
                }
            }
        };
        let success_url = link("success_url", &input.success_url);
        let cancel_url = link("cancel_url", &input.cancel_url);
        let confirm_url = link("confirm_url", &input.confirm_url);
        if input.consent_text.as_ref().is_some_and(|t| t.chars().count() > 10_000) {
            errors.push(FieldError::new("consent_text", "too_long"));
        }
        let wording = input.consent_text.as_deref().map(wording_hash);
        let price = match audience.kind {
            AudienceKind::Paid => {
                let price = match input.price_id.as_deref().map(|id| audience.prices.iter().find(|p| p.matches(id))) {
                    None => {
                        errors.push(FieldError::new("price_id", "required"));
                        None
                    }
                    Some(None) => {
                        errors.push(FieldError::new("price_id", "unknown_price"));
                        None
                    }
                    Some(Some(price)) if price.stripe_price_id().is_none() => {
                        errors.push(FieldError::new("price_id", "price_not_on_stripe"));
                        None
                    }
                    Some(Some(price)) => Some(price),
                };
                for (field, url) in [("success_url", &input.success_url), ("cancel_url", &input.cancel_url)] {
                    if url.is_none() {
                        errors.push(FieldError::new(field, "required"));
                    }
                }
                price
            }
            AudienceKind::Standard => None,
        };
        if !errors.is_empty() {
            return Err(links_refused(errors, &allowed));
        }
        let claim = matches!(&who, Subscriber::Profile(auth) if !auth.holds);
        let source = match who {
            Subscriber::Admin => SubscriptionSource::Admin,
            Subscriber::Profile(_) => SubscriptionSource::Signup,
        };
        if let (Some(price), Some(success_url), Some(cancel_url)) = (price, &success_url, &cancel_url) {
            let gateway = self.payments.as_deref().ok_or_else(|| AppError::Unavailable {
                code: "payments_not_configured",
                message: "payments are not configured on this server".into(),
            })?;
            let paid = PaidSubscribe {
                audience: &audience,
                profile_id: input.profile_id,
                price,
                source,
                success_url,
                cancel_url,
                consent: Consent::new(ConsentAction::Checkout)
                    .witnessed(witness)
                    .wording(wording)
                    .store_setting(store.consent_full_ip),
            };
            return checkout::start(&self.db, gateway, paid).await.map(|done| Subscribed { claim, ..done });
        }
        // Without a storefront page of its own, the mail links the hosted confirm page.
        let confirm_url = confirm_url.unwrap_or_else(|| self.confirm_page_url(store.id));
        let plan = Plan {
            store,
            audience: &audience,
            profile_id: input.profile_id,
            source,
            confirm_url: Some(confirm_url.as_str()),
            claim,
            witness,
            wording_hash: wording,
        };
        let done = retrying(|| self.subscribe_standard(&plan)).await?;
        Ok(done)
    }

    /// A standard audience's subscribe, in one transaction: the profile and its subscription are
    /// locked first, so concurrent subscribes and admin adds of one profile happen one after the
    /// other (one `created`, one mail), an open subscription is never lowered to pending, and an
    /// erasure either sees the queued mail or is seen as the profile's absence.
    async fn subscribe_standard(&self, plan: &Plan<'_>) -> AppResult<Subscribed> {
        let (store, audience, claim) = (plan.store, plan.audience, plan.claim);
        let now = crate::now();
        let mut tx = self.db.begin().await?;
        let profile = tx.lock_profile(store.id, plan.profile_id).await?.ok_or(AppError::NotFound("profile"))?;
        let existing = tx.subscription(store.id, audience.id, profile.row.id).await?;
        if let Some(s) = existing.as_ref().filter(|s| s.status.is_open()) {
            return Ok(Subscribed { subscription: s.clone(), created: false, checkout_url: None, claim });
        }
        let mut row = SubscriptionRow {
            store_id: store.id,
            id: existing.as_ref().map(|s| s.id).unwrap_or_else(Uuid::now_v7),
            audience_id: audience.id,
            profile_id: profile.row.id,
            status: SubscriptionStatus::Active,
            source: plan.source,
            price_id: None,
            payment: None,
            start_date: Some(now),
            end_date: None,
            confirmed_at: Some(now),
            cancelled_at: None,
            created_at: now,
            updated_at: now,
        };
        let action = match plan.source {
            SubscriptionSource::Admin => ConsentAction::AdminAdd,
            _ => ConsentAction::Subscribe,
        };
        let consent = Consent::new(action)
            .witnessed(plan.witness.clone())
            .wording(plan.wording_hash.clone())
            .store_setting(plan.store.consent_full_ip);
        let (Some(template_id), Some(confirm_url)) = (audience.confirm_template_id, plan.confirm_url) else {
            let stored = tx.upsert_subscription(&row).await?;
            events::subscription_written(&mut tx, store.id, existing.as_ref(), &stored, &consent).await?;
            tx.commit().await?;
            return Ok(Subscribed { created: existing.is_none(), subscription: stored, checkout_url: None, claim });
        };
        let email = profile.row.email.clone().ok_or_else(|| AppError::invalid("profile_id", "email_required"))?;
        // One confirmation mail per subscription per interval: a repeated subscribe inside it
        // answers the pending subscription and sends nothing.
        if let Some(pending) = existing.as_ref().filter(|s| s.status == SubscriptionStatus::Pending) {
            let last = tx.last_confirmation_at(store.id, pending.id).await?;
            let interval = self.limits.confirm_mail_interval.as_secs() as i64;
            if last.is_some_and(|at| now - at < interval) {
                return Ok(Subscribed { subscription: pending.clone(), created: false, checkout_url: None, claim });
            }
        }
        let per_recipient = Limit {
            max: self.limits.confirm_mail_limit_per_recipient,
            window: std::time::Duration::from_secs(24 * 3600),
        };
        let bucket = email_bucket("confirm", &crate::mail::address_key(&email));
        limits::hit(&mut tx, store.id, &bucket, per_recipient).await?;
        let token = random_token();
        let mut link = url::Url::parse(confirm_url).map_err(AppError::internal)?;
        link.query_pairs_mut().append_pair("token", &token);
        row.status = SubscriptionStatus::Pending;
        row.start_date = None;
        row.confirmed_at = None;
        let mail = self.confirmation_mail(&mut tx, plan, template_id, &email, link.as_str()).await?;
        // The ledger names the mail and, unless the storefront sent its own wording, the mail's
        // text with the one-time link taken out (the same wording gives the same hash).
        let mail_wording = wording_hash(&mail.text.replace(&link.to_string(), "{{ confirm_url }}"));
        let outbox = NewOutboxMail::new(Some(store.id), mail, now).kind(MailKind::Confirmation);
        let consent = Consent {
            confirm_mail_id: Some(outbox.id),
            wording_hash: consent.wording_hash.clone().or(Some(mail_wording)),
            ..consent
        };
        let stored = tx.upsert_subscription(&row).await?;
        events::subscription_written(&mut tx, store.id, existing.as_ref(), &stored, &consent).await?;
        tx.replace_confirm_token(store.id, stored.id, &sha256(token.as_bytes()), now, now + CONFIRM_TTL_SECS).await?;
        tx.insert_mail(&outbox).await?;
        tx.commit().await?;
        self.mail_wake.notify_one();
        Ok(Subscribed { created: existing.is_none(), subscription: stored, checkout_url: None, claim })
    }

    /// The double opt-in mail, rendered from the audience's template (a built-in text when the
    /// template cannot render, so the subscriber still gets the link); it carries the list headers.
    async fn confirmation_mail(
        &self,
        tx: &mut Tx,
        plan: &Plan<'_>,
        template_id: Uuid,
        email: &str,
        confirm_url: &str,
    ) -> AppResult<OutgoingMail> {
        let (store, audience, profile_id) = (plan.store, plan.audience, plan.profile_id);
        let unsubscribe_url = self.unsubscribe_url(store.id, audience.id, profile_id);
        let audience_name = audience.name.clone().unwrap_or_else(|| audience.key.clone());
        let vars = json!({
            "confirm_url": confirm_url,
            "unsubscribe_url": unsubscribe_url,
            "email": email,
            "audience_name": audience_name,
            "audience_key": audience.key,
            "store_name": store.name,
        });
        let template = tx.template(store.id, Some(template_id), "").await?;
        let rendered = template.as_ref().map(|t| (t, render(&source(t), &vars)));
        let (subject, html, text, sender) = match rendered {
            Some((t, Ok(r))) => (r.subject, r.html, r.text, Some(t)),
            other => {
                if let Some((_, Err(e))) = &other {
                    tracing::warn!(template_id = %template_id, error = %e.message, "confirmation template does not render; built-in mail sent");
                }
                let text = format!("Please confirm your subscription to {audience_name}: {confirm_url}\n");
                let html = format!(
                    "<p>Please confirm your subscription to {}: <a href=\"{}\">confirm</a></p>",
                    html_escape(&audience_name),
                    html_escape(confirm_url)
                );
                (format!("Confirm your subscription to {audience_name}"), html, text, None)
            }
        };
        let from_email = sender.and_then(|t| t.from_email.clone()).or_else(|| store.from_email.clone());
        let from_name = sender.and_then(|t| t.from_name.clone()).or_else(|| store.from_name.clone());
        let from = match from_email {
            Some(addr) => mailbox_display(from_name.as_deref().unwrap_or(&store.name), &addr),
            None => self.mail_from.clone(),
        };
        Ok(OutgoingMail {
            message_id: None,
            from,
            to: email.to_string(),
            reply_to: sender.and_then(|t| t.reply_to.clone()),
            subject,
            html,
            text,
            headers: vec![
                ("List-Unsubscribe".into(), format!("<{unsubscribe_url}>")),
                ("List-Unsubscribe-Post".into(), "List-Unsubscribe=One-Click".into()),
            ],
        })
    }

    /// One statement: the session (401 unless live), the audience (404 unless active) and the
    /// subscription are read together.
    pub async fn check_access(&self, token: &ProfileToken, id_or_key: &str) -> AppResult<Access> {
        let now = crate::now();
        let audience = (Uuid::parse_str(id_or_key).ok(), id_or_key);
        let check = self
            .db
            .auto()
            .access_check(token.store_id, token.session_id, token.profile_id, audience, now)
            .await?
            .ok_or_else(crate::services::auth::invalid_token)?;
        if check.audience_status != Some(Status::Active) {
            return Err(AppError::NotFound("audience"));
        }
        let subscription = check.subscription;
        let denied = match &subscription {
            _ if !check.holds => Some(AccessDenied::VerificationRequired),
            None => Some(AccessDenied::NotSubscribed),
            Some(s) => match s.status {
                SubscriptionStatus::Active => None,
                SubscriptionStatus::CancellationScheduled if s.end_date.is_none_or(|end| end > now) => None,
                SubscriptionStatus::CancellationScheduled | SubscriptionStatus::Expired => Some(AccessDenied::Expired),
                SubscriptionStatus::Pending => Some(AccessDenied::Pending),
                SubscriptionStatus::Cancelled => Some(AccessDenied::Cancelled),
            },
        };
        Ok(Access {
            has_access: denied.is_none(),
            subscription: subscription.filter(|_| denied != Some(AccessDenied::VerificationRequired)),
            reason: denied,
        })
    }

    pub async fn subscribers(
        &self,
        store_id: Uuid,
        id_or_key: &str,
        status: Option<SubscriptionStatus>,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> AppResult<(Vec<SubscriberRow>, Option<String>)> {
        let audience = self.get(store_id, id_or_key, false).await?;
        let scope = format!("subscribers\n{store_id}\n{}\n{:?}", audience.id, status.map(SubscriptionStatus::as_str));
        let keyset = Keyset::parse(limit, cursor, scope).map_err(AppError::validation)?;
        let after = keyset.after_id().map_err(|e| AppError::validation(vec![e]))?;
        let rows = self.db.auto().subscribers(store_id, audience.id, status, after, keyset.fetch()).await?;
        Ok(keyset.page(rows, |r| vec![r.subscription.id.to_string().into()]))
    }

    /// Adds a profile as an active subscriber; `true` when it already was one (skipped).
    pub async fn add_subscriber(
        &self,
        store_id: Uuid,
        id_or_key: &str,
        profile_id: Uuid,
        witness: Witness,
    ) -> AppResult<(SubscriberRow, bool)> {
        let audience = self.get(store_id, id_or_key, false).await?;
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            let profile = tx.lock_profile(store_id, profile_id).await?.ok_or(AppError::NotFound("profile"))?;
            let email = profile.row.email.clone();
            let existing = tx.subscription(store_id, audience.id, profile_id).await?;
            if let Some(s) = existing.clone().filter(|s| s.status.is_open()) {
                return Ok((SubscriberRow { subscription: s, email }, true));
            }
            let now = crate::now();
            let row = SubscriptionRow {
                store_id,
                id: existing.as_ref().map(|s| s.id).unwrap_or_else(Uuid::now_v7),
                audience_id: audience.id,
                profile_id,
                status: SubscriptionStatus::Active,
                source: SubscriptionSource::Admin,
                price_id: None,
                payment: None,
                start_date: Some(now),
                end_date: None,
                confirmed_at: Some(now),
                cancelled_at: None,
                created_at: now,
                updated_at: now,
            };
            let stored = tx.upsert_subscription(&row).await?;
            let consent = Consent::new(ConsentAction::AdminAdd).witnessed(witness.clone());
            events::subscription_written(&mut tx, store_id, existing.as_ref(), &stored, &consent).await?;
            tx.commit().await?;
            Ok((SubscriberRow { subscription: stored, email }, false))
        })
        .await
    }

    pub async fn remove_subscriber(
        &self,
        store_id: Uuid,
        id_or_key: &str,
        profile_id: Uuid,
        witness: Witness,
    ) -> AppResult<()> {
        let audience = self.get(store_id, id_or_key, false).await?;
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            let Some(sub) = tx.subscription(store_id, audience.id, profile_id).await? else {
                return Err(AppError::NotFound("subscriber"));
            };
            tx.delete_subscription(store_id, audience.id, profile_id).await?;
            // Removed while open: subscribers of the event learn it ended, as it last stood.
            if !sub.status.is_ended() {
                let now = crate::now();
                let ended = SubscriptionRow {
                    status: SubscriptionStatus::Cancelled,
                    cancelled_at: Some(now),
                    updated_at: now,
                    ..sub.clone()
                };
                let consent = Consent::new(ConsentAction::AdminRemove).witnessed(witness.clone());
                events::subscription_written(&mut tx, store_id, Some(&sub), &ended, &consent).await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Uses up a double opt-in token and activates its pending subscription.
    pub async fn confirm(&self, store_id: Uuid, token: &str, witness: Witness) -> AppResult<SubscriptionRow> {
        if token.trim().is_empty() {
            return Err(AppError::invalid("token", "required"));
        }
        let hash = sha256(token.trim().as_bytes());
        retrying(|| async {
            let now = crate::now();
            let mut tx = self.db.begin().await?;
            // The subscription is locked before its token, in the order subscribe takes them.
            let id = tx.confirm_token_subscription(store_id, &hash).await?.ok_or_else(invalid_token)?;
            let mut sub = tx.subscription_by_id(store_id, id).await?.ok_or_else(invalid_token)?;
            let before = sub.clone();
            if tx.use_confirm_token(store_id, &hash, now).await?.is_none() || sub.status != SubscriptionStatus::Pending
            {
                return Err(invalid_token());
            }
            sub.status = SubscriptionStatus::Active;
            sub.confirmed_at = Some(now);
            sub.start_date = sub.start_date.or(Some(now));
            sub.updated_at = now;
            let confirmed = tx.update_subscription(&sub).await?;
            let consent = Consent::new(ConsentAction::Confirm).witnessed(witness.clone());
            events::subscription_written(&mut tx, store_id, Some(&before), &confirmed, &consent).await?;
            tx.commit().await?;
            Ok(confirmed)
        })
        .await
    }

    pub async fn unsubscribe(&self, store_id: Uuid, token: &str, witness: Witness) -> AppResult<SubscriptionRow> {
        if token.trim().is_empty() {
            return Err(AppError::invalid("token", "required"));
        }
        let (audience_id, profile_id) = self.parse_unsubscribe_token(store_id, token).ok_or_else(invalid_token)?;
        retrying(|| async {
            let mut tx = self.db.begin().await?;
            let Some(mut sub) = tx.subscription(store_id, audience_id, profile_id).await? else {
                return Err(invalid_token());
            };
            // Idempotent: a second click (or a mail client's retry) answers the same.
            if sub.status.is_ended() {
                return Ok(sub);
            }
            let now = crate::now();
            let before = sub.clone();
            sub.status = SubscriptionStatus::Cancelled;
            sub.cancelled_at = Some(now);
            sub.updated_at = now;
            let cancelled = tx.update_subscription(&sub).await?;
            let consent = Consent::new(ConsentAction::Unsubscribe).witnessed(witness.clone());
            events::subscription_written(&mut tx, store_id, Some(&before), &cancelled, &consent).await?;
            tx.commit().await?;
            Ok(cancelled)
        })
        .await
    }

    /// What the hosted confirm page shows for a token, without using it: `None` when the token is
    /// unknown, used or expired.
    pub async fn confirm_page(&self, store_id: Uuid, token: &str) -> AppResult<Option<PageSubject>> {
        let mut db = self.db.auto();
        let hash = sha256(token.trim().as_bytes());
        let Some(id) = db.live_confirm_token_subscription(store_id, &hash, crate::now()).await? else {
            return Ok(None);
        };
        let Some(sub) = db.subscription_by_id(store_id, id).await? else { return Ok(None) };
        self.page_subject(&mut db, store_id, sub.audience_id, sub.status).await
    }

    /// What the hosted unsubscribe page shows for a token: `None` when the token is not valid.
    pub async fn unsubscribe_page(&self, store_id: Uuid, token: &str) -> AppResult<Option<PageSubject>> {
        let Some((audience_id, profile_id)) = self.parse_unsubscribe_token(store_id, token) else { return Ok(None) };
        let mut db = self.db.auto();
        let Some(sub) = db.subscription(store_id, audience_id, profile_id).await? else { return Ok(None) };
        self.page_subject(&mut db, store_id, audience_id, sub.status).await
    }

    /// The store's and the audience's names of a subscription a page just changed.
    pub async fn page_names(
        &self,
        store_id: Uuid,
        done: &AppResult<SubscriptionRow>,
    ) -> AppResult<Option<(String, String)>> {
        let Ok(sub) = done else { return Ok(None) };
        let subject = self.page_subject(&mut self.db.auto(), store_id, sub.audience_id, sub.status).await?;
        Ok(subject.map(|s| (s.store_name, s.audience_name)))
    }

    async fn page_subject(
        &self,
        db: &mut Tx,
        store_id: Uuid,
        audience_id: Uuid,
        status: SubscriptionStatus,
    ) -> AppResult<Option<PageSubject>> {
        let (Some(store), Some(audience)) =
            (db.store(store_id).await?, db.audience(store_id, Some(audience_id), "").await?)
        else {
            return Ok(None);
        };
        let audience_name = audience.name.unwrap_or(audience.key);
        Ok(Some(PageSubject { store_name: store.name, audience_name, status }))
    }

    pub async fn of_profile(&self, store_id: Uuid, profile_id: Uuid) -> AppResult<Vec<SubscriptionRow>> {
        Ok(self.db.auto().subscriptions_of_profile(store_id, profile_id).await?)
    }
}
