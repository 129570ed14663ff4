//! The index's single writer: one thread that owns every write transaction.
//!
//! Requests queue on a bounded channel. The thread takes whatever has queued
//! (up to [`MAX_BATCH`]) and applies it in **one** transaction with one
//! fsync: under concurrent uploads, many blobs share a commit (group commit).
//! Because every rename into `blobs/` and every unlink happens here too, in
//! order with the index changes, a delete and a re-upload of the same blob
//! can never interleave into "indexed but no file".
//!
//! After any I/O or database failure the writer refuses all further work
//! ([`StoreError::Failed`]): the relay must be restarted (and, if the disk
//! misbehaves, checked with `fsck`) rather than build on half-written state.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cairn_proto::{BlobId, VerifyingKey};
use tokio::sync::{mpsc, oneshot};

use super::ballast::Ballast;
use super::record::BlobRow;
use super::tables::{Tables, expired_prefix};
use crate::store::StoreStats;
use crate::store::cache::BlobCache;
use crate::store::error::StoreError;
use crate::store::files::BlobFiles;
use crate::store::model::{
    BatchItem, BlobMeta, BlobRecord, ClaimOutcome, DeleteOutcome, Forward, ForwardRow, HeadKey,
    HeadOutcome, HeadRow, INLINE_MAX, InsertOutcome, NewHead, Source, SourceKey, SpentToken,
    Staged,
};
use crate::store::rules::{Limit, Rules};

/// Most operations applied in one transaction.
pub(crate) const MAX_BATCH: usize = 512;

/// Depth of the writer's queue. Senders wait when it is full, which slows
/// uploads down rather than growing memory.
pub(crate) const QUEUE_DEPTH: usize = 4096;

