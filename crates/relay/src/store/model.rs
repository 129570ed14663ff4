//! The store's model, the same for both backends: what the relay knows of
//! a blob, a head and a forwarding record, and the rows a store is exported
//! and imported as. The embedded index (`index`, redb) and the scale-out
//! index (`postgres`) each keep these in their own tables; neither takes
//! its types from the other.

use cairn_proto::{BlobId, Slot, VerifyingKey};

/// The source of blobs uploaded by clients: all zeros, which is never a
/// valid (peer) key.
pub(crate) const CLIENT_SOURCE: [u8; 32] = [0; 32];

/// Where responsibility for a blob went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Forward {
    pub(crate) peer: VerifyingKey,
    pub(crate) url: String,
}

/// Where a head lives: its mailbox and slot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct HeadKey {
    pub(crate) mailbox: VerifyingKey,
    pub(crate) slot: Slot,
}

impl HeadKey {
    /// The mailbox key's bytes, the first part of the table key.
    pub(crate) fn mailbox_bytes(&self) -> [u8; 32] {
        self.mailbox.to_bytes()
    }
}

/// What the index knows about a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlobMeta {
    pub(crate) size: u64,
    pub(crate) created: u64,
    pub(crate) last_access: u64,
    /// The key that uploaded it first, or `None` for blobs recovered by
    /// `fsck --repair`, whose owner the files do not record.
    pub(crate) owner: Option<VerifyingKey>,
}

impl BlobMeta {
    pub(crate) fn encode(&self) -> [u8; 56] {
        let mut out = [0u8; 56];
        out[0..8].copy_from_slice(&self.size.to_be_bytes());
        out[8..16].copy_from_slice(&self.created.to_be_bytes());
        out[16..24].copy_from_slice(&self.last_access.to_be_bytes());
        if let Some(owner) = &self.owner {
            out[24..56].copy_from_slice(&owner.to_bytes());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8; 56]) -> Self {
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let mut owner = [0u8; 32];
        owner.copy_from_slice(&bytes[24..56]);
        Self {
            size: u64_at(0),
            created: u64_at(8),
            last_access: u64_at(16),
            // All-zero is not a valid key (small order), so it marks "none".
            owner: VerifyingKey::from_bytes(&owner).ok(),
        }
    }
}

/// One blob as the index knows it.
#[derive(Clone, Debug)]
pub(crate) struct BlobRecord {
    pub(crate) id: BlobId,
    pub(crate) meta: BlobMeta,
    /// [`CLIENT_SOURCE`] and the keys of peers that handed
    /// it over.
    pub(crate) sources: Vec<[u8; 32]>,
    /// Its owners besides `meta.owner`.
    pub(crate) co_owners: Vec<cairn_proto::VerifyingKey>,
}

/// One mailbox head.
#[derive(Clone, Debug)]
pub(crate) struct HeadRow {
    pub(crate) key: HeadKey,
    pub(crate) seq: u64,
    pub(crate) last_access: u64,
    pub(crate) envelope: Vec<u8>,
}

/// One forwarding record.
#[derive(Clone, Debug)]
pub(crate) struct ForwardRow {
    pub(crate) id: BlobId,
    pub(crate) forward: Forward,
    pub(crate) last_access: u64,
}
