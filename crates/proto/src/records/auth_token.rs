use std::fmt;

use crate::batch::BatchDigest;
use crate::blob_id::BlobId;
use crate::codec::{Reader, Writer};
use crate::envelope::{Record as _, impl_record};
use crate::error::DecodeError;
use crate::fields::{RequestPath, Timestamp};
use crate::keys::VerifyingKey;
use crate::kind::RecordKind;

/// The HTTP method a token authorizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `POST` (relay-to-relay federation requests).
    Post,
}

impl Method {
    /// The method as HTTP spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Post => "POST",
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::Get => 1,
            Self::Head => 2,
            Self::Put => 3,
            Self::Delete => 4,
            Self::Post => 5,
        }
    }

    fn from_code(code: u8) -> Result<Self, DecodeError> {
        match code {
            1 => Ok(Self::Get),
            2 => Ok(Self::Head),
            3 => Ok(Self::Put),
            4 => Ok(Self::Delete),
            5 => Ok(Self::Post),
            tag => Err(DecodeError::UnknownTag {
                field: "method",
                tag,
            }),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a token authorizes access to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenTarget {
    /// One blob, `/v1/blobs/{id}`.
    Blob(BlobId),
    /// Any other resource, by exact request path.
    Path(RequestPath),
    /// A batch upload (`POST /v1/blobs`) of exactly the blobs whose ids
    /// have this digest ([`crate::BatchHeader::digest`]).
    Batch(BatchDigest),
}

/// 16 random bytes that make each token unique; relays refuse a nonce they
/// have seen before the token expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nonce(pub [u8; 16]);

/// A short-lived authorization for one request, signed by the client key that
/// acts (and, for an upload, will own the blob).
///
/// Bound to one relay (`audience`), one method, one target, an expiry and a
/// nonce, so a token captured in transit cannot be used elsewhere, for
/// anything else, later, or twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthToken {
    /// The relay the token is for.
    pub audience: VerifyingKey,
    /// The method it authorizes.
    pub method: Method,
    /// The resource it authorizes.
    pub target: TokenTarget,
    /// Moment after which the token is refused.
    pub expires_at: Timestamp,
    /// Makes the token unique.
    pub nonce: Nonce,
    /// Proof-of-work counter; see [`AuthToken::stamp_bits`].
    pub stamp: u64,
}

mod target_tag {
    pub(super) const BLOB: u8 = 1;
    pub(super) const PATH: u8 = 2;
    pub(super) const BATCH: u8 = 3;
}

/// Domain-separation string of the proof-of-work hash.
const POW_DOMAIN: &[u8] = b"cairn/v1/pow-stamp\0";

impl AuthToken {
    pub(crate) fn encode(&self, w: &mut Writer) {
        self.audience.encode(w);
        w.u8(self.method.code());
        match &self.target {
            TokenTarget::Blob(id) => {
                w.u8(target_tag::BLOB);
                w.fixed(id.as_bytes());
            }
            TokenTarget::Path(path) => {
                w.u8(target_tag::PATH);
                path.encode(w);
            }
            TokenTarget::Batch(digest) => {
                w.u8(target_tag::BATCH);
                w.fixed(&digest.0);
            }
        }
        self.expires_at.encode(w);
        w.fixed(&self.nonce.0);
        w.u64(self.stamp);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let audience = VerifyingKey::decode(r)?;
        let method = Method::from_code(r.u8()?)?;
        let target = match r.u8()? {
            target_tag::BLOB => TokenTarget::Blob(BlobId::from_bytes(r.array()?)),
            target_tag::PATH => TokenTarget::Path(RequestPath::decode(r)?),
            target_tag::BATCH => TokenTarget::Batch(BatchDigest(r.array()?)),
            tag => {
                return Err(DecodeError::UnknownTag {
                    field: "token target",
                    tag,
                });
            }
        };
        Ok(Self {
            audience,
            method,
            target,
            expires_at: Timestamp::decode(r)?,
            nonce: Nonce(r.array()?),
            stamp: r.u64()?,
        })
    }

    fn required_signer(&self) -> Option<&VerifyingKey> {
        None
    }

    /// The proof of work this token carries when signed by `signer`: the
    /// number of leading zero bits of
    /// `BLAKE3("cairn/v1/pow-stamp" 0x00 || signer || payload)`.
    ///
    /// Binding the signer means a stamp minted for one key is worthless for
    /// any other, so work cannot be shared across a flood of fresh keys.
    pub fn stamp_bits(&self, signer: &VerifyingKey) -> u32 {
        Self::payload_stamp_bits(signer, &self.to_payload())
    }

    /// [`AuthToken::stamp_bits`] over payload bytes exactly as received (a
    /// verifier hashes what it was sent, never a re-encoding).
    pub fn payload_stamp_bits(signer: &VerifyingKey, payload: &[u8]) -> u32 {
        let mut hasher = blake3::Hasher::new();
        hasher.update(POW_DOMAIN);
        hasher.update(&signer.to_bytes());
        hasher.update(payload);
        leading_zero_bits(hasher.finalize().as_bytes())
    }

    /// Searches for a `stamp` giving at least `bits` bits of work for
    /// `signer`, trying at most `max_attempts` values. Returns whether one
    /// was found; on success `self.stamp` holds it.
    ///
    /// Expected cost is `2^bits` hashes of about 100 bytes each.
    pub fn mint_stamp(&mut self, signer: &VerifyingKey, bits: u8, max_attempts: u64) -> bool {
        for stamp in 0..max_attempts {
            self.stamp = stamp;
            if self.stamp_bits(signer) >= u32::from(bits) {
                return true;
            }
        }
        false
    }
}

fn leading_zero_bits(hash: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for byte in hash {
        if *byte == 0 {
            bits += 8;
        } else {
            bits += byte.leading_zeros();
            break;
        }
    }
    bits
}

impl_record!(AuthToken, RecordKind::AuthToken);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;

    #[test]
    fn leading_zero_bits_counts_across_bytes() {
        let mut hash = [0u8; 32];
        hash[2] = 0b0001_0000;
        assert_eq!(leading_zero_bits(&hash), 19);
        assert_eq!(leading_zero_bits(&[0; 32]), 256);
    }

    #[test]
    fn a_minted_stamp_is_bound_to_its_signer() {
        let signer = SigningKey::from_seed(&[1; 32]).verifying_key();
        let other = SigningKey::from_seed(&[2; 32]).verifying_key();
        let mut token = AuthToken {
            audience: SigningKey::from_seed(&[3; 32]).verifying_key(),
            method: Method::Put,
            target: TokenTarget::Blob(BlobId::of(b"x")),
            expires_at: Timestamp(100),
            nonce: Nonce([4; 16]),
            stamp: 0,
        };
        assert!(token.mint_stamp(&signer, 12, 1 << 20));
        assert!(token.stamp_bits(&signer) >= 12);
        // For another key the same stamp is (with overwhelming probability,
        // and for these fixed seeds certainly) not worth 12 bits.
        assert!(token.stamp_bits(&other) < 12);
    }
}
