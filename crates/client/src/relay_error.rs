//! How one relay failed one request: the error every relay call returns,
//! apart from the client's [`crate::error::Error`] so that the record of
//! many relays' failures ([`crate::failures`]) can hold it without the
//! whole error type.

use std::io;

use cairn_proto::{BlobId, VerifyingKey};

pub use cairn_api::NetFailure;

/// How one relay failed a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The request did not complete (connection refused, reset, timeout…).
    #[error("unreachable ({why})")]
    Unreachable {
        /// How, in plain words.
        why: NetFailure,
        /// What the HTTP library said, with the URL asked for: shown only
        /// when asked for (`--verbose`), never in the message.
        detail: String,
    },
    /// The relay refused the request.
    #[error("{status} {code}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The machine-readable reason (PROTOCOL.md §7.1).
        code: String,
        /// The relay's explanation.
        message: String,
        /// Seconds the relay asked to wait before trying again.
        retry_after: Option<u64>,
    },
    /// The relay answered with something that breaks the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The relay signed with another key than the one pinned for it.
    #[error("presents key {presented}, but {pinned} is pinned for it")]
    KeyMismatch {
        /// The pinned key.
        pinned: VerifyingKey,
        /// The key it presented.
        presented: VerifyingKey,
    },
    /// The relay answered that it transferred the blob to a peer (PROTOCOL.md
    /// §7.3), and the redirect could not be followed: malformed, pointing
    /// at a relay that does not hold the key it names, too long a chain, or
    /// the peer failed.
    #[error("{0}")]
    Redirect(String),
    /// The relay holds a newer head in this device's own slot than the one
    /// sent. Only this device's key can write there (PROTOCOL.md §4.9), so
    /// the key signed elsewhere: a restored backup, or a stolen key.
    #[error(
        "holds a head at position {stored} in this device's own `{role}` slot, above the \
         {sent} it was sent: only this device's key can write there, so it is in use \
         elsewhere (a restored backup or a stolen key); if this device was not restored, \
         revoke it from another device"
    )]
    OwnSlotAhead {
        /// What the slot is for.
        role: &'static str,
        /// The position stored.
        stored: u64,
        /// The position sent.
        sent: u64,
    },
    /// The relay redirected a blob request to a relay the client may not be
    /// sent to (PROTOCOL.md §7.3): one neither in the user's relay set nor
    /// in the redirecting relay's signed peer list, or one reached by plain
    /// http off this machine without `--insecure`. Misbehaviour of the
    /// relay that redirected; the target is not contacted, and the message
    /// does not name it, so that nothing about it is kept.
    #[error("{0}")]
    RedirectRefused(String),
    /// The relay served bytes that do not hash to the blob id asked for.
    #[error("served bytes that do not match blob {0} (corrupt or lying relay)")]
    WrongBytes(BlobId),
    /// A local file error while sending or receiving.
    #[error("local I/O: {0}")]
    Local(io::Error),
}

impl From<io::Error> for RelayError {
    fn from(err: io::Error) -> Self {
        Self::Local(err)
    }
}

impl RelayError {
    /// A relay that did not answer within `secs` seconds.
    pub(crate) fn silent_for(secs: u64) -> Self {
        Self::Unreachable {
            why: NetFailure::TimedOut,
            detail: format!("no answer within {secs} s"),
        }
    }

    /// How the relay could not be reached, when that is what happened.
    pub fn net_failure(&self) -> Option<NetFailure> {
        match self {
            Self::Unreachable { why, .. } => Some(*why),
            _ => None,
        }
    }

    /// The HTTP library's account of an unreachable relay.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Unreachable { detail, .. } => Some(detail),
            _ => None,
        }
    }

    /// The relay's machine-readable refusal code, if it refused with one
    /// this version knows.
    pub fn code(&self) -> Option<cairn_proto::ErrorCode> {
        match self {
            Self::Refused { code, .. } => code.parse().ok(),
            _ => None,
        }
    }

    /// Whether the relay answered that it does not hold what was asked (a
    /// HEAD answer has no body to carry the `not_found` code).
    pub fn is_absent(&self) -> bool {
        matches!(self, Self::Refused { status: 404, .. })
            || self.code() == Some(cairn_proto::ErrorCode::NotFound)
    }
}
