//! The stable, machine-readable codes of relay error responses
//! (docs/PROTOCOL.md §7.1): the relay writes them, clients act on them,
//! and both name them through this one type instead of string literals.

use std::fmt;
use std::str::FromStr;

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// The `code` of a relay's error response.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order of PROTOCOL.md §7.1.
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant,)*];

            /// The code as it travels.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }
        }
    };
}

error_codes! {
    /// Malformed request (bad header, bad query).
    BadRequest = "bad_request",
    /// The `{id}` in the path is not 64 lowercase hex characters.
    BadBlobId = "bad_blob_id",
    /// A signed record in the body does not decode or verify.
    BadRecord = "bad_record",
    /// `Authorization` missing, malformed, or not verifying.
    BadToken = "bad_token",
    /// The token's `expires_at` is in the past.
    TokenExpired = "token_expired",
    /// The token lives longer than the relay accepts.
    TokenLifetime = "token_lifetime",
    /// The token's nonce was already used.
    TokenReplayed = "token_replayed",
    /// The token is for another relay.
    WrongAudience = "wrong_audience",
    /// The token authorizes another method.
    WrongMethod = "wrong_method",
    /// The token authorizes another blob or path.
    WrongTarget = "wrong_target",
    /// The token's stamp carries fewer bits than the relay requires.
    PowRequired = "pow_required",
    /// A delete by a key that is not one of the blob's owners.
    NotOwner = "not_owner",
    /// A federation request by a key not on the relay's peer list.
    NotAPeer = "not_a_peer",
    /// No such blob (or head).
    NotFound = "not_found",
    /// Method not supported on this path.
    MethodNotAllowed = "method_not_allowed",
    /// The client sent too slowly.
    Timeout = "timeout",
    /// A head whose `seq` is not above the stored one.
    StaleHead = "stale_head",
    /// A claim of a blob that has the most owners already.
    TooManyOwners = "too_many_owners",
    /// Reserved: the relay requires `Content-Length`.
    LengthRequired = "length_required",
    /// The blob exceeds `max_blob_size`.
    TooLarge = "too_large",
    /// Unsatisfiable or multi-part `Range`.
    BadRange = "bad_range",
    /// The uploaded bytes do not hash to the id in the path.
    HashMismatch = "hash_mismatch",
    /// A request-rate limit was hit.
    RateLimited = "rate_limited",
    /// Shutting down, or too many uploads in progress.
    Unavailable = "unavailable",
    /// A scale-out relay's database or object store cannot be reached.
    BackendUnavailable = "backend_unavailable",
    /// The relay has no room.
    RelayFull = "relay_full",
    /// The uploading key's quota is used up.
    QuotaExceeded = "quota_exceeded",
    /// A fault in the relay.
    Internal = "internal",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A code this version does not define (a newer relay's).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownErrorCode(pub String);

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|code| code.as_str() == text)
            .ok_or_else(|| UnknownErrorCode(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_and_the_table_of_the_protocol_lists_each() {
        let protocol = include_str!("../../../docs/PROTOCOL.md");
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(*code));
            assert!(
                protocol.contains(&format!("| `{code}` |")),
                "{code} is not in PROTOCOL.md §7.1"
            );
        }
        assert!("no_such_code".parse::<ErrorCode>().is_err());
    }
}
