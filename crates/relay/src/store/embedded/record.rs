//! One blob's row in the index (`blobs_v2`): its [`BlobMeta`], whom the
//! relay holds it from, and, for a small blob, its body.
//!
//! Version 1 kept these in three tables keyed by the blob's (random) id,
//! so every upload dirtied three pages of the B-trees besides the access
//! order's; one row dirties one. The source rows in `sources_v1` stay
//! (reconciliation reads one source's ids as a sorted range).
//!
//! Layout: the 56-byte meta, a big-endian `u16` source count, each source's
//! 32 bytes, then a tag byte: 0 for a body in a file, 1 for a body that
//! follows to the end of the row.

use crate::store::error::StoreError;
use crate::store::model::{BlobMeta, SourceKey};

const META: usize = 56;
const TAG_FILE: u8 = 0;
const TAG_INLINE: u8 = 1;

/// A decoded `blobs_v2` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlobRow {
    pub(crate) meta: BlobMeta,
    /// Whom the relay holds the blob from, each once.
    pub(crate) sources: Vec<SourceKey>,
    /// The body, when it lives in the index; `None` when it is a file.
    pub(crate) body: Option<Vec<u8>>,
}

impl BlobRow {
    pub(crate) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let count = u16::try_from(self.sources.len()).map_err(|_| {
            StoreError::Failed(format!(
                "a blob would have {} sources, more than a row holds",
                self.sources.len()
            ))
        })?;
        let body = self.body.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(META + 2 + 32 * self.sources.len() + 1 + body.len());
        out.extend_from_slice(&self.meta.encode());
        out.extend_from_slice(&count.to_be_bytes());
        for source in &self.sources {
            out.extend_from_slice(&source.to_row());
        }
        match &self.body {
            None => out.push(TAG_FILE),
            Some(body) => {
                out.push(TAG_INLINE);
                out.extend_from_slice(body);
            }
        }
        Ok(out)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let meta = meta_of(bytes)?;
        let count = bytes
            .get(META..META + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .ok_or_else(damaged)?;
        let sources_end = META + 2 + 32 * count;
        let sources = bytes
            .get(META + 2..sources_end)
            .ok_or_else(damaged)?
            .chunks_exact(32)
            .map(|raw| {
                let mut row = [0u8; 32];
                row.copy_from_slice(raw);
                SourceKey::from_row(row)
            })
            .collect();
        let body = match bytes.get(sources_end) {
            Some(&TAG_FILE) if bytes.len() == sources_end + 1 => None,
            Some(&TAG_INLINE) => Some(bytes[sources_end + 1..].to_vec()),
            _ => return Err(damaged()),
        };
        Ok(Self {
            meta,
            sources,
            body,
        })
    }

    /// Adds `source` unless it is there already; true if it was added.
    pub(crate) fn add_source(&mut self, source: SourceKey) -> bool {
        if self.sources.contains(&source) {
            return false;
        }
        self.sources.push(source);
        true
    }
}

/// The meta at the front of an encoded row, without decoding the rest.
pub(crate) fn meta_of(bytes: &[u8]) -> Result<BlobMeta, StoreError> {
    let head: &[u8; META] = bytes
        .get(..META)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(damaged)?;
    Ok(BlobMeta::decode(head))
}

/// `row` with its meta replaced by `meta`; the rest is kept as it is.
pub(crate) fn with_meta(row: &[u8], meta: &BlobMeta) -> Result<Vec<u8>, StoreError> {
    if row.len() < META {
        return Err(damaged());
    }
    let mut out = row.to_vec();
    out[..META].copy_from_slice(&meta.encode());
    Ok(out)
}

/// Only this relay writes its index; a row it cannot read means the file
/// was damaged (and `cairn-relay fsck` is the next step).
fn damaged() -> StoreError {
    StoreError::Failed("a blob's index row is damaged; run `cairn-relay fsck`".into())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn meta(owner: bool) -> BlobMeta {
        BlobMeta {
            size: 1 << 40,
            created: 17,
            last_access: u64::MAX,
            owner: owner.then(|| cairn_proto::SigningKey::from_seed(&[5; 32]).verifying_key()),
        }
    }

    #[test]
    fn meta_round_trips_with_and_without_owner() {
        for owner in [true, false] {
            assert_eq!(BlobMeta::decode(&meta(owner).encode()), meta(owner));
        }
    }

    #[test]
    fn a_row_round_trips_and_its_meta_reads_alone() {
        let rows = [
            BlobRow {
                meta: meta(true),
                sources: vec![SourceKey::Clients],
                body: Some(b"hello".to_vec()),
            },
            BlobRow {
                meta: meta(false),
                sources: vec![SourceKey::Peer([7; 32]), SourceKey::Clients],
                body: None,
            },
            BlobRow {
                meta: meta(true),
                sources: vec![],
                body: Some(Vec::new()),
            },
        ];
        for row in rows {
            let bytes = row.encode().unwrap();
            assert_eq!(BlobRow::decode(&bytes).unwrap(), row);
            assert_eq!(meta_of(&bytes).unwrap(), row.meta);
            let mut touched = row.meta;
            touched.last_access = 3;
            let patched = BlobRow::decode(&with_meta(&bytes, &touched).unwrap()).unwrap();
            assert_eq!(patched.meta, touched);
            assert_eq!((patched.sources, patched.body), (row.sources, row.body));
        }
    }

    proptest! {
        /// Damaged bytes give an error, never a panic.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = BlobRow::decode(&bytes);
        }

        #[test]
        fn a_truncated_row_is_refused(cut in 0usize..57 + 2 + 32) {
            let row = BlobRow {
                meta: meta(true),
                sources: vec![SourceKey::Clients],
                body: None,
            };
            let bytes = row.encode().unwrap();
            prop_assert!(BlobRow::decode(&bytes[..cut.min(bytes.len() - 1)]).is_err());
        }
    }
}
