//! The record kinds carried in [`crate::SignedRecord`] envelopes.
//!
//! Each record is a plain struct with public fields plus a canonical
//! `encode` / `decode` pair; decoding validates every field, so a decoded
//! record is always a valid one. Field order in each struct is the order on
//! the wire.

mod auth_token;
mod device;
mod head;
mod identity_log;
mod operation;
mod owned_head;
mod receipt;
mod relay_info;

pub use auth_token::{AuthToken, Method, Nonce, TokenTarget};
pub use device::{DeviceCertificate, Revocation, RevocationReason};
pub use head::HeadRecord;
pub use identity_log::{
    DeviceWrappedKey, IdentityLogEntry, LogAction, MAX_ACTIVE_DEVICES, MAX_PREFERRED_RELAYS,
    RelayRef, WrappedKey, WrappedSecret,
};
pub use operation::{MAX_OPERATION_BODY, Operation};
pub use owned_head::{OwnedHead, grant, is_owned_slot, owned_label, owned_slot};
pub use receipt::TransferReceipt;
pub use relay_info::{FairShareLimits, MAX_PEERS, RelayInfo};
