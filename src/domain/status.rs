//! Every status and kind the API and the tables know, as enums. Each is written in the tables and
//! on the wire as its snake_case name; an unknown name is refused where it enters (a request: 422
//! `invalid_value`; a row: a decode error).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Defines a string enum with `as_str`, `FromStr`, `Display` and serde, each variant named by its
/// text (captured as `tt`: a `literal` fragment reaches utoipa wrapped, and it ignored the name).
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:tt),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),*
                }
            }
        }

        impl FromStr for $name {
            type Err = &'static str;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)*
                    _ => Err("invalid_value"),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Of profiles, taxonomies, email templates and audiences.
    Status { Active = "active", Archived = "archived" }
);

string_enum!(
    /// A subscription's life: `pending` until confirmed or paid, then `active`; an ending one is
    /// `cancellation_scheduled` until its `end_date`; `cancelled` and `expired` are ended.
    SubscriptionStatus {
        Pending = "pending",
        Active = "active",
        CancellationScheduled = "cancellation_scheduled",
        Cancelled = "cancelled",
        Expired = "expired",
    }
);

impl SubscriptionStatus {
    /// Active, or scheduled to end: the subscriber still counts.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Active | Self::CancellationScheduled)
    }

    /// Ended: a new subscribe starts over.
    pub fn is_ended(self) -> bool {
        matches!(self, Self::Cancelled | Self::Expired)
    }

    /// §3.1: when a merge meets two subscriptions to one audience, the stronger survives:
    /// active > cancellation_scheduled > pending > cancelled = expired.
    pub fn strength(self) -> u8 {
        match self {
            Self::Active => 4,
            Self::CancellationScheduled => 3,
            Self::Pending => 2,
            Self::Cancelled | Self::Expired => 1,
        }
    }
}

string_enum!(
    /// How a subscription came to be.
    SubscriptionSource { Signup = "signup", Admin = "admin", Import = "import" }
);

string_enum!(
    /// `standard` (free; optional double opt-in) or `paid` (Stripe Checkout).
    AudienceKind { Standard = "standard", Paid = "paid" }
);

string_enum!(
    /// An account's role in a store.
    Role { Owner = "owner", Admin = "admin" }
);

string_enum!(
    /// Where a price is sold.
    ProviderKind { Stripe = "stripe" }
);

string_enum!(
    /// What an event says happened (CONTRACT §9.1).
    EventType {
        ProfileCreated = "profile.created",
        ProfileUpdated = "profile.updated",
        ProfileVerified = "profile.verified",
        ProfileMerged = "profile.merged",
        ProfileErased = "profile.erased",
        SubscriptionCreated = "subscription.created",
        SubscriptionActivated = "subscription.activated",
        SubscriptionCancellationScheduled = "subscription.cancellation_scheduled",
        SubscriptionCancelled = "subscription.cancelled",
        SubscriptionExpired = "subscription.expired",
        OrderLinked = "order.linked",
    }
);

impl EventType {
    /// The event a subscription moving to `status` sends (`pending` sends none: it is not news).
    pub fn of_subscription_status(status: SubscriptionStatus) -> Option<Self> {
        match status {
            SubscriptionStatus::Pending => None,
            SubscriptionStatus::Active => Some(Self::SubscriptionActivated),
            SubscriptionStatus::CancellationScheduled => Some(Self::SubscriptionCancellationScheduled),
            SubscriptionStatus::Cancelled => Some(Self::SubscriptionCancelled),
            SubscriptionStatus::Expired => Some(Self::SubscriptionExpired),
        }
    }
}

string_enum!(
    /// What changed a subscription, as the consent ledger records it.
    ConsentAction {
        /// The profile subscribed (storefront), or asked again for a confirmation mail.
        Subscribe = "subscribe",
        /// The profile confirmed a double opt-in mail.
        Confirm = "confirm",
        /// The profile unsubscribed (a mail's link, the hosted page, one-click).
        Unsubscribe = "unsubscribe",
        /// An admin subscribed the profile.
        AdminAdd = "admin_add",
        /// An admin removed the profile from the audience.
        AdminRemove = "admin_remove",
        /// An import carried the subscription.
        Import = "import",
        /// A merge moved the subscription to this profile, or dropped the weaker of two.
        Merge = "merge",
        /// A payment provider's event (Stripe).
        Payment = "payment",
        /// A checkout was started for a paid audience.
        Checkout = "checkout",
        /// The scheduled end of a membership passed.
        Expire = "expire",
    }
);

string_enum!(
    /// A webhook endpoint receives deliveries while active; 5 days of failures disable it.
    EndpointStatus { Active = "active", Disabled = "disabled" }
);

string_enum!(
    /// One event's delivery to one endpoint.
    DeliveryStatus { Pending = "pending", Delivered = "delivered", Failed = "failed" }
);

string_enum!(
    /// What a mail is, for the outbox's list and the send-time variables of its template.
    MailKind { SignInCode = "sign_in_code", Confirmation = "confirmation", Other = "other" }
);

string_enum!(
    /// Where a mail of the outbox stands.
    MailStatus { Queued = "queued", Sent = "sent", Failed = "failed" }
);

string_enum!(
    /// Why `checkAccess` answers no.
    AccessDenied {
        NotSubscribed = "not_subscribed",
        Pending = "pending",
        Cancelled = "cancelled",
        Expired = "expired",
        /// The session is a claim (§4): only a session verified with a code learns more.
        VerificationRequired = "verification_required",
    }
);

/// What `find` orders profiles by. The reference's camelCase names are accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortField {
    #[default]
    #[serde(alias = "createdAt")]
    CreatedAt,
    #[serde(alias = "updatedAt")]
    UpdatedAt,
    Email,
}

string_enum!(
    /// Ascending (the default) or descending.
    SortDirection { Asc = "asc", Desc = "desc" }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_on_the_wire_and_in_text() {
        for s in SubscriptionStatus::ALL {
            assert_eq!(s.as_str().parse::<SubscriptionStatus>().unwrap(), *s);
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(s.as_str()));
        }
        assert_eq!("paused".parse::<SubscriptionStatus>(), Err("invalid_value"));
        assert_eq!(serde_json::from_str::<Status>("\"archived\"").unwrap(), Status::Archived);
    }

    #[test]
    fn merge_strength_orders_the_statuses() {
        use SubscriptionStatus::*;
        assert!(Active.strength() > CancellationScheduled.strength());
        assert!(CancellationScheduled.strength() > Pending.strength());
        assert!(Pending.strength() > Cancelled.strength());
        assert_eq!(Cancelled.strength(), Expired.strength());
    }
}
