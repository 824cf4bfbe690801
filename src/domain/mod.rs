//! Types that are valid by construction. Parse once at the edge, trust inside.

pub mod audience;
mod cursor;
mod email;
pub mod taxonomy;
mod text;

pub use cursor::{Cursor, Page};
pub use email::Email;
pub use text::{Name, Origin, Password, double_option};
