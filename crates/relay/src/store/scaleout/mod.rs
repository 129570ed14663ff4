//! The scale-out store: the index in PostgreSQL ([`postgres`]) and bodies
//! in an S3-compatible bucket ([`objects`]), shared by any number of relay
//! processes.
//!
//! # Commit protocol (an upload)
//!
//! 1. The HTTP layer streams the body to a local temp file, hashing it, and
//!    refuses it on a mismatch (as for the embedded store); the temp file
//!    needs no fsync, since the object store is what makes it durable.
//! 2. One transaction takes the blob id's advisory lock. If the index holds
//!    the id already, the upload is an access ("already held").
//! 3. Otherwise capacity and quota are checked, the body goes to the bucket
//!    (multipart above 8 MiB) under the lock, then the row, source, totals
//!    and owner usage are written and the transaction commits.
//! 4. Only then is the upload acknowledged: the object was complete before
//!    the commit, and the commit is durable.
//!
//! # Deleting (client delete, GC, transfer)
//!
//! One transaction removes the row and queues the id in `pending_unlink`;
//! after the commit, a second transaction takes the id's lock, deletes the
//! object unless the id was stored again meanwhile, and drops the queue
//! entry. A crash between the two leaves a queue entry that any process
//! finishes at its next start or GC pass; the object is never served in
//! between, since no row names it.
//!
//! The id lock is what keeps "indexed but no object" impossible: an upload
//! writes the object and the row under it, and a deletion checks for the
//! row and deletes the object under it.

pub(crate) mod objects;
mod postgres;
mod writes;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use cairn_proto::{BlobId, Slot, VerifyingKey};

use self::objects::Objects;
use self::postgres::Index;
use super::StoreStats;
use super::backend::Backend;
use super::body::{BlobBody, BlobRead, Want};
use super::error::StoreError;
use super::model::{
    BatchItem, BlobRecord, ClaimOutcome, DeleteOutcome, Forward, ForwardRow, HeadKey, HeadOutcome,
    HeadRow, INLINE_MAX, InsertOutcome, Limits, NewHead, OpenReport, Source, SourceKey, SpentToken,
    Staged,
};
use super::rules::Rules;
use crate::config::ScaleOutConfig;

/// The shared backends and the limits that apply across processes.
#[derive(Debug)]
pub(crate) struct ScaleOut {
    index: Index,
    objects: Objects,
    stats: Arc<StoreStats>,
    rules: Rules,
    /// Names this process in leases.
    holder: String,
}

impl ScaleOut {
    /// Connects to both backends, migrates the index and finishes object
    /// removals a stopped process left behind.
    pub(crate) async fn open(
        config: &ScaleOutConfig,
        http: reqwest::Client,
        stats: Arc<StoreStats>,
        limits: &Limits,
    ) -> Result<(Self, OpenReport), StoreError> {
        let index = Index::open(&config.postgres).await?;
        let objects = Objects::open(&config.s3, http)?;
        objects.check().await?;
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| StoreError::Failed(e.to_string()))?;
        let holder: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let store = Self {
            index,
            objects,
            stats,
            rules: Rules::new(limits),
            holder,
        };
        store.refresh_stats().await?;
        let pending_unlinks_finished = store.finish_unlinks().await?;
        Ok((
            store,
            OpenReport {
                temp_files_removed: 0,
                pending_unlinks_finished,
            },
        ))
    }

    /// Reloads the totals from the index (other processes change them too).
    async fn refresh_stats(&self) -> Result<(), StoreError> {
        let (bytes, blobs, heads) = self.index.stats().await?;
        self.stats.bytes.store(bytes, Ordering::SeqCst);
        self.stats.blobs.store(blobs, Ordering::SeqCst);
        self.stats.heads.store(heads, Ordering::SeqCst);
        Ok(())
    }

    fn added(&self, bytes: i64, blobs: i64) {
        let apply = |counter: &std::sync::atomic::AtomicU64, delta: i64| {
            let _ = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_add_signed(delta))
            });
        };
        apply(&self.stats.bytes, bytes);
        apply(&self.stats.blobs, blobs);
    }
}

