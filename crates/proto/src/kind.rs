//! The kinds of signed record, and the envelope format version they are
//! bound to: the two facts every other part of the crate names (the
//! envelope, its errors, the identity log), kept apart so that none of
//! them imports another to learn them.

use std::fmt;

/// The envelope format version this implementation reads and writes.
pub const FORMAT_VERSION: u8 = 1;

/// What a signed record is. The kind selects the payload's schema and is
/// bound into the signature through its domain-separation string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RecordKind {
    /// [`crate::DeviceCertificate`].
    DeviceCertificate,
    /// [`crate::Revocation`].
    Revocation,
    /// [`crate::IdentityLogEntry`].
    IdentityLogEntry,
    /// [`crate::HeadRecord`].
    Head,
    /// [`crate::RelayInfo`].
    RelayInfo,
    /// [`crate::AuthToken`].
    AuthToken,
    /// [`crate::TransferReceipt`].
    TransferReceipt,
    /// [`crate::Operation`].
    Operation,
    /// [`crate::OwnedHead`].
    OwnedHead,
}

impl RecordKind {
    /// Every kind, in code order.
    pub const ALL: [RecordKind; 9] = [
        Self::DeviceCertificate,
        Self::Revocation,
        Self::IdentityLogEntry,
        Self::Head,
        Self::RelayInfo,
        Self::AuthToken,
        Self::TransferReceipt,
        Self::Operation,
        Self::OwnedHead,
    ];

    /// The kind's one-byte code in the envelope.
    pub const fn code(self) -> u8 {
        match self {
            Self::DeviceCertificate => 1,
            Self::Revocation => 2,
            Self::IdentityLogEntry => 3,
            Self::Head => 4,
            Self::RelayInfo => 5,
            Self::AuthToken => 6,
            Self::TransferReceipt => 7,
            Self::Operation => 8,
            Self::OwnedHead => 9,
        }
    }

    /// The kind's name in its domain-separation string.
    pub const fn name(self) -> &'static str {
        match self {
            Self::DeviceCertificate => "device-certificate",
            Self::Revocation => "revocation",
            Self::IdentityLogEntry => "identity-log-entry",
            Self::Head => "head",
            Self::RelayInfo => "relay-info",
            Self::AuthToken => "auth-token",
            Self::TransferReceipt => "transfer-receipt",
            Self::Operation => "operation",
            Self::OwnedHead => "owned-head",
        }
    }

    /// The kind with code `code`, if this version defines one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// `cairn/v1/<name>`: what a signature of this kind is bound to.
    pub fn domain(self) -> String {
        format!("cairn/v{FORMAT_VERSION}/{}", self.name())
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
