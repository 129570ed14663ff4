//! The batch upload's framing (docs/PROTOCOL.md §7.3, `POST /v1/blobs`):
//! many small blobs in one request under one token, which signs the digest
//! of their ids.
//!
//! A body is a header, then the blobs' bytes one after another:
//!
//! | item | encoding |
//! |---|---|
//! | count C | `u16`, 1 to [`MAX_BLOBS`] |
//! | entries | C × (`id [32]`, `len u32`), ids strictly ascending |
//! | bodies | the C blobs' bytes, in the entries' order, `len` each |
//!
//! The header is read, and checked against the token, before any blob's
//! bytes: it is at most [`MAX_HEADER_LEN`] bytes.

use crate::blob_id::BlobId;
use crate::codec::{Reader, Writer};
use crate::error::DecodeError;

/// Most blobs in one batch.
pub const MAX_BLOBS: usize = 1024;

/// Bytes of one header entry: an id and a `u32` length.
const ENTRY_LEN: usize = BlobId::LEN + 4;

/// The longest header: the count and [`MAX_BLOBS`] entries.
pub const MAX_HEADER_LEN: usize = 2 + MAX_BLOBS * ENTRY_LEN;

/// Key-derivation context of a batch's digest.
const DIGEST_CONTEXT: &str = "cairn/v1 batch upload ids";

/// What a batch holds: ids, strictly ascending, and the length of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    entries: Vec<(BlobId, u32)>,
}

/// The digest of a batch's ids, which its token signs
/// ([`crate::TokenTarget::Batch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchDigest(pub [u8; 32]);

impl BatchHeader {
    /// A header for `entries`, sorted here by id.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Invalid`] for no entries, more than [`MAX_BLOBS`], or
    /// one id twice.
    pub fn new(mut entries: Vec<(BlobId, u32)>) -> Result<Self, DecodeError> {
        entries.sort_unstable_by_key(|(id, _)| *id);
        Self::checked(entries)
    }

    fn checked(entries: Vec<(BlobId, u32)>) -> Result<Self, DecodeError> {
        let invalid = |reason| DecodeError::Invalid {
            field: "batch header",
            reason,
        };
        if entries.is_empty() {
            return Err(invalid("a batch holds at least one blob"));
        }
        if entries.len() > MAX_BLOBS {
            return Err(invalid("a batch holds at most 1024 blobs"));
        }
        if entries.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(invalid("ids must be distinct and ascending"));
        }
        Ok(Self { entries })
    }

    /// The ids and lengths, ascending by id.
    pub fn entries(&self) -> &[(BlobId, u32)] {
        &self.entries
    }

    /// Bytes of the blobs after the header, in all.
    pub fn body_len(&self) -> u64 {
        self.entries.iter().map(|(_, len)| u64::from(*len)).sum()
    }

    /// Bytes of the encoded header.
    pub fn encoded_len(&self) -> usize {
        2 + self.entries.len() * ENTRY_LEN
    }

    /// What the batch's token signs: BLAKE3 in key-derivation mode, context
    /// `"cairn/v1 batch upload ids"`, over the ids in order. Lengths are not
    /// signed: a wrong length only makes its blob's hash fail.
    pub fn digest(&self) -> BatchDigest {
        let mut hasher = blake3::Hasher::new_derive_key(DIGEST_CONTEXT);
        for (id, _) in &self.entries {
            hasher.update(id.as_bytes());
        }
        BatchDigest(*hasher.finalize().as_bytes())
    }

    /// The header's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        // At most MAX_BLOBS entries: a u16.
        w.u16(u16::try_from(self.entries.len()).unwrap_or(u16::MAX));
        for (id, len) in &self.entries {
            w.fixed(id.as_bytes());
            w.u32(*len);
        }
        w.into_bytes()
    }

    /// How many bytes the header at the start of `prefix` takes, once
    /// `prefix` holds its count; `None` while it is too short to say.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Invalid`] for a count of 0 or above [`MAX_BLOBS`].
    pub fn len_from_prefix(prefix: &[u8]) -> Result<Option<usize>, DecodeError> {
        let Some(count) = prefix.get(..2) else {
            return Ok(None);
        };
        let count = usize::from(u16::from_be_bytes([count[0], count[1]]));
        if count == 0 || count > MAX_BLOBS {
            return Err(DecodeError::Invalid {
                field: "batch header",
                reason: "a batch holds 1 to 1024 blobs",
            });
        }
        Ok(Some(2 + count * ENTRY_LEN))
    }

    /// Reads a header that is exactly `bytes`.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a count of 0 or above [`MAX_BLOBS`], bytes
    /// missing or left over, or ids not strictly ascending.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_HEADER_LEN {
            return Err(DecodeError::Invalid {
                field: "batch header",
                reason: "longer than 1024 entries",
            });
        }
        let mut r = Reader::new(bytes);
        let count = usize::from(r.u16()?);
        if count == 0 || count > MAX_BLOBS {
            return Err(DecodeError::Invalid {
                field: "batch header",
                reason: "a batch holds 1 to 1024 blobs",
            });
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push((BlobId::from_bytes(r.array()?), r.u32()?));
        }
        r.finish()?;
        Self::checked(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(n: u32) -> BatchHeader {
        BatchHeader::new(
            (0..n)
                .map(|i| (BlobId::of(&i.to_le_bytes()), i * 10))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_header_reads_back_and_its_length_shows_in_its_first_two_bytes() {
        let h = header(5);
        let bytes = h.encode();
        assert_eq!(bytes.len(), h.encoded_len());
        assert_eq!(BatchHeader::len_from_prefix(&bytes[..1]), Ok(None));
        assert_eq!(
            BatchHeader::len_from_prefix(&bytes[..2]),
            Ok(Some(bytes.len()))
        );
        assert_eq!(BatchHeader::decode(&bytes), Ok(h.clone()));
        assert_eq!(h.body_len(), 100);
    }

    #[test]
    fn the_digest_names_the_ids_in_order() {
        let (a, b) = (header(3), header(4));
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), header(3).digest());
    }

    #[test]
    fn malformed_headers_are_refused() {
        let good = header(3).encode();
        // Count 0, count above the maximum, truncated, trailing byte.
        assert!(BatchHeader::decode(&[0, 0]).is_err());
        assert!(BatchHeader::len_from_prefix(&[0x04, 0x01]).is_err());
        assert!(BatchHeader::decode(&good[..good.len() - 1]).is_err());
        let mut long = good.clone();
        long.push(0);
        assert!(BatchHeader::decode(&long).is_err());
        // Ids out of order, or twice.
        let mut swapped = good.clone();
        swapped[2..2 + ENTRY_LEN * 2].rotate_left(ENTRY_LEN);
        assert!(BatchHeader::decode(&swapped).is_err());
        let id = BlobId::of(b"x");
        assert!(BatchHeader::new(vec![(id, 1), (id, 1)]).is_err());
        assert!(BatchHeader::new(Vec::new()).is_err());
    }
}
