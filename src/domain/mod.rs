//! Types that are valid by construction. Parse once at the edge, trust inside.

pub mod audience;
mod cursor;
mod email;
mod number;
mod origin;
mod status;
pub mod table;
pub mod taxonomy;
mod text;

pub use cursor::{Cursor, Keyset, Page};
pub use email::Email;
pub use number::{opt_whole_i64, whole_i64, whole_u32};
pub use origin::{ClientAddr, LinkError, OriginPattern, link_target, request_origin};
pub use status::{
    AccessDenied, AudienceKind, ConsentAction, DeliveryStatus, EndpointStatus, EventType, MailKind, MailStatus,
    ProviderKind, Role, SortDirection, SortField, Status, SubscriptionSource, SubscriptionStatus,
};
pub use text::{Name, Password, double_option, trimmed_within};
