//! The cairn protocol core: blob ids, keys, signed records and their
//! canonical encoding.
//!
//! This crate is what relays, clients and outside verifiers must agree on, so
//! it does no I/O, spawns nothing and depends on no runtime. It turns bytes
//! into typed records and back, and it signs and verifies. docs/PROTOCOL.md
//! is the normative description of every byte; the test vectors in
//! `tests/vectors/` are checked against this code.
//!
//! # Overview
//!
//! - [`BlobId`]: the BLAKE3-256 hash of a stored blob's bytes.
//! - [`SigningKey`], [`VerifyingKey`], [`X25519PublicKey`]: keys, each with a
//!   type-prefixed text form (`ed25519:…`, `x25519:…`).
//! - [`SignedRecord`]: the envelope every record travels in. It is inert
//!   until [`SignedRecord::verify`] checks the signature and yields a
//!   [`Verified`] record, the only way to get at the contents.
//! - Records: [`DeviceCertificate`], [`Revocation`], [`IdentityLogEntry`],
//!   [`HeadRecord`], [`RelayInfo`], [`AuthToken`], [`TransferReceipt`].
//! - [`verify_identity_log`]: checks a whole identity log and returns the
//!   device set and vault generation it leads to.
//! - [`reconcile`]: range-based set reconciliation of two blob-id sets, with
//!   traffic proportional to their difference rather than their size.
//! - [`audit`]: storage audits, BLAKE3 proofs of random 1 KiB chunks of a
//!   blob checked against nothing but its id and size.
//!
//! # Example
//!
//! ```
//! use cairn_proto::{BlobId, HeadRecord, SignedRecord, SigningKey, Slot, Timestamp};
//!
//! let mailbox = SigningKey::from_seed(&[42; 32]);
//! let head = HeadRecord {
//!     mailbox: mailbox.verifying_key(),
//!     slot: Slot::new("laptop")?,
//!     seq: 7,
//!     target: BlobId::of(b"encrypted operation"),
//!     timestamp: Timestamp(1_790_000_000),
//! };
//!
//! // Sign and send as an HTTP-safe string...
//! let text = SignedRecord::sign(&head, &mailbox)?.to_base64url();
//!
//! // ...and on the other side, decode and verify before looking inside.
//! let received = SignedRecord::from_base64url(&text)?;
//! let verified = received.verify::<HeadRecord>()?;
//! assert_eq!(verified.seq, 7);
//! assert_eq!(verified.signer(), &mailbox.verifying_key());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod audit;
mod batch;
mod blob_id;
mod codec;
mod envelope;
mod error;
mod error_code;
mod fields;
mod identity;
mod key_cache;
mod keys;
mod kind;
pub mod reconcile;
mod records;
mod text;
pub mod wire;

pub use batch::{
    BatchDigest, BatchHeader, MAX_BLOBS as MAX_BATCH_BLOBS, MAX_HEADER_LEN as MAX_BATCH_HEADER_LEN,
};
pub use blob_id::BlobId;
pub use envelope::{MAX_ENVELOPE_LEN, MAX_PAYLOAD_LEN, Record, SignedRecord, Verified};
pub use error::{DecodeError, ParseError, VerifyError};
pub use error_code::{ErrorCode, UnknownErrorCode};
pub use fields::{DeviceName, RelayUrl, RequestPath, Slot, SoftwareVersion, Timestamp};
pub use identity::{
    Device, IdentityState, LogError, LogErrorKind, VaultKeyInfo, verify_identity_log,
};
pub use keys::{
    BlindedSigningKey, BlindingFactor, SIGNING_KEY_PREFIX, Signature, Signer, SigningKey,
    VERIFYING_KEY_PREFIX, VerifyingKey, X25519_PREFIX, X25519PublicKey,
};
pub use kind::{FORMAT_VERSION, RecordKind};
pub use records::{
    AuthToken, DeviceCertificate, DeviceWrappedKey, FairShareLimits, HeadRecord, IdentityLogEntry,
    LogAction, MAX_ACTIVE_DEVICES, MAX_OPERATION_BODY, MAX_PEERS, MAX_PREFERRED_RELAYS, Method,
    Nonce, Operation, OwnedHead, RelayInfo, RelayRef, Revocation, RevocationReason, TokenTarget,
    TransferReceipt, WrappedKey, WrappedSecret,
};
pub use records::{grant as head_grant, is_owned_slot, owned_label, owned_slot};
pub use text::{decode_base64url, encode_base64url};