impl Backend for ScaleOut {
    async fn insert(
        &self,
        staged: Staged,
        id: BlobId,
        size: u64,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<InsertOutcome, StoreError> {
        self.insert_blob(staged, id, size, source, now, token).await
    }

    async fn insert_batch(
        &self,
        items: Vec<BatchItem>,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        self.insert_many(items, source, now, token).await
    }

    async fn seed(
        &self,
        blobs: Vec<(BlobId, Bytes)>,
        source: Source,
        now: u64,
    ) -> Result<usize, StoreError> {
        if blobs.iter().all(|(_, data)| data.len() <= INLINE_MAX) {
            return self.seed_small(&blobs, source, now).await;
        }
        let mut stored = 0;
        for (id, data) in blobs {
            let size = data.len() as u64;
            if self
                .insert_blob(Staged::Bytes(data), id, size, source, now, None)
                .await?
                == InsertOutcome::Stored
            {
                stored += 1;
            }
        }
        Ok(stored)
    }

    async fn acknowledge_held(
        &self,
        id: BlobId,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<Option<(u64, ClaimOutcome)>, StoreError> {
        self.acknowledge(id, source, now, token).await
    }

    async fn add_owner(
        &self,
        id: BlobId,
        owner: VerifyingKey,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<ClaimOutcome, StoreError> {
        self.claim(id, owner, now, token).await
    }

    async fn forget_spent_tokens(&self, before: u64) -> Result<usize, StoreError> {
        self.index.forget_spent_tokens(before).await
    }

    async fn delete(
        &self,
        id: BlobId,
        owner: VerifyingKey,
        token: SpentToken,
        forget_before: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        self.release(id, owner, token, forget_before).await
    }

    async fn forward(
        &self,
        id: BlobId,
        size: u64,
        forward: Forward,
        now: u64,
    ) -> Result<bool, StoreError> {
        self.forward_blob(id, size, forward, now).await
    }

    async fn collect(&self, cutoff: u64, max: usize) -> Result<Vec<(BlobId, u64)>, StoreError> {
        self.finish_unlinks().await?;
        self.collect_expired(cutoff, max).await
    }

    async fn collect_forwards(&self, cutoff: u64, max: usize) -> Result<usize, StoreError> {
        self.index.collect_forwards(cutoff, max).await
    }

    /// Also reloads the totals, which other processes change.
    async fn write_accesses(
        &self,
        blobs: &[(BlobId, u64)],
        heads: &[(HeadKey, u64)],
    ) -> Result<(), StoreError> {
        if !blobs.is_empty() {
            self.index.touch_many(blobs).await?;
        }
        if !heads.is_empty() {
            self.index.touch_heads(heads).await?;
        }
        self.refresh_stats().await
    }

    async fn put_head(&self, head: NewHead, now: u64) -> Result<HeadOutcome, StoreError> {
        let outcome = self.index.put_head(&head, now, &self.rules).await?;
        if outcome == HeadOutcome::Created {
            self.stats.heads.fetch_add(1, Ordering::SeqCst);
        }
        Ok(outcome)
    }

    async fn collect_heads(&self, cutoff: u64, max: usize) -> Result<usize, StoreError> {
        let deleted = self.index.collect_heads(cutoff, max).await?;
        let _ = self
            .stats
            .heads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_sub(deleted as u64))
            });
        Ok(deleted)
    }

    async fn open_body(&self, id: &BlobId) -> Result<Option<BlobBody>, StoreError> {
        Ok(match self.index.locate(id).await? {
            None => None,
            Some((_, Some(bytes))) => Some(BlobBody::Inline(bytes.into())),
            Some((size, None)) => Some(BlobBody::Object {
                objects: self.objects.clone(),
                id: *id,
                size,
            }),
        })
    }

    /// Small bodies come with the index row; large ones stream from the
    /// object store.
    async fn read(
        &self,
        id: BlobId,
        want: impl FnOnce(u64) -> Want + Send + 'static,
    ) -> Result<Option<BlobRead>, StoreError> {
        let Some(body) = self.open_body(&id).await? else {
            return Ok(None);
        };
        BlobRead::from_body(body, want).await.map(Some)
    }

    async fn owner_usage(&self, owner: &VerifyingKey) -> Result<u64, StoreError> {
        self.index.owner_usage(owner).await
    }

    async fn ids_from(&self, source: SourceKey) -> Result<Vec<BlobId>, StoreError> {
        self.index.ids_from(source).await
    }

    async fn sources_of(&self, id: &BlobId) -> Result<Vec<SourceKey>, StoreError> {
        self.index.sources_of(id).await
    }

    async fn least_recently_used(&self, max: usize) -> Result<Vec<(BlobId, u64)>, StoreError> {
        self.index.least_recently_used(max).await
    }

    async fn forward_of(&self, id: &BlobId) -> Result<Option<Forward>, StoreError> {
        self.index.forward(id).await
    }

    async fn forwards_from(
        &self,
        start: [u8; 32],
        max: usize,
    ) -> Result<Vec<(BlobId, Forward)>, StoreError> {
        self.index.forwards_from(start, max).await
    }

    async fn forward_count(&self) -> Result<u64, StoreError> {
        self.index.forwards().await
    }

    async fn head(&self, key: &HeadKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.index.head(key).await
    }

    async fn heads(&self, mailbox: &VerifyingKey) -> Result<Vec<(Slot, Vec<u8>)>, StoreError> {
        self.index.heads(mailbox).await
    }

    async fn try_lease(&self, name: &str, now: u64, ttl: u64) -> bool {
        match self.index.try_lease(name, &self.holder, now, ttl).await {
            Ok(taken) => taken,
            Err(e) => {
                tracing::warn!(error = %e, lease = name, "cannot take a lease");
                false
            }
        }
    }

    /// Nothing to stop: every write is its own transaction.
    async fn close(&self) {}

    /// The object store makes an upload durable; its staged file is only
    /// copied there.
    fn keeps_staged_files(&self) -> bool {
        false
    }

    async fn export_blobs(
        &self,
        after: Option<BlobId>,
        max: usize,
    ) -> Result<Vec<BlobRecord>, StoreError> {
        self.index.blobs_after(after, max).await
    }

    async fn export_heads(
        &self,
        after: Option<HeadKey>,
        max: usize,
    ) -> Result<Vec<HeadRow>, StoreError> {
        self.index.heads_after(after.as_ref(), max).await
    }

    async fn export_forwards(
        &self,
        after: Option<BlobId>,
        max: usize,
    ) -> Result<Vec<ForwardRow>, StoreError> {
        self.index.forwards_after(after, max).await
    }

    async fn import_blob(
        &self,
        staged: Staged,
        record: BlobRecord,
    ) -> Result<InsertOutcome, StoreError> {
        self.import_record(staged, &record).await
    }

    async fn import_head(&self, row: HeadRow) -> Result<bool, StoreError> {
        self.index.import_head(&row).await
    }

    async fn import_forward(&self, row: ForwardRow) -> Result<bool, StoreError> {
        self.index.import_forward(&row).await
    }
}
