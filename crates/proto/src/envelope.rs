//! The signed-record envelope that carries every record kind.
//!
//! ```text
//! version u8 | kind u8 | signer [32] | payload_len u32 | payload | signature [64]
//! ```
//!
//! The signature covers `cairn/v1/<kind name>`, one zero byte, and the payload
//! bytes exactly as they travel. Verification checks those bytes and only then
//! decodes them; it never re-serializes a decoded value, so there is no way
//! for two encodings of "the same" record to be confused.

use std::fmt;
use std::marker::PhantomData;

use crate::codec::{Reader, Writer, decode_all};
use crate::error::{DecodeError, ParseError, VerifyError};
use crate::keys::{Signature, Signer, VerifyingKey};
use crate::kind::{FORMAT_VERSION, RecordKind};
use crate::text::{decode_base64url, encode_base64url};

/// The most payload bytes an envelope may carry (128 KiB).
pub const MAX_PAYLOAD_LEN: usize = 128 * 1024;

/// The most bytes an encoded envelope may have.
pub const MAX_ENVELOPE_LEN: usize = 1 + 1 + 32 + 4 + MAX_PAYLOAD_LEN + 64;

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// A record type that travels inside a [`SignedRecord`].
///
/// Implemented by the record types of this crate only; the set of kinds is
/// part of the protocol, not an extension point.
pub trait Record: sealed::Sealed + Sized {
    /// The envelope kind that carries this record.
    const KIND: RecordKind;

    /// The canonical payload bytes. For a record that breaks a rule (a list
    /// too long, an unsorted key list) the bytes do not decode;
    /// [`SignedRecord::sign`] checks.
    fn to_payload(&self) -> Vec<u8>;

    /// Decodes and validates canonical payload bytes.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if `bytes` is not exactly one valid record.
    fn from_payload(bytes: &[u8]) -> Result<Self, DecodeError>;

    /// The key that must have signed this record, when the record itself
    /// names it (a relay signs its own info document; a mailbox key signs its
    /// heads). `None` when the caller decides who may sign.
    fn required_signer(&self) -> Option<&VerifyingKey> {
        None
    }

    /// Rules that depend on the signer beyond [`Record::required_signer`]
    /// (an owned head's slot is derived from its signer). Checked by
    /// [`SignedRecord::sign`] and [`SignedRecord::verify`] after the
    /// required signer.
    ///
    /// # Errors
    ///
    /// [`VerifyError`] naming the rule `signer` breaks.
    fn check_signer(&self, _signer: &VerifyingKey) -> Result<(), VerifyError> {
        Ok(())
    }
}

/// Implements [`Record`] for a type with `encode` / `decode` methods.
macro_rules! impl_record {
    ($ty:ty, $kind:expr, check = $check:expr) => {
        $crate::envelope::impl_record!($ty, $kind, {
            fn check_signer(
                &self,
                signer: &$crate::keys::VerifyingKey,
            ) -> Result<(), $crate::error::VerifyError> {
                $check(self, signer)
            }
        });
    };
    ($ty:ty, $kind:expr) => {
        $crate::envelope::impl_record!($ty, $kind, {});
    };
    ($ty:ty, $kind:expr, { $($extra:tt)* }) => {
        impl $crate::envelope::sealed::Sealed for $ty {}
        impl $crate::envelope::Record for $ty {
            const KIND: $crate::RecordKind = $kind;

            fn to_payload(&self) -> Vec<u8> {
                let mut w = $crate::codec::Writer::new();
                self.encode(&mut w);
                w.into_bytes()
            }

            fn from_payload(bytes: &[u8]) -> Result<Self, $crate::error::DecodeError> {
                $crate::codec::decode_all(bytes, Self::decode)
            }

            fn required_signer(&self) -> Option<&$crate::keys::VerifyingKey> {
                Self::required_signer(self)
            }

            $($extra)*
        }
    };
}
pub(crate) use impl_record;

/// A decoded envelope whose signature has *not* been checked yet.
///
/// The only way to the record inside is [`SignedRecord::verify`], which
/// returns a [`Verified`] wrapper that no other code can construct.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRecord {
    kind: RecordKind,
    signer: VerifyingKey,
    payload: Vec<u8>,
    signature: Signature,
}

