//! Error types, one per operation: decoding bytes, parsing text, verifying
//! signatures. Every one of them describes bad *input*; nothing in this crate
//! fails for any other reason.

use crate::kind::RecordKind;

/// Bytes that are not the canonical encoding of the expected value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the value did.
    #[error("input truncated: needed {needed} more bytes, {available} available")]
    Truncated {
        /// Bytes the next item needed.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// Bytes were left over after a complete value.
    #[error("{count} trailing bytes after the value")]
    TrailingBytes {
        /// How many bytes were left.
        count: usize,
    },
    /// A length or count prefix exceeds the field's maximum.
    #[error("{field}: length {len} exceeds the maximum of {max}")]
    TooLong {
        /// The field being decoded.
        field: &'static str,
        /// The length the input claimed.
        len: usize,
        /// The largest length the protocol allows there.
        max: usize,
    },
    /// A text field is not valid UTF-8.
    #[error("{field}: not valid UTF-8")]
    InvalidUtf8 {
        /// The field being decoded.
        field: &'static str,
    },
    /// An enum or option tag this version of the protocol does not define.
    #[error("{field}: unknown tag {tag}")]
    UnknownTag {
        /// The field being decoded.
        field: &'static str,
        /// The tag byte found.
        tag: u8,
    },
    /// The envelope's format version is not one this implementation speaks.
    #[error("unsupported record format version {0}")]
    UnsupportedVersion(u8),
    /// A field decoded but its value breaks a rule of the protocol.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field being decoded.
        field: &'static str,
        /// Which rule it breaks.
        reason: &'static str,
    },
}

/// Text that is not a valid text form of the expected value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The text does not start with the type prefix of the expected kind of
    /// value (for example an X25519 key where an Ed25519 key was expected).
    #[error("expected a value starting with {expected:?}")]
    WrongPrefix {
        /// The prefix the expected kind of value carries.
        expected: &'static str,
    },
    /// The text has the wrong number of characters.
    #[error("expected {expected} characters, found {found}")]
    WrongLength {
        /// Characters the text form has.
        expected: usize,
        /// Characters found.
        found: usize,
    },
    /// A blob id contains a character other than `0-9` and `a-f`.
    #[error("not lowercase hexadecimal")]
    NotLowercaseHex,
    /// The text is not canonical unpadded base64url.
    #[error("not canonical unpadded base64url")]
    Base64,
    /// The text is longer than any valid value could be.
    #[error("text of {len} characters exceeds the maximum of {max}")]
    TooLong {
        /// Characters found.
        len: usize,
        /// The most a valid value can have.
        max: usize,
    },
    /// The text decoded to bytes that are not a valid value.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// A signed record that must not be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The record is of another kind than the caller expected.
    #[error("expected a {expected} record, found {found}")]
    WrongKind {
        /// The kind the caller asked for.
        expected: RecordKind,
        /// The kind the envelope carries.
        found: RecordKind,
    },
    /// The signature does not verify under the signer key.
    #[error("signature does not verify")]
    BadSignature,
    /// The record names a key that must sign it (a relay's own info document,
    /// a mailbox head), and another key signed it.
    #[error("signed by a key other than the one the record requires")]
    SignerMismatch,
    /// An owned head's grant is not the mailbox key's signature for its
    /// signer: the writer may not keep heads in that mailbox.
    #[error("the mailbox key did not grant this writer a slot")]
    BadGrant,
    /// An owned head's slot is not derived from its signer: a writer may
    /// write only its own slots.
    #[error("the slot does not belong to the key that signed the head")]
    NotOwnSlot,
    /// The signature is valid but the payload is not a valid record.
    #[error("invalid payload: {0}")]
    Payload(#[from] DecodeError),
}
