//! The API's representation of the records the store keeps: what the routes answer and what an
//! event's `data.object` carries (CONTRACT §9.1: "the object as the API answers it"), in one place.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::taxonomy::{TaxonomyEntry, entries_from_values};
use crate::domain::{Status, SubscriptionSource, SubscriptionStatus};
use crate::repo::{CodeSummary, OrderRow, ProfileDetails, SubscriptionRow};

#[derive(Serialize, ToSchema)]
pub struct PromoUsage {
    pub promo_code_id: String,
    pub uses: i64,
}

/// A live session, without its tokens.
#[derive(Serialize, ToSchema)]
pub struct AuthTokenInfo {
    pub id: Uuid,
    pub created_at: i64,
    pub last_used_at: i64,
    pub refresh_expires_at: i64,
    pub is_verified: bool,
    pub user_agent: Option<String>,
}

impl From<crate::repo::SessionSummary> for AuthTokenInfo {
    fn from(s: crate::repo::SessionSummary) -> Self {
        Self {
            id: s.id,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            refresh_expires_at: s.refresh_expires_at,
            is_verified: s.verified,
            user_agent: s.user_agent,
        }
    }
}

/// A magic code, without the code.
#[derive(Serialize, ToSchema)]
pub struct VerificationCodeInfo {
    pub id: Uuid,
    pub created_at: i64,
    pub expires_at: i64,
    pub used: bool,
    pub attempts: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Profile {
    pub id: Uuid,
    pub store_id: Uuid,
    pub email: Option<String>,
    pub verified: bool,
    pub status: Status,
    pub taxonomies: Vec<TaxonomyEntry>,
    pub promo_usage: Vec<PromoUsage>,
    pub auth_tokens: Vec<AuthTokenInfo>,
    pub verification_codes: Vec<VerificationCodeInfo>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<CodeSummary> for VerificationCodeInfo {
    fn from(c: CodeSummary) -> Self {
        Self { id: c.id, created_at: c.created_at, expires_at: c.expires_at, used: c.used, attempts: c.attempts }
    }
}

impl From<ProfileDetails> for Profile {
    fn from(d: ProfileDetails) -> Self {
        let p = d.profile;
        Self {
            id: p.id,
            store_id: p.store_id,
            email: p.email,
            verified: p.verified,
            status: p.status,
            taxonomies: entries_from_values(d.values),
            promo_usage: d
                .promo_usage
                .into_iter()
                .map(|(promo_code_id, uses)| PromoUsage { promo_code_id, uses })
                .collect(),
            auth_tokens: d.sessions.into_iter().map(AuthTokenInfo::from).collect(),
            verification_codes: d.codes.into_iter().map(VerificationCodeInfo::from).collect(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

impl Profile {
    /// A profile as inserted, before anything else refers to it (seeding: no read needed).
    pub fn new_profile(p: crate::repo::NewProfile) -> Self {
        Self {
            id: p.id,
            store_id: p.store_id,
            email: p.email.map(|e| e.as_str().to_string()),
            verified: p.verified,
            status: p.status,
            taxonomies: entries_from_values(p.values),
            promo_usage: vec![],
            auth_tokens: vec![],
            verification_codes: vec![],
            created_at: p.created_at,
            updated_at: p.created_at,
        }
    }

    /// A profile as `connect` creates it for a new address: its one session and the codes the
    /// address already had (read with its id), nothing else yet (no read needed).
    pub fn opened(p: crate::repo::NewProfile, s: &crate::repo::ProfileSessionRow, codes: Vec<CodeSummary>) -> Self {
        let mut view = Self::new_profile(p);
        view.auth_tokens = Self::guest(s).auth_tokens;
        view.auth_tokens[0].is_verified = s.verified;
        view.verification_codes = codes.into_iter().map(VerificationCodeInfo::from).collect();
        view
    }

    /// A guest profile as `initialize` creates it: no email, one session (no read needed).
    pub fn guest(s: &crate::repo::ProfileSessionRow) -> Self {
        Self {
            id: s.profile_id,
            store_id: s.store_id,
            email: None,
            verified: false,
            status: Status::Active,
            taxonomies: vec![],
            promo_usage: vec![],
            auth_tokens: vec![AuthTokenInfo {
                id: s.id,
                created_at: s.created_at,
                last_used_at: s.created_at,
                refresh_expires_at: s.refresh_expires_at,
                is_verified: false,
                user_agent: s.user_agent.clone(),
            }],
            verification_codes: vec![],
            created_at: s.created_at,
            updated_at: s.created_at,
        }
    }
}

/// An order of the commerce system linked to a profile.
#[derive(Serialize, ToSchema)]
pub struct Order {
    pub order_id: String,
    pub profile_id: Uuid,
    /// Minor units.
    pub total: Option<i64>,
    pub currency: Option<String>,
    pub status: Option<String>,
    pub placed_at: Option<i64>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub created_at: i64,
}

impl From<OrderRow> for Order {
    fn from(o: OrderRow) -> Self {
        Self {
            order_id: o.order_id,
            profile_id: o.profile_id,
            total: o.total,
            currency: o.currency,
            status: o.status,
            placed_at: o.placed_at,
            metadata: o.metadata,
            created_at: o.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Subscription {
    pub id: Uuid,
    pub store_id: Uuid,
    pub audience_id: Uuid,
    pub profile_id: Uuid,
    pub status: SubscriptionStatus,
    pub source: SubscriptionSource,
    pub price_id: Option<String>,
    /// `{provider: {type, customer_id, subscription_id, price_id, checkout_session_id}}` for paid
    /// subscriptions; the Stripe customer and subscription ids arrive with the checkout webhook.
    #[schema(value_type = Option<Object>)]
    pub payment: Option<Value>,
    pub start_date: Option<i64>,
    pub end_date: Option<i64>,
    pub confirmed_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<SubscriptionRow> for Subscription {
    fn from(s: SubscriptionRow) -> Self {
        Self {
            id: s.id,
            store_id: s.store_id,
            audience_id: s.audience_id,
            profile_id: s.profile_id,
            status: s.status,
            source: s.source,
            price_id: s.price_id,
            payment: s.payment,
            start_date: s.start_date,
            end_date: s.end_date,
            confirmed_at: s.confirmed_at,
            cancelled_at: s.cancelled_at,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// The object of an event, as JSON text: serialized once for all the events that carry it.
pub fn object(view: impl Serialize) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(&view).expect("views serialize")
}

/// Something that happened in a store (CONTRACT §9.1): what the feed lists and a webhook carries.
#[derive(Serialize, ToSchema)]
pub struct Event {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: crate::domain::EventType,
    pub store_id: Uuid,
    pub created_at: i64,
    /// `{"object": ...}`: the object as the API answered it at that moment (`profile.merged`:
    /// `{target_id, source_id}`; `profile.erased`: `{id}`).
    #[schema(value_type = Object)]
    pub data: Value,
}

impl From<crate::repo::EventRow> for Event {
    fn from(e: crate::repo::EventRow) -> Self {
        Self { id: e.id, kind: e.kind, store_id: e.store_id, created_at: e.created_at, data: e.data }
    }
}