impl SignedRecord {
    /// Signs `record` with `key`.
    ///
    /// Record fields are public, so a record can be built that breaks a rule
    /// of the protocol (too many peers, an unsorted list, a field that names
    /// another signer). Such a record is refused here, before anything is
    /// signed: a signed record that no verifier accepts could, for example,
    /// break an append-only identity log for good.
    ///
    /// # Errors
    ///
    /// [`VerifyError::Payload`] if the record's encoding does not decode as a
    /// valid record, [`VerifyError::SignerMismatch`] if the record names a
    /// signer other than `key`.
    pub fn sign<R: Record, K: Signer>(record: &R, key: &K) -> Result<Self, VerifyError> {
        let payload = record.to_payload();
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(VerifyError::Payload(DecodeError::TooLong {
                field: "payload",
                len: payload.len(),
                max: MAX_PAYLOAD_LEN,
            }));
        }
        let decoded = R::from_payload(&payload)?;
        let signer = key.verifying_key();
        if decoded.required_signer().is_some_and(|k| *k != signer) {
            return Err(VerifyError::SignerMismatch);
        }
        decoded.check_signer(&signer)?;
        let signature = key.sign_message(&signing_input(R::KIND, &payload));
        Ok(Self {
            kind: R::KIND,
            signer,
            payload,
            signature,
        })
    }

    /// Signs arbitrary payload bytes as a record of `kind`, without checking
    /// that they decode as one.
    ///
    /// For tools and tests that must produce validly signed *malformed*
    /// records (a fault-injecting relay, a decoder test); everything else
    /// should use [`SignedRecord::sign`]. Verification still decodes the
    /// payload, so such a record never passes [`SignedRecord::verify`]
    /// unless the bytes are in fact a valid record.
    ///
    /// # Errors
    ///
    /// [`DecodeError::TooLong`] if the payload exceeds [`MAX_PAYLOAD_LEN`].
    pub fn sign_raw<K: Signer>(
        kind: RecordKind,
        payload: Vec<u8>,
        key: &K,
    ) -> Result<Self, DecodeError> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(DecodeError::TooLong {
                field: "payload",
                len: payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        let signature = key.sign_message(&signing_input(kind, &payload));
        Ok(Self {
            kind,
            signer: key.verifying_key(),
            payload,
            signature,
        })
    }

    /// The record kind the envelope claims.
    pub fn kind(&self) -> RecordKind {
        self.kind
    }

    /// The key the envelope claims signed it.
    pub fn signer(&self) -> &VerifyingKey {
        &self.signer
    }

    /// The payload bytes exactly as carried.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The signature as carried.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The bytes the signature covers: domain, a zero byte, payload.
    pub fn signing_input(&self) -> Vec<u8> {
        signing_input(self.kind, &self.payload)
    }

    /// Checks the signature over the carried bytes, then decodes the payload
    /// as an `R` and checks that the record's required signer (if any) is the
    /// key that signed it.
    ///
    /// # Errors
    ///
    /// [`VerifyError`] naming the first check that failed.
    pub fn verify<R: Record>(&self) -> Result<Verified<R>, VerifyError> {
        if self.kind != R::KIND {
            return Err(VerifyError::WrongKind {
                expected: R::KIND,
                found: self.kind,
            });
        }
        if !self
            .signer
            .verify_strict(&self.signing_input(), &self.signature)
        {
            return Err(VerifyError::BadSignature);
        }
        let record = R::from_payload(&self.payload)?;
        if record.required_signer().is_some_and(|k| *k != self.signer) {
            return Err(VerifyError::SignerMismatch);
        }
        record.check_signer(&self.signer)?;
        Ok(Verified {
            record,
            envelope: self.clone(),
            _proof: PhantomData,
        })
    }

    /// The canonical envelope bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(FORMAT_VERSION);
        w.u8(self.kind.code());
        self.signer.encode(&mut w);
        w.bytes32(&self.payload);
        w.fixed(&self.signature.0);
        w.into_bytes()
    }

    /// Decodes envelope bytes. Does not check the signature.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if `bytes` is not exactly one canonical envelope.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_all(bytes, Self::decode)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let code = r.u8()?;
        let kind = RecordKind::from_code(code).ok_or(DecodeError::UnknownTag {
            field: "record kind",
            tag: code,
        })?;
        let signer = VerifyingKey::decode(r)?;
        let payload = r.bytes32("payload", MAX_PAYLOAD_LEN)?.to_vec();
        let signature = Signature(r.array()?);
        Ok(Self {
            kind,
            signer,
            payload,
            signature,
        })
    }

    /// The envelope as unpadded base64url, for HTTP headers.
    pub fn to_base64url(&self) -> String {
        encode_base64url(&self.to_bytes())
    }

    /// Parses the form produced by [`SignedRecord::to_base64url`].
    ///
    /// # Errors
    ///
    /// [`ParseError`] if the text is not canonical base64url of a canonical
    /// envelope.
    pub fn from_base64url(text: &str) -> Result<Self, ParseError> {
        let bytes = decode_base64url(text, MAX_ENVELOPE_LEN)?;
        Ok(Self::from_bytes(&bytes)?)
    }
}

impl fmt::Debug for SignedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRecord")
            .field("kind", &self.kind)
            .field("signer", &self.signer)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

fn signing_input(kind: RecordKind, payload: &[u8]) -> Vec<u8> {
    let domain = kind.domain();
    let mut input = Vec::with_capacity(domain.len() + 1 + payload.len());
    input.extend_from_slice(domain.as_bytes());
    input.push(0);
    input.extend_from_slice(payload);
    input
}

/// A record whose signature has been checked: proof that `signer` signed
/// exactly these payload bytes. Only [`SignedRecord::verify`] creates one.
#[derive(Clone, Debug)]
pub struct Verified<R> {
    record: R,
    envelope: SignedRecord,
    // Keeps the struct from being built by struct-literal syntax elsewhere
    // even if every other field were public.
    _proof: PhantomData<()>,
}

impl<R> Verified<R> {
    /// The verified record.
    pub fn record(&self) -> &R {
        &self.record
    }

    /// The key that signed it.
    pub fn signer(&self) -> &VerifyingKey {
        &self.envelope.signer
    }

    /// The envelope it arrived in, for storing or forwarding as-is.
    pub fn envelope(&self) -> &SignedRecord {
        &self.envelope
    }

    /// Unwraps the record, dropping the proof.
    pub fn into_record(self) -> R {
        self.record
    }
}

impl<R> std::ops::Deref for Verified<R> {
    type Target = R;

    fn deref(&self) -> &R {
        &self.record
    }
}
