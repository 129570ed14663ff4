//! Relays from the client's side: talking to one ([`RelayClient`]), the
//! set a user has chosen ([`RelaySet`]), and which URLs may be reached
//! ([`Transport`]).

mod api;
mod head;
mod set;
mod transport;

pub(crate) use api::http_client;
pub use api::{
    AuditOutcome, Claimed, Deleted, HeadWrite, Held, RedirectPolicy, RelayClient, fetch_info,
};
pub use head::{Head, Role, sign_owned};
pub use set::{RelayEntry, RelaySet, normalize_url};
pub use transport::{Transport, check_transport};
