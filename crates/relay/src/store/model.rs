//! The store's model, the same for both backends: what the relay knows of
//! a blob, a head and a forwarding record; what a write asks and what
//! became of it; the rows a store is exported and imported as. The
//! embedded index (`embedded`, redb) and the scale-out index
//! (`scaleout::postgres`) each keep these in their own tables; neither
//! takes its types from the other.

use std::path::PathBuf;

use cairn_proto::{BlobId, HeadRecord, OwnedHead, RecordKind, Slot, Verified, VerifyingKey};

/// Whom the relay holds a blob from, as its source rows record it: its
/// clients (the relay's own blobs, which it replicates) or a peer relay
/// that replicated or transferred it. Reconciliation with a peer compares
/// exactly the ids held from that peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SourceKey {
    Clients,
    Peer([u8; 32]),
}

impl SourceKey {
    /// How clients are written in a row: all zeros, which is never a
    /// valid (peer) key.
    const CLIENTS_ROW: [u8; 32] = [0; 32];

    pub(crate) fn peer(key: &VerifyingKey) -> Self {
        Self::Peer(key.to_bytes())
    }

    /// The 32 bytes a row stores.
    pub(crate) fn to_row(self) -> [u8; 32] {
        match self {
            Self::Clients => Self::CLIENTS_ROW,
            Self::Peer(key) => key,
        }
    }

    pub(crate) fn from_row(row: [u8; 32]) -> Self {
        if row == Self::CLIENTS_ROW {
            Self::Clients
        } else {
            Self::Peer(row)
        }
    }
}

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
    /// Whom the relay holds it from.
    pub(crate) sources: Vec<SourceKey>,
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

/// Blobs of at most this many bytes are stored inside the index rather than
/// as files.
pub(crate) const INLINE_MAX: usize = 16 * 1024;
/// Most slots one mailbox may have; a head for a further slot is refused.
/// Bounds the mailbox listing (`GET /v1/heads/{mailbox}`).
pub(crate) const MAX_SLOTS_PER_MAILBOX: usize = 1024;

/// Who handed the relay a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A client, whose upload key owns the blob and pays from its quota.
    /// The relay replicates these blobs to its peers.
    Client(VerifyingKey),
    /// A peer relay that replicated or transferred it. Peers are exempt from
    /// per-key quotas (the operator chose them) but not from capacity.
    Peer(VerifyingKey),
}

impl Source {
    /// The key recorded as the blob's owner.
    pub(crate) fn owner(self) -> VerifyingKey {
        match self {
            Self::Client(key) | Self::Peer(key) => key,
        }
    }

    /// What the sources table records of it.
    pub(crate) fn key(self) -> SourceKey {
        match self {
            Self::Client(_) => SourceKey::Clients,
            Self::Peer(key) => SourceKey::peer(&key),
        }
    }
}

/// A verified upload on its way into the store.
#[derive(Debug)]
pub(crate) enum Staged {
    /// A temp file holding the bytes (large uploads stream to disk).
    File(PathBuf),
    /// The bytes themselves (small uploads): the writer stages and renames
    /// them in one go, sparing the upload several trips to the blocking
    /// thread pool.
    Bytes(bytes::Bytes),
}

/// What became of an upload handed to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InsertOutcome {
    /// Newly stored and durable.
    Stored,
    /// The store already held it; recorded as an access.
    AlreadyHeld,
    /// Refused: capacity exhausted.
    RelayFull,
    /// Refused: the owner's quota is exhausted.
    QuotaExceeded,
    /// Its token was spent before; nothing changed.
    Replayed,
}

impl InsertOutcome {
    /// Whether the upload changed anything, which spends its token.
    pub(crate) fn took_effect(self) -> bool {
        matches!(self, Self::Stored | Self::AlreadyHeld)
    }
}

/// One verified blob of a batch upload, on its way to the store.
#[derive(Debug)]
pub(crate) struct BatchItem {
    pub(crate) id: BlobId,
    pub(crate) data: bytes::Bytes,
}

/// A verified head on its way to the store: what the store needs of a
/// legacy head (signed by its mailbox key, docs/PROTOCOL.md §4.4) or of an
/// owned head (signed by the writer whose slot it is, §4.9).
#[derive(Clone, Debug)]
pub(crate) struct NewHead {
    pub(crate) key: HeadKey,
    pub(crate) seq: u64,
    pub(crate) envelope: Vec<u8>,
    owned: bool,
}

impl NewHead {
    fn new<R: cairn_proto::Record>(
        head: &Verified<R>,
        mailbox: VerifyingKey,
        slot: &Slot,
        seq: u64,
        owned: bool,
    ) -> Self {
        Self {
            key: HeadKey {
                mailbox,
                slot: slot.clone(),
            },
            seq,
            envelope: head.envelope().to_bytes(),
            owned,
        }
    }
}

impl From<Verified<HeadRecord>> for NewHead {
    fn from(head: Verified<HeadRecord>) -> Self {
        Self::new(&head, head.mailbox, &head.slot, head.seq, false)
    }
}

impl From<Verified<OwnedHead>> for NewHead {
    fn from(head: Verified<OwnedHead>) -> Self {
        Self::new(&head, head.mailbox, &head.slot, head.seq, true)
    }
}