pub(crate) enum WriteOp {
    Insert {
        staged: Staged,
        id: BlobId,
        size: u64,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
        reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
    },
    /// The blobs of one batch upload, spending its token once.
    InsertBatch {
        items: Vec<BatchItem>,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
        reply: oneshot::Sender<Result<Vec<InsertOutcome>, StoreError>>,
    },
    /// Drops a transferred blob's body and keeps a forwarding record, in one
    /// transaction.
    Forward {
        id: BlobId,
        size: u64,
        forward: Forward,
        now: u64,
        /// False if the blob was not held (or had another size).
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Touches a held blob, adds a source to it and, for a client, an
    /// owner.
    AcknowledgeHeld {
        id: BlobId,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
        /// The blob's size and the client's claim, or `None` if it is not
        /// held.
        reply: oneshot::Sender<Result<Option<(u64, ClaimOutcome)>, StoreError>>,
    },
    /// Adds an owner to a held blob.
    AddOwner {
        id: BlobId,
        owner: VerifyingKey,
        now: u64,
        token: Option<SpentToken>,
        reply: oneshot::Sender<Result<ClaimOutcome, StoreError>>,
    },
    /// Forgets spent tokens that expired before `before`.
    ForgetSpent {
        before: u64,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    CollectForwards {
        cutoff: u64,
        max: usize,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    Delete {
        id: BlobId,
        owner: VerifyingKey,
        token: SpentToken,
        forget_before: u64,
        reply: oneshot::Sender<Result<DeleteOutcome, StoreError>>,
    },
    Touch {
        accesses: Vec<(BlobId, u64)>,
        /// How many of the blobs were held (and so touched).
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    Collect {
        /// Blobs last accessed before this moment are deleted.
        cutoff: u64,
        max: usize,
        reply: oneshot::Sender<Result<Vec<(BlobId, u64)>, StoreError>>,
    },
    /// Stores a head if its `seq` is above the stored one: the comparison
    /// and the write happen in one transaction, so of two concurrent PUTs
    /// only one can win.
    PutHead {
        head: NewHead,
        now: u64,
        reply: oneshot::Sender<Result<HeadOutcome, StoreError>>,
    },
    TouchHeads {
        accesses: Vec<(HeadKey, u64)>,
        /// How many of the heads were held (and so touched).
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    CollectHeads {
        /// Heads last accessed before this moment are deleted.
        cutoff: u64,
        max: usize,
        /// How many were deleted.
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    /// Stores a blob copied from another store with its index record
    /// (times, owner, sources) as it was there.
    Import {
        staged: Staged,
        record: BlobRecord,
        reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
    },
    /// Stores a head copied from another store unless the slot holds one
    /// at least as new; true if it was stored.
    ImportHead {
        row: HeadRow,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Keeps a forwarding record copied from another store unless the blob
    /// is held here; true if it was kept.
    ImportForward {
        row: ForwardRow,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Closes the queue: what is in it is still written, nothing more is
    /// taken, and the writer exits even while requests abandoned at
    /// shutdown still hold senders.
    Stop,
}

enum Reply {
    Insert(
        oneshot::Sender<Result<InsertOutcome, StoreError>>,
        InsertOutcome,
    ),
    Delete(
        oneshot::Sender<Result<DeleteOutcome, StoreError>>,
        DeleteOutcome,
    ),
    Batch(
        oneshot::Sender<Result<Vec<InsertOutcome>, StoreError>>,
        Vec<InsertOutcome>,
    ),
    AddOwner(
        oneshot::Sender<Result<ClaimOutcome, StoreError>>,
        ClaimOutcome,
    ),
    Count(oneshot::Sender<Result<usize, StoreError>>, usize),
    Flag(oneshot::Sender<Result<bool, StoreError>>, bool),
    Held(
        oneshot::Sender<Result<Option<(u64, ClaimOutcome)>, StoreError>>,
        Option<(u64, ClaimOutcome)>,
    ),
    Collect(
        oneshot::Sender<Result<Vec<(BlobId, u64)>, StoreError>>,
        Vec<(BlobId, u64)>,
    ),
    PutHead(
        oneshot::Sender<Result<HeadOutcome, StoreError>>,
        HeadOutcome,
    ),
}

impl Reply {
    fn send_ok(self) {
        // A requester that went away (client disconnected) no longer cares;
        // the change itself is committed either way.
        match self {
            Self::Insert(tx, v) => drop(tx.send(Ok(v))),
            Self::Delete(tx, v) => drop(tx.send(Ok(v))),
            Self::Batch(tx, v) => drop(tx.send(Ok(v))),
            Self::AddOwner(tx, v) => drop(tx.send(Ok(v))),
            Self::Count(tx, n) => drop(tx.send(Ok(n))),
            Self::Flag(tx, b) => drop(tx.send(Ok(b))),
            Self::Held(tx, n) => drop(tx.send(Ok(n))),
            Self::Collect(tx, v) => drop(tx.send(Ok(v))),
            Self::PutHead(tx, v) => drop(tx.send(Ok(v))),
        }
    }

    fn send_err(self, err: StoreError) {
        match self {
            Self::Insert(tx, _) => drop(tx.send(Err(err))),
            Self::Delete(tx, _) => drop(tx.send(Err(err))),
            Self::Batch(tx, _) => drop(tx.send(Err(err))),
            Self::AddOwner(tx, _) => drop(tx.send(Err(err))),
            Self::Count(tx, _) => drop(tx.send(Err(err))),
            Self::Flag(tx, _) => drop(tx.send(Err(err))),
            Self::Held(tx, _) => drop(tx.send(Err(err))),
            Self::Collect(tx, _) => drop(tx.send(Err(err))),
            Self::PutHead(tx, _) => drop(tx.send(Err(err))),
        }
    }
}

fn fail_op(op: WriteOp, err: StoreError) {
    match op {
        WriteOp::Insert { reply, staged, .. } => {
            if let Staged::File(temp) = staged {
                let _ = std::fs::remove_file(temp);
            }
            drop(reply.send(Err(err)));
        }
        WriteOp::Delete { reply, .. } => drop(reply.send(Err(err))),
        WriteOp::InsertBatch { reply, .. } => drop(reply.send(Err(err))),
        WriteOp::Touch { reply, .. }
        | WriteOp::TouchHeads { reply, .. }
        | WriteOp::CollectHeads { reply, .. }
        | WriteOp::ForgetSpent { reply, .. }
        | WriteOp::CollectForwards { reply, .. } => drop(reply.send(Err(err))),
        WriteOp::Forward { reply, .. } => drop(reply.send(Err(err))),
        WriteOp::AcknowledgeHeld { reply, .. } => drop(reply.send(Err(err))),
        WriteOp::AddOwner { reply, .. } => drop(reply.send(Err(err))),
        WriteOp::Collect { reply, .. } => drop(reply.send(Err(err))),
        WriteOp::PutHead { reply, .. } => drop(reply.send(Err(err))),
        WriteOp::Import { reply, staged, .. } => {
            if let Staged::File(temp) = staged {
                let _ = std::fs::remove_file(temp);
            }
            drop(reply.send(Err(err)));
        }
        WriteOp::ImportHead { reply, .. } | WriteOp::ImportForward { reply, .. } => {
            drop(reply.send(Err(err)));
        }
        WriteOp::Stop => {}
    }
}

pub(crate) struct Writer {
    db: Arc<redb::Database>,
    files: BlobFiles,
    stats: Arc<StoreStats>,
    rules: Rules,
    /// Unlinks finished after the previous commit, to drop from
    /// `PENDING_UNLINK` in the next transaction.
    unlinked: Vec<BlobId>,
    cache: Arc<BlobCache>,
    ballast: Ballast,
}

impl Writer {
    pub(crate) fn new(
        db: Arc<redb::Database>,
        files: BlobFiles,
        stats: Arc<StoreStats>,
        rules: Rules,
        cache: Arc<BlobCache>,
        ballast: Ballast,
    ) -> Self {
        Self {
            db,
            files,
            stats,
            rules,
            unlinked: Vec::new(),
            cache,
            ballast,
        }
    }

    /// Runs until every sender is gone, or a [`WriteOp::Stop`] and what
    /// was queued before it have been handled.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<WriteOp>) {
        let mut failed: Option<String> = None;
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            if batch.iter().any(|op| matches!(op, WriteOp::Stop)) {
                // Later sends fail (`StoreError::Closed`); what is buffered
                // is still received, so nothing queued goes unanswered.
                rx.close();
            }
            if let Some(reason) = &failed {
                for op in batch {
                    fail_op(op, StoreError::Failed(reason.clone()));
                }
                continue;
            }
            if let Err(err) = self.apply(batch) {
                tracing::error!(error = %err, "store write failed; refusing further writes until restart");
                failed = Some(err.to_string());
            }
        }
    }

    /// Applies a batch in one transaction. On error every requester in the
    /// batch gets [`StoreError::Failed`] and the error is returned.
    fn apply(&mut self, batch: Vec<WriteOp>) -> Result<(), StoreError> {
        let mut replies = Vec::with_capacity(batch.len());
        let result = self.apply_inner(batch, &mut replies);
        match result {
            Ok(()) => {
                for reply in replies {
                    reply.send_ok();
                }
                Ok(())
            }
            Err(err) => {
                for reply in replies {
                    reply.send_err(StoreError::Failed(err.to_string()));
                }
                Err(err)
            }
        }
    }

    fn apply_inner(
        &mut self,
        ops: Vec<WriteOp>,
        replies: &mut Vec<Reply>,
    ) -> Result<(), StoreError> {
        // Best effort: a filesystem that cannot be asked will say it is
        // full at the commit.
        if let Err(err) = self.ballast.make_room() {
            tracing::warn!(%err, "could not release the index's ballast");
        }
        let txn = self.db.begin_write().map_err(redb::Error::from)?;
        let mut batch = Batch::default();
        let (bytes, blobs, heads);
        {
            let mut t = Tables::open(&txn)?;
            for id in self.unlinked.drain(..) {
                t.pending.remove(id.as_bytes()).map_err(redb::Error::from)?;
            }
            for op in ops {
                if let Some(reply) = self.apply_op(&mut t, op, &mut batch)? {
                    replies.push(reply);
                }
            }
            t.save_totals()?;
            (bytes, blobs, heads) = (t.bytes, t.count, t.head_count);
        }
        // File contents and renames must be durable before the index says
        // the blobs exist: one filesystem sync for the whole batch (group
        // commit).
        if batch.installed {
            self.files
                .sync_filesystem()
                .map_err(|e| StoreError::io("sync blob store", e))?;
        }
        txn.commit().map_err(redb::Error::from)?;
        if let Err(err) = self.ballast.restore() {
            tracing::warn!(%err, "could not restore the index's ballast");
        }
        self.stats.bytes.store(bytes, Ordering::SeqCst);
        self.stats.blobs.store(blobs, Ordering::SeqCst);
        self.stats.heads.store(heads, Ordering::SeqCst);
        // Before anyone hears of a deletion, no cached copy may remain.
        if !batch.unlink.is_empty() || batch.deleted_inline {
            self.cache.invalidate();
        }
        for temp in batch.temps_to_drop {
            let _ = std::fs::remove_file(temp);
        }
        // The index no longer names these blobs; only now may their files
        // go. Done before answering, so a 204 means the space is free.
        let cleanup = self.unlink_files(batch.unlink);
        // Committed means durable: every requester hears success even if
        // the cleanup failed; that failure stops the writer for later
        // batches only (the next start finishes pending unlinks).
        for reply in replies.drain(..) {
            reply.send_ok();
        }
        cleanup
    }

    /// Applies one operation inside the batch's transaction; the answer to
    /// send once it commits.
    fn apply_op(
        &self,
        t: &mut Tables<'_>,
        op: WriteOp,
        batch: &mut Batch,
    ) -> Result<Option<Reply>, StoreError> {
        Ok(Some(match op {
            WriteOp::Insert {
                staged,
                id,
                size,
                source,
                now,
                token,
                reply,
            } => {
                let outcome = if t.is_spent(token)? {
                    batch.drop_staged(staged);
                    InsertOutcome::Replayed
                } else {
                    let outcome = self.insert(t, batch, staged, id, size, source, now)?;
                    if outcome.took_effect() {
                        t.spend(token)?;
                    }
                    outcome
                };
                Reply::Insert(reply, outcome)
            }
            WriteOp::InsertBatch {
                items,
                source,
                now,
                token,
                reply,
            } => {
                let outcomes = if t.is_spent(token)? {
                    vec![InsertOutcome::Replayed; items.len()]
                } else {
                    let mut outcomes = Vec::with_capacity(items.len());
                    for BatchItem { id, data } in items {
                        let size = data.len() as u64;
                        let staged = Staged::Bytes(data);
                        outcomes.push(self.insert(t, batch, staged, id, size, source, now)?);
                    }
                    if outcomes.iter().any(|o| o.took_effect()) {
                        t.spend(token)?;
                    }
                    outcomes
                };
                Reply::Batch(reply, outcomes)
            }
            WriteOp::Delete {
                id,
                owner,
                token,
                forget_before,
                reply,
            } => {
                t.forget_spent_tokens(forget_before, 256)?;
                let outcome = if t.is_spent(Some(token))? {
                    DeleteOutcome::Replayed
                } else {
                    // Spent whatever it finds: a delete refused as
                    // `not_owner` must not work once its signer owns the
                    // blob.
                    t.spend(Some(token))?;
                    delete(t, batch, &id, &owner)?
                };
                Reply::Delete(reply, outcome)
            }
            WriteOp::ForgetSpent { before, reply } => {
                Reply::Count(reply, t.forget_spent_tokens(before, usize::MAX)?)
            }
            WriteOp::Touch { accesses, reply } => {
                let mut held = 0;
                for (id, at) in accesses {
                    if let Some(mut meta) = t.meta(&id)? {
                        t.touch(&id, &mut meta, at)?;
                        held += 1;
                    } else {
                        // A redirect is an access to the forwarding
                        // record, which lives as long as it is used.
                        t.touch_forward(&id, at)?;
                    }
                }
                Reply::Count(reply, held)
            }
            WriteOp::Forward {
                id,
                size,
                forward,
                now,
                reply,
            } => {
                let done = match t.meta(&id)? {
                    Some(meta) if meta.size == size => {
                        // Peers that replicated the blob here still count
                        // it as held (the relay answers for it through the
                        // redirect), or reconciliation would push it
                        // straight back.
                        let peers = t.peer_sources(&id)?;
                        batch.removed(id, t.remove(&id, &meta)?);
                        for peer in peers {
                            t.add_forward_source(&id, peer)?;
                        }
                        t.put_forward(&id, &forward, now)?;
                        true
                    }
                    _ => false,
                };
                Reply::Flag(reply, done)
            }
            WriteOp::AcknowledgeHeld {
                id,
                source,
                now,
                token,
                reply,
            } => {
                let held = match t.meta(&id)? {
                    Some(meta) if t.is_spent(token)? => Some((meta.size, ClaimOutcome::Replayed)),
                    Some(mut meta) => {
                        let claim = self.acknowledge_held(t, &id, &mut meta, source, now)?;
                        if claim.acknowledged() {
                            t.spend(token)?;
                        }
                        Some((meta.size, claim))
                    }
                    None => None,
                };
                Reply::Held(reply, held)
            }
            WriteOp::AddOwner {
                id,
                owner,
                now,
                token,
                reply,
            } => {
                let outcome = match t.meta(&id)? {
                    None => ClaimOutcome::NotFound,
                    Some(_) if t.is_spent(token)? => ClaimOutcome::Replayed,
                    Some(mut meta) => {
                        let outcome = self.claim(t, &id, &meta, &owner)?;
                        if outcome != ClaimOutcome::QuotaExceeded {
                            t.touch(&id, &mut meta, now)?;
                            t.spend(token)?;
                        }
                        outcome
                    }
                };
                Reply::AddOwner(reply, outcome)
            }
            WriteOp::CollectForwards { cutoff, max, reply } => {
                Reply::Count(reply, t.collect_forwards(cutoff, max)?)
            }
            WriteOp::Collect { cutoff, max, reply } => {
                let expired = expired_prefix(&t.by_access, cutoff, max)?;
                let mut deleted = Vec::with_capacity(expired.len());
                for (_, raw) in expired {
                    let id = BlobId::from_bytes(raw);
                    if let Some(meta) = t.meta(&id)? {
                        batch.removed(id, t.remove(&id, &meta)?);
                        deleted.push((id, meta.size));
                    }
                }
                Reply::Collect(reply, deleted)
            }
            WriteOp::PutHead { head, now, reply } => {
                Reply::PutHead(reply, t.put_head(&head, now, &self.rules)?)
            }
            WriteOp::TouchHeads { accesses, reply } => {
                let mut held = 0;
                for (key, at) in accesses {
                    if t.touch_head(&key, at)? {
                        held += 1;
                    }
                }
                Reply::Count(reply, held)
            }
            WriteOp::CollectHeads { cutoff, max, reply } => {
                Reply::Count(reply, t.collect_heads(cutoff, max)?)
            }
            WriteOp::Import {
                staged,
                record,
                reply,
            } => Reply::Insert(reply, self.import(t, batch, staged, record)?),
            WriteOp::ImportHead { row, reply } => Reply::Flag(reply, t.import_head(row)?),
            WriteOp::ImportForward { row, reply } => {
                let kept = t.meta(&row.id)?.is_none();
                if kept {
                    t.put_forward(&row.id, &row.forward, row.last_access)?;
                }
                Reply::Flag(reply, kept)
            }
            WriteOp::Stop => return Ok(None),
        }))
    }

    /// An upload: an access (and perhaps a claim) if the blob is held,
    /// else the body and its rows, if the rules admit it.
    #[expect(
        clippy::too_many_arguments,
        reason = "the fields of one WriteOp::Insert"
    )]
    fn insert(
        &self,
        t: &mut Tables<'_>,
        batch: &mut Batch,
        staged: Staged,
        id: BlobId,
        size: u64,
        source: Source,
        now: u64,
    ) -> Result<InsertOutcome, StoreError> {
        let owner = source.owner();
        let admitted = if let Some(mut meta) = t.meta(&id)? {
            match self.acknowledge_held(t, &id, &mut meta, source, now)? {
                ClaimOutcome::QuotaExceeded => Err(InsertOutcome::QuotaExceeded),
                _ => Err(InsertOutcome::AlreadyHeld),
            }
        } else {
            let quota = self.rules.quota_for(source);
            let usage = if quota.is_set() {
                t.owner_usage(&owner)?
            } else {
                0
            };
            self.rules.admit(t.bytes, size, quota, usage)
        };
        if let Err(refused) = admitted {
            batch.drop_staged(staged);
            return Ok(refused);
        }
        let body = self.place_body(staged, &id, size, batch)?;
        let meta = BlobMeta {
            size,
            created: now,
            last_access: now,
            owner: Some(owner),
        };
        let row = held_again(t, &id, meta, [source.key()], body)?;
        t.insert(&id, &row)?;
        Ok(InsertOutcome::Stored)
    }

    /// A blob copied from another store with its index record; only
    /// capacity applies (the quotas were the other store's to enforce).
    fn import(
        &self,
        t: &mut Tables<'_>,
        batch: &mut Batch,
        staged: Staged,
        record: BlobRecord,
    ) -> Result<InsertOutcome, StoreError> {
        let BlobRecord {
            id,
            meta,
            sources,
            co_owners,
        } = record;
        let admitted = if t.meta(&id)?.is_some() {
            Err(InsertOutcome::AlreadyHeld)
        } else {
            self.rules.admit(t.bytes, meta.size, Limit::NONE, 0)
        };
        if let Err(refused) = admitted {
            batch.drop_staged(staged);
            return Ok(refused);
        }
        let body = self.place_body(staged, &id, meta.size, batch)?;
        let row = held_again(t, &id, meta, sources, body)?;
        t.insert(&id, &row)?;
        // Held to the rules of a claim: an export from either backend
        // never lists the main owner, a key twice or too many, but a
        // record that does must not charge a key twice.
        for owner in co_owners {
            let owns = meta.owner.as_ref() == Some(&owner) || t.is_co_owner(&id, &owner)?;
            if Rules::claim(owns, t.owner_count(&id, &meta)?).is_ok() {
                t.add_co_owner(&id, &meta, &owner)?;
            }
        }
        Ok(InsertOutcome::Stored)
    }

    /// A claim of ownership on the held blob `id`, as the rules decide it.
    fn claim(
        &self,
        t: &mut Tables<'_>,
        id: &BlobId,
        meta: &BlobMeta,
        owner: &VerifyingKey,
    ) -> Result<ClaimOutcome, StoreError> {
        let owns = meta.owner.as_ref() == Some(owner) || t.is_co_owner(id, owner)?;
        if let Err(decided) = Rules::claim(owns, t.owner_count(id, meta)?) {
            return Ok(decided);
        }
        let outcome = self.rules.charge(t.owner_usage(owner)?, meta.size);
        if outcome == ClaimOutcome::Claimed {
            t.add_co_owner(id, meta, owner)?;
        }
        Ok(outcome)
    }

    /// Records an upload of the held blob `id` by `source`: an access, the
    /// source and, for a client, a claim of ownership. A claim over quota
    /// is refused and nothing is recorded.
    fn acknowledge_held(
        &self,
        t: &mut Tables<'_>,
        id: &BlobId,
        meta: &mut BlobMeta,
        source: Source,
        now: u64,
    ) -> Result<ClaimOutcome, StoreError> {
        let claim = match source {
            Source::Client(key) => self.claim(t, id, meta, &key)?,
            Source::Peer(_) => ClaimOutcome::AlreadyOwner,
        };
        if claim != ClaimOutcome::QuotaExceeded {
            t.touch(id, meta, now)?;
            t.add_source(id, source)?;
        }
        Ok(claim)
    }

    /// Puts a verified body in place: returns it for the blob's row if it
    /// is small (read from the temp file if need be), else installs it as
    /// a file (and the filesystem must be synced before the commit). Where
    /// a blob lives depends on its size alone, so a delete and a re-upload
    /// of one id in a batch always agree on it.
    fn place_body(
        &self,
        staged: Staged,
        id: &BlobId,
        size: u64,
        batch: &mut Batch,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        batch.unlink.remove(id);
        match staged {
            Staged::File(temp) if size <= INLINE_MAX as u64 => {
                let data =
                    std::fs::read(&temp).map_err(|e| StoreError::io("read small upload", e))?;
                batch.temps_to_drop.push(temp);
                Ok(Some(data))
            }
            Staged::Bytes(data) if data.len() <= INLINE_MAX => Ok(Some(data.to_vec())),
            Staged::Bytes(data) => {
                self.files
                    .install_bytes(id, &data)
                    .map_err(|e| StoreError::io("install blob file", e))?;
                batch.installed = true;
                Ok(None)
            }
            Staged::File(temp) => {
                self.files
                    .install(&temp, id)
                    .map_err(|e| StoreError::io("install blob file", e))?;
                batch.installed = true;
                Ok(None)
            }
        }
    }

    fn unlink_files(&mut self, ids: BTreeSet<BlobId>) -> Result<(), StoreError> {
        let mut removed = false;
        for id in ids {
            removed |= self
                .files
                .remove(&id)
                .map_err(|e| StoreError::io("remove blob file", e))?
                .is_some();
            self.unlinked.push(id);
        }
        if removed {
            self.files
                .sync_filesystem()
                .map_err(|e| StoreError::io("sync blob store", e))?;
        }
        Ok(())
    }
}

/// A delete by `owner` whose token was fresh: its claim goes, and the blob
/// with the last claim.
fn delete(
    t: &mut Tables<'_>,
    batch: &mut Batch,
    id: &BlobId,
    owner: &VerifyingKey,
) -> Result<DeleteOutcome, StoreError> {
    let Some(mut meta) = t.meta(id)? else {
        return Ok(DeleteOutcome::NotFound);
    };
    let owns = meta.owner.as_ref() == Some(owner) || t.is_co_owner(id, owner)?;
    let outcome = Rules::release(owns, t.owner_count(id, &meta)?);
    match outcome {
        // The blob's removal refunds every owner, this one included.
        DeleteOutcome::Deleted => batch.removed(*id, t.remove(id, &meta)?),
        DeleteOutcome::Released { .. } => t.release(id, &mut meta, owner)?,
        _ => {}
    }
    Ok(outcome)
}

/// The row of `id`, about to be held: `sources` and, if the relay had
/// transferred the blob, the peers it still counted as sources. Its
/// forwarding record goes (the relay answers for the blob itself again).
fn held_again(
    t: &mut Tables<'_>,
    id: &BlobId,
    meta: BlobMeta,
    sources: impl IntoIterator<Item = SourceKey>,
    body: Option<Vec<u8>>,
) -> Result<BlobRow, StoreError> {
    t.drop_forward(id)?;
    let mut row = BlobRow {
        meta,
        sources: t.take_forward_sources(id)?,
        body,
    };
    for source in sources {
        row.add_source(source);
    }
    Ok(row)
}

/// What a batch leaves to do around its commit.
#[derive(Default)]
struct Batch {
    /// A blob file was installed: the filesystem must be synced first.
    installed: bool,
    /// Blob files to remove once the commit is durable.
    unlink: BTreeSet<BlobId>,
    /// Temp files no longer needed (refused uploads, small ones read in).
    temps_to_drop: Vec<PathBuf>,
    /// A blob stored in the index went: the cache must forget it.
    deleted_inline: bool,
}

impl Batch {
    /// Notes a removed blob: its file goes after the commit, or, if it had
    /// none, its cached body.
    fn removed(&mut self, id: BlobId, had_file: bool) {
        if had_file {
            self.unlink.insert(id);
        } else {
            self.deleted_inline = true;
        }
    }

    /// Drops the bytes of a refused upload.
    fn drop_staged(&mut self, staged: Staged) {
        if let Staged::File(temp) = staged {
            self.temps_to_drop.push(temp);
        }
    }
}
