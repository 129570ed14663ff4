//! What a storage backend does: the one list of store operations, which
//! the embedded backend ([`super::embedded`]) and the scale-out backend
//! ([`super::scaleout`]) both implement. [`super::Store`] holds one of them
//! and adds what does not depend on where bytes live: capacity held for
//! uploads in progress, coalesced access times, the small-blob cache.
//!
//! Both give the same answers: an upload is acknowledged only once it is
//! durable in the backend, only hash-verified bytes are ever stored, and a
//! blob is served only while the index names it. The decisions behind the
//! answers (admission, claims, releases, the head compare-and-set) are made
//! in [`super::rules`], not here.

use bytes::Bytes;
use cairn_proto::{BlobId, Slot, VerifyingKey};

use super::body::{BlobBody, BlobRead, Want};
use super::error::StoreError;
use super::model::{
    BatchItem, BlobRecord, ClaimOutcome, DeleteOutcome, Forward, ForwardRow, HeadKey, HeadOutcome,
    HeadRow, InsertOutcome, NewHead, Source, SourceKey, SpentToken, Staged,
};

/// The operations of a storage backend. Writes answer once their outcome
/// is durable; each is cancel-safe in that once called, it happens (or
/// fails) whether or not its future is polled to completion.
pub(crate) trait Backend {
    /// Commits verified bytes (a temp file, or in memory) as blob `id`,
    /// handed over by `source`, if capacity and the payer's quota allow.
    /// `token`, the request's, is spent in the same transaction when the
    /// upload takes effect (`Stored`, `AlreadyHeld`); one spent before
    /// gives `Replayed` and changes nothing.
    async fn insert(
        &self,
        staged: Staged,
        id: BlobId,
        size: u64,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<InsertOutcome, StoreError>;

    /// Commits the verified blobs of one batch upload as if each were
    /// [`Backend::insert`]ed, in one transaction: `token` is spent once,
    /// if any of them took effect, and a spent one refuses them all
    /// (`Replayed`). The outcomes are in `items`' order.
    async fn insert_batch(
        &self,
        items: Vec<BatchItem>,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<Vec<InsertOutcome>, StoreError>;

    /// Stores many small blobs at once, as if inserted one by one: a test
    /// hook for building large stores quickly. How many were new.
    async fn seed(
        &self,
        blobs: Vec<(BlobId, Bytes)>,
        source: Source,
        now: u64,
    ) -> Result<usize, StoreError>;

    /// Records durably an access to `id`, that `source` handed it over,
    /// and (for a client) that the client owns it; `None` if the store
    /// does not hold it, else its size and what became of the claim
    /// (`QuotaExceeded`, `Replayed`: refused, nothing recorded). `token`
    /// is spent with the acknowledgement, as in [`Backend::insert`].
    async fn acknowledge_held(
        &self,
        id: BlobId,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<Option<(u64, ClaimOutcome)>, StoreError>;

    /// Makes `owner` one of blob `id`'s owners, charging its quota, and
    /// records an access; `token` is spent with the access (every outcome
    /// but `NotFound`, `QuotaExceeded` and `Replayed`).
    async fn add_owner(
        &self,
        id: BlobId,
        owner: VerifyingKey,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<ClaimOutcome, StoreError>;

    /// Forgets spent tokens that expired before `before`: they can no
    /// longer be accepted anyway. How many were forgotten.
    async fn forget_spent_tokens(&self, before: u64) -> Result<usize, StoreError>;

    /// Drops `owner`'s claim on blob `id`, deleting the blob if no other
    /// owner is left, provided `token` was never used before; records
    /// `token` as used either way. Tokens that expired before
    /// `forget_before` are forgotten.
    async fn delete(
        &self,
        id: BlobId,
        owner: VerifyingKey,
        token: SpentToken,
        forget_before: u64,
    ) -> Result<DeleteOutcome, StoreError>;

    /// Drops the body of `id` (if it still has `size` bytes) and records
    /// that `forward` answers for it now; false if the blob is gone or
    /// changed meanwhile.
    async fn forward(
        &self,
        id: BlobId,
        size: u64,
        forward: Forward,
        now: u64,
    ) -> Result<bool, StoreError>;

    /// Deletes up to `max` blobs last accessed before `cutoff`, returning
    /// their ids and sizes.
    async fn collect(&self, cutoff: u64, max: usize) -> Result<Vec<(BlobId, u64)>, StoreError>;

    /// Deletes up to `max` forwarding records last used before `cutoff`.
    async fn collect_forwards(&self, cutoff: u64, max: usize) -> Result<usize, StoreError>;

    /// Writes coalesced access times of blobs (or of their forwarding
    /// records) and of heads.
    async fn write_accesses(
        &self,
        blobs: &[(BlobId, u64)],
        heads: &[(HeadKey, u64)],
    ) -> Result<(), StoreError>;

    /// Stores `head` in its slot if [`super::rules::Rules::head_step`] and
    /// the relay's room allow.
    async fn put_head(&self, head: NewHead, now: u64) -> Result<HeadOutcome, StoreError>;

    /// Deletes up to `max` heads last accessed before `cutoff`.
    async fn collect_heads(&self, cutoff: u64, max: usize) -> Result<usize, StoreError>;

    /// Opens blob `id`'s body, or `None` if the index does not name it.
    async fn open_body(&self, id: &BlobId) -> Result<Option<BlobBody>, StoreError>;

    /// Opens blob `id` and reads what `want` asks of it once its size is
    /// known, in as few trips as the backend allows: the path of a GET.
    async fn read(
        &self,
        id: BlobId,
        want: impl FnOnce(u64) -> Want + Send + 'static,
    ) -> Result<Option<BlobRead>, StoreError>;

    /// Bytes `owner` pays for.
    async fn owner_usage(&self, owner: &VerifyingKey) -> Result<u64, StoreError>;

    /// The ids held from `source`, sorted.
    async fn ids_from(&self, source: SourceKey) -> Result<Vec<BlobId>, StoreError>;

    /// Whom the relay holds `id` from.
    async fn sources_of(&self, id: &BlobId) -> Result<Vec<SourceKey>, StoreError>;

    /// Up to `max` blobs in order of last access, oldest first, with sizes.
    async fn least_recently_used(&self, max: usize) -> Result<Vec<(BlobId, u64)>, StoreError>;

    /// Where `id` was transferred, if it was.
    async fn forward_of(&self, id: &BlobId) -> Result<Option<Forward>, StoreError>;

    /// Up to `max` forwarding records from `start` on in id order,
    /// wrapping around.
    async fn forwards_from(
        &self,
        start: [u8; 32],
        max: usize,
    ) -> Result<Vec<(BlobId, Forward)>, StoreError>;

    /// How many forwarding records the relay keeps.
    async fn forward_count(&self) -> Result<u64, StoreError>;

    /// The stored envelope of the head in `key`'s slot, if any.
    async fn head(&self, key: &HeadKey) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every head of `mailbox`, as (slot, envelope), sorted by slot.
    async fn heads(&self, mailbox: &VerifyingKey) -> Result<Vec<(Slot, Vec<u8>)>, StoreError>;

    /// Takes or renews the lease `name` for `ttl` seconds: periodic work
    /// on shared data runs only in the process that holds it.
    async fn try_lease(&self, name: &str, now: u64, ttl: u64) -> bool;

    /// Stops taking writes once what is queued is written.
    async fn close(&self);

    /// True when uploads must be flushed to local disk before they are
    /// handed over (the backend keeps the staged file itself).
    fn keeps_staged_files(&self) -> bool;

    /// Up to `max` blobs with ids above `after`, in id order.
    async fn export_blobs(
        &self,
        after: Option<BlobId>,
        max: usize,
    ) -> Result<Vec<BlobRecord>, StoreError>;

    /// Up to `max` heads after `after` in (mailbox, slot) order.
    async fn export_heads(
        &self,
        after: Option<HeadKey>,
        max: usize,
    ) -> Result<Vec<HeadRow>, StoreError>;

    /// Up to `max` forwarding records with ids above `after`.
    async fn export_forwards(
        &self,
        after: Option<BlobId>,
        max: usize,
    ) -> Result<Vec<ForwardRow>, StoreError>;

    /// Stores verified bytes with `record`'s index facts; `AlreadyHeld` if
    /// this store has the blob, `RelayFull` if it has no room.
    async fn import_blob(
        &self,
        staged: Staged,
        record: BlobRecord,
    ) -> Result<InsertOutcome, StoreError>;

    /// Stores a head unless this store holds one at least as new.
    async fn import_head(&self, row: HeadRow) -> Result<bool, StoreError>;

    /// Keeps a forwarding record unless this store holds the blob.
    async fn import_forward(&self, row: ForwardRow) -> Result<bool, StoreError>;
}