impl NewHead {
    /// Whether this head replaces the stored one (`seq`, `envelope`): it is
    /// newer, or it is an owned head and the stored one is not. The second
    /// case is a legacy head put in an owned slot's name before this relay
    /// refused that; it proves nothing about the slot's writer, so its
    /// `seq` must not lock the writer out. The one rule both backends apply.
    pub(crate) fn replaces(&self, seq: u64, envelope: &[u8]) -> bool {
        let stored_owned = envelope.get(1) == Some(&RecordKind::OwnedHead.code());
        self.seq > seq || (self.owned && !stored_owned)
    }
}

/// What became of a head handed to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeadOutcome {
    /// The first head in its slot; durable.
    Created,
    /// Newer than the stored head, which it replaced; durable.
    Replaced,
    /// Refused: its `seq` is not above `seq`, the stored head's, whose
    /// envelope bytes are `current`.
    Stale { seq: u64, current: Vec<u8> },
    /// Refused: the mailbox has [`MAX_SLOTS_PER_MAILBOX`] slots already.
    MailboxFull,
    /// Refused: the relay keeps `max_heads` heads already.
    RelayFull,
}

/// What became of a delete request: the signer's claim on the blob is
/// dropped, and the blob goes with its last owner's claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeleteOutcome {
    /// That was the last claim: the blob is gone.
    Deleted,
    /// The signer no longer owns the blob; other owners keep it.
    Released {
        owners_left: u64,
    },
    NotFound,
    NotOwner,
    /// Its token was used before; nothing changed.
    Replayed,
}

/// What became of a claim of ownership (`POST /v1/blobs/{id}`, or a
/// `PUT` of a blob the relay holds already).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimOutcome {
    /// The key owns the blob now, and its quota pays for it.
    Claimed,
    /// The key owned it already; recorded as an access.
    AlreadyOwner,
    /// The relay does not hold the blob.
    NotFound,
    /// Refused: the key's quota cannot pay for it.
    QuotaExceeded,
    /// Refused: the blob has [`MAX_OWNERS`] owners already.
    TooManyOwners,
    /// Its token was spent before; nothing changed.
    Replayed,
}

impl ClaimOutcome {
    /// Whether an upload of a held blob is answered as stored (200): it
    /// is, unless the uploader's quota cannot pay or its token was spent.
    pub(crate) fn acknowledged(self) -> bool {
        !matches!(self, Self::QuotaExceeded | Self::Replayed | Self::NotFound)
    }
}

/// Most owners one blob may have. An identity's devices need one each;
/// the cap keeps keys, which are free, from piling rows onto one blob that
/// every delete and expiry would then have to walk.
pub(crate) const MAX_OWNERS: u64 = 64;

/// The token a request that changes state carried (an upload, a claim, a
/// delete). It is recorded in the same transaction as the change, and only
/// if the change is made, so that neither a restart nor another process
/// sharing the index accepts it again while it is valid, while a request
/// refused without effect can be retried with it (docs/PROTOCOL.md §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SpentToken {
    pub(crate) nonce: [u8; 16],
    pub(crate) expires_at: u64,
}

/// What opening the store found to clean up.
#[derive(Debug, Default)]
pub(crate) struct OpenReport {
    pub(crate) temp_files_removed: usize,
    pub(crate) pending_unlinks_finished: usize,
}

/// The limits a store enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) capacity: u64,
    pub(crate) key_quota: u64,
    pub(crate) max_heads: u64,
    pub(crate) cache_bytes: usize,
    /// Page cache of the embedded index.
    pub(crate) index_cache_bytes: usize,
    /// Free space to leave on the data directory's filesystem.
    pub(crate) disk_reserve: u64,
}

#[cfg(test)]
mod tests {
    use cairn_proto::{SignedRecord, SigningKey, Timestamp, head_grant, owned_slot};

    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_seed(&[byte; 32])
    }

    /// A legacy head put under an owned slot's name before relays refused
    /// that (by anyone holding the mailbox key) cannot lock the slot's
    /// writer out, whatever its `seq`; an owned head at a higher `seq` is
    /// a stale write as ever.
    #[test]
    fn an_owned_head_replaces_a_legacy_one_in_its_slot_whatever_the_seq() {
        let (mailbox, writer) = (key(1), key(2));
        let slot = owned_slot(&mailbox.verifying_key(), &writer.verifying_key(), "id").unwrap();
        let owned = OwnedHead {
            mailbox: mailbox.verifying_key(),
            slot: slot.clone(),
            seq: 5,
            target: BlobId::of(b"entry"),
            timestamp: Timestamp(1),
            grant: head_grant(&mailbox, &writer.verifying_key()),
        };
        let new: NewHead = SignedRecord::sign(&owned, &writer)
            .unwrap()
            .verify::<OwnedHead>()
            .unwrap()
            .into();
        let planted = SignedRecord::sign(
            &HeadRecord {
                mailbox: mailbox.verifying_key(),
                slot,
                seq: u64::MAX,
                target: BlobId::of(b"x"),
                timestamp: Timestamp(1),
            },
            &mailbox,
        )
        .unwrap()
        .to_bytes();
        assert!(new.replaces(u64::MAX, &planted));
        let higher = SignedRecord::sign(&OwnedHead { seq: 9, ..owned }, &writer)
            .unwrap()
            .to_bytes();
        assert!(!new.replaces(9, &higher));
        assert!(new.replaces(4, &higher));
    }
}
