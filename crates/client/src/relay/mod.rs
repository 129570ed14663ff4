//! Relays from the client's side: talking to one ([`RelayClient`]) and the
//! set a user has chosen ([`RelaySet`]).

mod api;
mod head;
mod set;

pub use api::{AuditOutcome, Claimed, Deleted, HeadWrite, Held, RelayClient, fetch_info};
pub(crate) use api::{http_client, unix_now};
pub use head::{Head, Role, sign_owned};
pub use set::{RelayEntry, RelaySet, normalize_url};
