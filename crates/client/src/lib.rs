//! The cairn client library.
//!
//! Authority in cairn lives with the client: it owns the keys, encrypts and
//! signs everything, picks relays and keeps redundancy. This crate is where
//! that logic lives, so that the `cairn` CLI stays a thin shell and other
//! programs can embed the same client.
//!
//! - [`Client`]: one device of an identity: create or open it, manage its
//!   relays, store and fetch files.
//! - [`seal`]: the sealed-blob format (padding + age), usable on its own.
//! - [`relay::RelayClient`]: one relay's HTTP API, every answer verified.
//! - [`keys`]: how device, vault, mailbox and upload keys relate.

mod chunk_index;
pub mod chunking;
mod client;
pub mod crdt;
mod error;
mod failures;
mod files;
pub mod folder;
mod fork;
mod home;
mod identity;
mod keyfile;
pub mod keys;
mod layout;
pub mod manifest;
mod pairing;
mod progress;
pub mod recovery;
pub mod relay;
mod relay_copy;
mod relay_error;
pub mod scores;
pub mod seal;
pub mod text;
mod text_serde;

pub use cairn_proto as proto;
// The client's source of time (`Client::set_clock`), shared with relays:
// tests and simulations use it without depending on cairn-api.
pub use cairn_api::Clock;
// What `Client::repair` does with copies on relays that do not answer:
// part of its signature, so callers need not depend on cairn-policy.
pub use cairn_policy::repair::{UNANSWERED_WAIT_SECS, Unanswered};
pub use client::{
    AuditReport, ByteRange, Client, CopiesCheck, DEFAULT_AUDIT_CHUNKS, DEFAULT_REPLICAS,
    DeviceSync, Enrolled, ExportFailure, ExportReport, Exported, FileInfo, Finding, FolderInfo,
    FolderPass, FolderRestored, FolderStatus, FolderVersion, GetReport, InitOptions, Listing,
    MetadataReport, Offline, Output, PutReport, RangeSpec, RelayAdded, RelayAudit, RelayCheck,
    RelaySync, RemoveReport, RepairReport, Restored, Revoked, RevokedDevice, RotateReport, Rotated,
    StatusReport, SyncReport, Transfer, TransferCheck, Unchecked,
};
pub use error::{Error, NetFailure, RelayError, Result};
pub use failures::{Failure, Failures};
pub use files::{Copy, FileEntry, MAX_NAME_LEN, Place, check_name};
pub use home::{Home, HomeLock};
pub use identity::IdentityLog;
pub use keyfile::{KdfCost, Passphrase};
pub use pairing::PairingCode;
pub use progress::{Progress, Silent};

/// Entry points for the fuzz targets in `fuzz/`: they reach parsers of
/// untrusted bytes that are otherwise private. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::identity::fuzz_log_copy as log_copy;
    pub use crate::pairing::fuzz_messages as pairing_messages;
    pub use crate::relay_copy::fuzz_relay_copy as relay_copy;
}
