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

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cairn_proto::{BlobId, VerifyingKey};
use redb::ReadableTable as _;
use tokio::sync::{mpsc, oneshot};

use super::cache::BlobCache;
use super::files::BlobFiles;
use super::index::{
    self, BLOB_SOURCES, BLOBS, BY_ACCESS, CO_OWNERS, FORWARDS, FORWARDS_BY_ACCESS, ForwardValue,
    HEADS, HEADS_BY_ACCESS, HeadsKey, HeadsValue, INLINE, OWNERS, PENDING_UNLINK, SOURCES,
    SPENT_TOKENS, STAT_BLOBS, STAT_BYTES, STAT_HEADS, STATS, mailbox_range,
};
use super::model::{BlobMeta, BlobRecord, CLIENT_SOURCE, Forward, ForwardRow, HeadKey, HeadRow};
use super::{
    ClaimOutcome, DeleteOutcome, HeadOutcome, INLINE_MAX, InsertOutcome, MAX_OWNERS,
    MAX_SLOTS_PER_MAILBOX, NewHead, Source, SpentToken, Staged, StoreError, StoreStats,
};

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
        reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
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
        /// The blob's size and the client's claim, or `None` if it is not
        /// held.
        reply: oneshot::Sender<Result<Option<(u64, ClaimOutcome)>, StoreError>>,
    },
    /// Adds an owner to a held blob.
    AddOwner {
        id: BlobId,
        owner: VerifyingKey,
        now: u64,
        reply: oneshot::Sender<Result<ClaimOutcome, StoreError>>,
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
        WriteOp::Touch { reply, .. }
        | WriteOp::TouchHeads { reply, .. }
        | WriteOp::CollectHeads { reply, .. }
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
    pub(crate) db: Arc<redb::Database>,
    pub(crate) files: BlobFiles,
    pub(crate) stats: Arc<StoreStats>,
    pub(crate) capacity: u64,
    pub(crate) key_quota: u64,
    /// Most heads kept in all (0: no limit).
    pub(crate) max_heads: u64,
    /// Unlinks finished after the previous commit, to drop from
    /// `PENDING_UNLINK` in the next transaction.
    pub(crate) unlinked: Vec<BlobId>,
    pub(crate) cache: Arc<BlobCache>,
}

impl Writer {
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
        batch: Vec<WriteOp>,
        replies: &mut Vec<Reply>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(redb::Error::from)?;
        let mut installed = false;
        let mut unlink: BTreeSet<BlobId> = BTreeSet::new();
        let mut temps_to_drop = Vec::new();
        let mut deleted_inline = false;
        let (bytes, blobs, heads);
        {
            let mut t = Tables::open(&txn)?;
            for id in self.unlinked.drain(..) {
                t.pending.remove(id.as_bytes()).map_err(redb::Error::from)?;
            }
            for op in batch {
                match op {
                    WriteOp::Insert {
                        staged,
                        id,
                        size,
                        source,
                        now,
                        reply,
                    } => {
                        let owner = source.owner();
                        let quota_applies =
                            self.key_quota > 0 && matches!(source, Source::Client(_));
                        let refused = if let Some(mut meta) = t.meta(&id)? {
                            match t.acknowledge_held(&id, &mut meta, source, now, self.key_quota)? {
                                ClaimOutcome::QuotaExceeded => Some(InsertOutcome::QuotaExceeded),
                                _ => Some(InsertOutcome::AlreadyHeld),
                            }
                        } else if t.bytes.saturating_add(size) > self.capacity {
                            Some(InsertOutcome::RelayFull)
                        } else if quota_applies
                            && t.owner_usage(&owner)?.saturating_add(size) > self.key_quota
                        {
                            Some(InsertOutcome::QuotaExceeded)
                        } else {
                            None
                        };
                        let outcome = if let Some(refused) = refused {
                            if let Staged::File(temp) = staged {
                                temps_to_drop.push(temp);
                            }
                            refused
                        } else {
                            installed |=
                                self.place_body(&mut t, staged, &id, size, &mut temps_to_drop)?;
                            unlink.remove(&id);
                            let meta = BlobMeta {
                                size,
                                created: now,
                                last_access: now,
                                owner: Some(owner),
                            };
                            t.insert(&id, &meta)?;
                            t.add_source(&id, source)?;
                            t.drop_forward(&id)?;
                            InsertOutcome::Stored
                        };
                        replies.push(Reply::Insert(reply, outcome));
                    }
                    WriteOp::Delete {
                        id,
                        owner,
                        token,
                        forget_before,
                        reply,
                    } => {
                        t.forget_spent_tokens(forget_before)?;
                        let outcome = if !t.spend(token)? {
                            DeleteOutcome::Replayed
                        } else {
                            match t.meta(&id)? {
                                None => DeleteOutcome::NotFound,
                                Some(mut meta) => match t.release(&id, &mut meta, &owner)? {
                                    None => DeleteOutcome::NotOwner,
                                    Some(0) => {
                                        if t.remove(&id, &meta)? {
                                            unlink.insert(id);
                                        } else {
                                            deleted_inline = true;
                                        }
                                        DeleteOutcome::Deleted
                                    }
                                    Some(owners_left) => DeleteOutcome::Released { owners_left },
                                },
                            }
                        };
                        replies.push(Reply::Delete(reply, outcome));
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
                        replies.push(Reply::Count(reply, held));
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
                                // Peers that replicated the blob here still
                                // count it as held (the relay answers for it
                                // through the redirect), or reconciliation
                                // would push it straight back.
                                let peers = t.peer_sources(&id)?;
                                if t.remove(&id, &meta)? {
                                    unlink.insert(id);
                                } else {
                                    deleted_inline = true;
                                }
                                for peer in peers {
                                    t.add_source_row(&id, peer)?;
                                }
                                t.put_forward(&id, &forward, now)?;
                                true
                            }
                            _ => false,
                        };
                        replies.push(Reply::Flag(reply, done));
                    }
                    WriteOp::AcknowledgeHeld {
                        id,
                        source,
                        now,
                        reply,
                    } => {
                        let held = match t.meta(&id)? {
                            Some(mut meta) => {
                                let claim = t.acknowledge_held(
                                    &id,
                                    &mut meta,
                                    source,
                                    now,
                                    self.key_quota,
                                )?;
                                Some((meta.size, claim))
                            }
                            None => None,
                        };
                        replies.push(Reply::Held(reply, held));
                    }
                    WriteOp::AddOwner {
                        id,
                        owner,
                        now,
                        reply,
                    } => {
                        let outcome = match t.meta(&id)? {
                            None => ClaimOutcome::NotFound,
                            Some(mut meta) => {
                                let outcome = t.add_owner(&id, &meta, &owner, self.key_quota)?;
                                if outcome != ClaimOutcome::QuotaExceeded {
                                    t.touch(&id, &mut meta, now)?;
                                }
                                outcome
                            }
                        };
                        replies.push(Reply::AddOwner(reply, outcome));
                    }
                    WriteOp::CollectForwards { cutoff, max, reply } => {
                        let deleted = t.collect_forwards(cutoff, max)?;
                        replies.push(Reply::Count(reply, deleted));
                    }
                    WriteOp::Collect { cutoff, max, reply } => {
                        let expired = expired_prefix(&t.by_access, cutoff, max)?;
                        let mut deleted = Vec::with_capacity(expired.len());
                        for (_, raw) in expired {
                            let id = BlobId::from_bytes(raw);
                            if let Some(meta) = t.meta(&id)? {
                                if t.remove(&id, &meta)? {
                                    unlink.insert(id);
                                } else {
                                    deleted_inline = true;
                                }
                                deleted.push((id, meta.size));
                            }
                        }
                        replies.push(Reply::Collect(reply, deleted));
                    }
                    WriteOp::PutHead { head, now, reply } => {
                        let outcome = t.put_head(&head, now, self.max_heads)?;
                        replies.push(Reply::PutHead(reply, outcome));
                    }
                    WriteOp::TouchHeads { accesses, reply } => {
                        let mut held = 0;
                        for (key, at) in accesses {
                            if t.touch_head(&key, at)? {
                                held += 1;
                            }
                        }
                        replies.push(Reply::Count(reply, held));
                    }
                    WriteOp::CollectHeads { cutoff, max, reply } => {
                        let deleted = t.collect_heads(cutoff, max)?;
                        replies.push(Reply::Count(reply, deleted));
                    }
                    WriteOp::Import {
                        staged,
                        record,
                        reply,
                    } => {
                        let BlobRecord {
                            id,
                            meta,
                            sources,
                            co_owners,
                        } = record;
                        let outcome = if t.meta(&id)?.is_some() {
                            if let Staged::File(temp) = staged {
                                temps_to_drop.push(temp);
                            }
                            InsertOutcome::AlreadyHeld
                        } else if t.bytes.saturating_add(meta.size) > self.capacity {
                            if let Staged::File(temp) = staged {
                                temps_to_drop.push(temp);
                            }
                            InsertOutcome::RelayFull
                        } else {
                            installed |= self.place_body(
                                &mut t,
                                staged,
                                &id,
                                meta.size,
                                &mut temps_to_drop,
                            )?;
                            unlink.remove(&id);
                            t.insert(&id, &meta)?;
                            for source in sources {
                                t.add_source_row(&id, source)?;
                            }
                            for owner in co_owners {
                                t.add_owner(&id, &meta, &owner, 0)?;
                            }
                            t.drop_forward(&id)?;
                            InsertOutcome::Stored
                        };
                        replies.push(Reply::Insert(reply, outcome));
                    }
                    WriteOp::ImportHead { row, reply } => {
                        let (mailbox, slot) = (row.key.mailbox_bytes(), row.key.slot.as_str());
                        let stored = t.head(mailbox, slot)?;
                        let newer = stored.as_ref().is_none_or(|old| old.seq < row.seq);
                        if newer {
                            if stored.is_none() {
                                t.head_count += 1;
                            }
                            let new = StoredHead {
                                seq: row.seq,
                                last_access: row.last_access,
                                envelope: row.envelope,
                            };
                            t.write_head(mailbox, slot, stored.as_ref(), &new)?;
                        }
                        replies.push(Reply::Flag(reply, newer));
                    }
                    WriteOp::ImportForward { row, reply } => {
                        let kept = t.meta(&row.id)?.is_none();
                        if kept {
                            t.put_forward(&row.id, &row.forward, row.last_access)?;
                        }
                        replies.push(Reply::Flag(reply, kept));
                    }
                    WriteOp::Stop => {}
                }
            }
            t.save_totals()?;
            (bytes, blobs, heads) = (t.bytes, t.count, t.head_count);
        }
        // File contents and renames must be durable before the index says
        // the blobs exist: one filesystem sync for the whole batch (group
        // commit).
        if installed {
            self.files
                .sync_filesystem()
                .map_err(|e| StoreError::io("sync blob store", e))?;
        }
        txn.commit().map_err(redb::Error::from)?;
        self.stats.bytes.store(bytes, Ordering::SeqCst);
        self.stats.blobs.store(blobs, Ordering::SeqCst);
        self.stats.heads.store(heads, Ordering::SeqCst);
        // Before anyone hears of a deletion, no cached copy may remain.
        if !unlink.is_empty() || deleted_inline {
            self.cache.invalidate();
        }
        for temp in temps_to_drop {
            let _ = std::fs::remove_file(temp);
        }
        // The index no longer names these blobs; only now may their files
        // go. Done before answering, so a 204 means the space is free.
        let cleanup = self.unlink_files(unlink);
        // Committed means durable: every requester hears success even if
        // the cleanup failed; that failure stops the writer for later
        // batches only (the next start finishes pending unlinks).
        for reply in replies.drain(..) {
            reply.send_ok();
        }
        cleanup
    }

    /// Puts a verified body in place: in the index for small blobs (read
    /// from the temp file if need be), else as a file. Where a blob lives
    /// depends on its size alone, so a delete and a re-upload of one id in
    /// a batch always agree on it. True if a file was installed (and the
    /// filesystem must be synced before the commit).
    fn place_body(
        &self,
        t: &mut Tables<'_>,
        staged: Staged,
        id: &BlobId,
        size: u64,
        temps_to_drop: &mut Vec<std::path::PathBuf>,
    ) -> Result<bool, StoreError> {
        let staged = match staged {
            Staged::File(temp) if size <= INLINE_MAX as u64 => {
                let data =
                    std::fs::read(&temp).map_err(|e| StoreError::io("read small upload", e))?;
                temps_to_drop.push(temp);
                Staged::Bytes(data.into())
            }
            other => other,
        };
        match staged {
            Staged::Bytes(data) if data.len() <= INLINE_MAX => {
                t.inline
                    .insert(id.as_bytes(), data.as_ref())
                    .map_err(redb::Error::from)?;
                Ok(false)
            }
            Staged::Bytes(data) => {
                self.files
                    .install_bytes(id, &data)
                    .map_err(|e| StoreError::io("install blob file", e))?;
                Ok(true)
            }
            Staged::File(temp) => {
                self.files
                    .install(&temp, id)
                    .map_err(|e| StoreError::io("install blob file", e))?;
                Ok(true)
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

/// The first `max` rows of a last-access-ordered table that are older than
/// `cutoff`: what a GC pass deletes.
fn expired_prefix(
    table: &redb::Table<'_, (u64, [u8; 32]), ()>,
    cutoff: u64,
    max: usize,
) -> Result<Vec<(u64, [u8; 32])>, StoreError> {
    table
        .range(..(cutoff, [0u8; 32]))
        .map_err(redb::Error::from)?
        .take(max)
        .map(|row| row.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()
        .map_err(|e| redb::Error::from(e).into())
}

/// The index tables inside one write transaction, with running totals.
struct Tables<'txn> {
    blobs: redb::Table<'txn, [u8; 32], [u8; 56]>,
    by_access: redb::Table<'txn, (u64, [u8; 32]), ()>,
    owners: redb::Table<'txn, [u8; 32], u64>,
    co_owners: redb::Table<'txn, ([u8; 32], [u8; 32]), ()>,
    pending: redb::Table<'txn, [u8; 32], ()>,
    inline: redb::Table<'txn, [u8; 32], &'static [u8]>,
    stats: redb::Table<'txn, &'static str, u64>,
    heads: redb::Table<'txn, HeadsKey, HeadsValue>,
    heads_by_access: redb::Table<'txn, (u64, [u8; 32], &'static str), ()>,
    sources: redb::Table<'txn, ([u8; 32], [u8; 32]), ()>,
    blob_sources: redb::Table<'txn, ([u8; 32], [u8; 32]), ()>,
    forwards: redb::Table<'txn, [u8; 32], ForwardValue>,
    forwards_by_access: redb::Table<'txn, (u64, [u8; 32]), ()>,
    spent: redb::Table<'txn, (u64, [u8; 16]), ()>,
    bytes: u64,
    count: u64,
    head_count: u64,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn redb::WriteTransaction) -> Result<Self, StoreError> {
        let stats = txn.open_table(STATS).map_err(redb::Error::from)?;
        let stat = |k| -> Result<u64, StoreError> {
            Ok(stats
                .get(k)
                .map_err(redb::Error::from)?
                .map_or(0, |v| v.value()))
        };
        let (bytes, count, head_count) = (stat(STAT_BYTES)?, stat(STAT_BLOBS)?, stat(STAT_HEADS)?);
        Ok(Self {
            blobs: txn.open_table(BLOBS).map_err(redb::Error::from)?,
            by_access: txn.open_table(BY_ACCESS).map_err(redb::Error::from)?,
            owners: txn.open_table(OWNERS).map_err(redb::Error::from)?,
            co_owners: txn.open_table(CO_OWNERS).map_err(redb::Error::from)?,
            pending: txn.open_table(PENDING_UNLINK).map_err(redb::Error::from)?,
            inline: txn.open_table(INLINE).map_err(redb::Error::from)?,
            stats,
            heads: txn.open_table(HEADS).map_err(redb::Error::from)?,
            heads_by_access: txn.open_table(HEADS_BY_ACCESS).map_err(redb::Error::from)?,
            sources: txn.open_table(SOURCES).map_err(redb::Error::from)?,
            blob_sources: txn.open_table(BLOB_SOURCES).map_err(redb::Error::from)?,
            forwards: txn.open_table(FORWARDS).map_err(redb::Error::from)?,
            forwards_by_access: txn
                .open_table(FORWARDS_BY_ACCESS)
                .map_err(redb::Error::from)?,
            spent: txn.open_table(SPENT_TOKENS).map_err(redb::Error::from)?,
            bytes,
            count,
            head_count,
        })
    }

    /// Writes the running totals back to the stats table.
    fn save_totals(&mut self) -> Result<(), StoreError> {
        for (key, value) in [
            (STAT_BYTES, self.bytes),
            (STAT_BLOBS, self.count),
            (STAT_HEADS, self.head_count),
        ] {
            self.stats.insert(key, value).map_err(redb::Error::from)?;
        }
        Ok(())
    }

    fn meta(&self, id: &BlobId) -> Result<Option<BlobMeta>, StoreError> {
        Ok(self
            .blobs
            .get(id.as_bytes())
            .map_err(redb::Error::from)?
            .map(|m| BlobMeta::decode(&m.value())))
    }

    fn owner_usage(&self, owner: &VerifyingKey) -> Result<u64, StoreError> {
        Ok(self
            .owners
            .get(owner.to_bytes())
            .map_err(redb::Error::from)?
            .map_or(0, |v| v.value()))
    }

    fn insert(&mut self, id: &BlobId, meta: &BlobMeta) -> Result<(), StoreError> {
        self.blobs
            .insert(id.as_bytes(), meta.encode())
            .map_err(redb::Error::from)?;
        self.by_access
            .insert((meta.last_access, *id.as_bytes()), ())
            .map_err(redb::Error::from)?;
        if let Some(owner) = &meta.owner {
            self.charge(owner, meta.size)?;
        }
        self.bytes += meta.size;
        self.count += 1;
        Ok(())
    }

    /// Adds `size` to `owner`'s usage.
    fn charge(&mut self, owner: &VerifyingKey, size: u64) -> Result<(), StoreError> {
        let used = self.owner_usage(owner)?;
        self.owners
            .insert(owner.to_bytes(), used.saturating_add(size))
            .map_err(redb::Error::from)?;
        Ok(())
    }

    /// Takes `size` off `owner`'s usage, dropping its row at zero.
    fn refund(&mut self, owner: &VerifyingKey, size: u64) -> Result<(), StoreError> {
        let left = self.owner_usage(owner)?.saturating_sub(size);
        if left == 0 {
            self.owners
                .remove(owner.to_bytes())
                .map_err(redb::Error::from)?;
        } else {
            self.owners
                .insert(owner.to_bytes(), left)
                .map_err(redb::Error::from)?;
        }
        Ok(())
    }

    fn is_co_owner(&self, id: &BlobId, key: &VerifyingKey) -> Result<bool, StoreError> {
        Ok(self
            .co_owners
            .get((*id.as_bytes(), key.to_bytes()))
            .map_err(redb::Error::from)?
            .is_some())
    }

    /// Makes `owner` an owner of the held blob `id`, charging its usage,
    /// unless that would take it over `quota` (0: no quota).
    fn add_owner(
        &mut self,
        id: &BlobId,
        meta: &BlobMeta,
        owner: &VerifyingKey,
        quota: u64,
    ) -> Result<ClaimOutcome, StoreError> {
        if meta.owner.as_ref() == Some(owner) || self.is_co_owner(id, owner)? {
            return Ok(ClaimOutcome::AlreadyOwner);
        }
        if self.owner_count(id, meta)? >= MAX_OWNERS {
            return Ok(ClaimOutcome::TooManyOwners);
        }
        if quota > 0 && self.owner_usage(owner)?.saturating_add(meta.size) > quota {
            return Ok(ClaimOutcome::QuotaExceeded);
        }
        self.co_owners
            .insert((*id.as_bytes(), owner.to_bytes()), ())
            .map_err(redb::Error::from)?;
        self.charge(owner, meta.size)?;
        Ok(ClaimOutcome::Claimed)
    }

    /// Records an upload of the held blob `id` by `source`: an access, the
    /// source and, for a client, a claim of ownership within `quota`. A
    /// claim over quota is refused and nothing is recorded.
    fn acknowledge_held(
        &mut self,
        id: &BlobId,
        meta: &mut BlobMeta,
        source: Source,
        now: u64,
        quota: u64,
    ) -> Result<ClaimOutcome, StoreError> {
        let claim = match source {
            Source::Client(key) => self.add_owner(id, meta, &key, quota)?,
            Source::Peer(_) => ClaimOutcome::AlreadyOwner,
        };
        if claim != ClaimOutcome::QuotaExceeded {
            self.touch(id, meta, now)?;
            self.add_source(id, source)?;
        }
        Ok(claim)
    }

    /// Drops `owner`'s claim on the held blob `id` and refunds its usage.
    /// Returns how many owners are left, or `None` if `owner` was not one.
    /// The caller removes the blob when none is left.
    fn release(
        &mut self,
        id: &BlobId,
        meta: &mut BlobMeta,
        owner: &VerifyingKey,
    ) -> Result<Option<u64>, StoreError> {
        if meta.owner.as_ref() == Some(owner) {
            meta.owner = None;
            self.blobs
                .insert(id.as_bytes(), meta.encode())
                .map_err(redb::Error::from)?;
        } else if self
            .co_owners
            .remove((*id.as_bytes(), owner.to_bytes()))
            .map_err(redb::Error::from)?
            .is_none()
        {
            return Ok(None);
        }
        self.refund(owner, meta.size)?;
        self.owner_count(id, meta).map(Some)
    }

    /// How many owners the held blob `id` has.
    fn owner_count(&self, id: &BlobId, meta: &BlobMeta) -> Result<u64, StoreError> {
        let id = *id.as_bytes();
        let co_owners = self
            .co_owners
            .range((id, [0u8; 32])..=(id, [0xff; 32]))
            .map_err(redb::Error::from)?
            .count() as u64;
        Ok(co_owners + u64::from(meta.owner.is_some()))
    }

    /// Records an access at `at`, moving the blob in the last-access order.
    fn touch(&mut self, id: &BlobId, meta: &mut BlobMeta, at: u64) -> Result<(), StoreError> {
        if at <= meta.last_access {
            return Ok(());
        }
        self.by_access
            .remove((meta.last_access, *id.as_bytes()))
            .map_err(redb::Error::from)?;
        meta.last_access = at;
        self.by_access
            .insert((at, *id.as_bytes()), ())
            .map_err(redb::Error::from)?;
        self.blobs
            .insert(id.as_bytes(), meta.encode())
            .map_err(redb::Error::from)?;
        Ok(())
    }

    /// Drops a blob from the index. Returns true when it has a file to
    /// unlink (after the commit), false when it was stored inline.
    fn remove(&mut self, id: &BlobId, meta: &BlobMeta) -> Result<bool, StoreError> {
        self.blobs
            .remove(id.as_bytes())
            .map_err(redb::Error::from)?;
        self.by_access
            .remove((meta.last_access, *id.as_bytes()))
            .map_err(redb::Error::from)?;
        if let Some(owner) = &meta.owner {
            self.refund(owner, meta.size)?;
        }
        for owner in index::keys_of(&self.co_owners, *id.as_bytes())? {
            self.co_owners
                .remove((*id.as_bytes(), owner))
                .map_err(redb::Error::from)?;
            if let Ok(owner) = VerifyingKey::from_bytes(&owner) {
                self.refund(&owner, meta.size)?;
            }
        }
        self.bytes = self.bytes.saturating_sub(meta.size);
        self.count = self.count.saturating_sub(1);
        self.drop_sources(id)?;
        if self
            .inline
            .remove(id.as_bytes())
            .map_err(redb::Error::from)?
            .is_some()
        {
            return Ok(false);
        }
        self.pending
            .insert(id.as_bytes(), ())
            .map_err(redb::Error::from)?;
        Ok(true)
    }

    /// Notes that `source` handed the relay `id` (a no-op if it had).
    fn add_source(&mut self, id: &BlobId, source: Source) -> Result<(), StoreError> {
        self.add_source_row(id, source.row_key())
    }

    /// The peers (not clients) that handed the relay `id`.
    fn peer_sources(&self, id: &BlobId) -> Result<Vec<[u8; 32]>, StoreError> {
        let id = *id.as_bytes();
        let mut peers = Vec::new();
        for row in self
            .blob_sources
            .range((id, [0u8; 32])..=(id, [0xff; 32]))
            .map_err(redb::Error::from)?
        {
            let source = row.map_err(redb::Error::from)?.0.value().1;
            if source != CLIENT_SOURCE {
                peers.push(source);
            }
        }
        Ok(peers)
    }

    /// Adds the source row (`source`, `id`) in both orders.
    fn add_source_row(&mut self, id: &BlobId, source: [u8; 32]) -> Result<(), StoreError> {
        let id = *id.as_bytes();
        self.sources
            .insert((source, id), ())
            .map_err(redb::Error::from)?;
        self.blob_sources
            .insert((id, source), ())
            .map_err(redb::Error::from)?;
        Ok(())
    }

    /// Forgets every source of `id`.
    fn drop_sources(&mut self, id: &BlobId) -> Result<(), StoreError> {
        let id = *id.as_bytes();
        let sources: Vec<[u8; 32]> = self
            .blob_sources
            .range((id, [0u8; 32])..=(id, [0xff; 32]))
            .map_err(redb::Error::from)?
            .map(|row| row.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()
            .map_err(redb::Error::from)?;
        for source in sources {
            self.blob_sources
                .remove((id, source))
                .map_err(redb::Error::from)?;
            self.sources
                .remove((source, id))
                .map_err(redb::Error::from)?;
        }
        Ok(())
    }

    /// Records that `forward` answers for `id` from `now` on.
    fn put_forward(&mut self, id: &BlobId, forward: &Forward, now: u64) -> Result<(), StoreError> {
        self.drop_forward(id)?;
        self.forwards
            .insert(
                id.as_bytes(),
                (forward.peer.to_bytes(), now, forward.url.as_str()),
            )
            .map_err(redb::Error::from)?;
        self.forwards_by_access
            .insert((now, *id.as_bytes()), ())
            .map_err(redb::Error::from)?;
        Ok(())
    }

    /// Removes the forwarding record of `id`, if any (the relay holds the
    /// blob again, or the record expired).
    fn drop_forward(&mut self, id: &BlobId) -> Result<(), StoreError> {
        let old = self
            .forwards
            .remove(id.as_bytes())
            .map_err(redb::Error::from)?
            .map(|row| row.value().1);
        if let Some(at) = old {
            self.forwards_by_access
                .remove((at, *id.as_bytes()))
                .map_err(redb::Error::from)?;
        }
        Ok(())
    }

    /// Moves the forwarding record of `id` (if any) to last access `at`.
    fn touch_forward(&mut self, id: &BlobId, at: u64) -> Result<(), StoreError> {
        let old = self
            .forwards
            .get(id.as_bytes())
            .map_err(redb::Error::from)?
            .map(|row| {
                let (peer, last, url) = row.value();
                (peer, last, url.to_owned())
            });
        let Some((peer, last, url)) = old else {
            return Ok(());
        };
        if at <= last {
            return Ok(());
        }
        self.forwards_by_access
            .remove((last, *id.as_bytes()))
            .map_err(redb::Error::from)?;
        self.forwards
            .insert(id.as_bytes(), (peer, at, url.as_str()))
            .map_err(redb::Error::from)?;
        self.forwards_by_access
            .insert((at, *id.as_bytes()), ())
            .map_err(redb::Error::from)?;
        Ok(())
    }

    /// Deletes up to `max` forwarding records last used before `cutoff`.
    fn collect_forwards(&mut self, cutoff: u64, max: usize) -> Result<usize, StoreError> {
        let expired = expired_prefix(&self.forwards_by_access, cutoff, max)?;
        for (at, id) in &expired {
            self.forwards_by_access
                .remove((*at, *id))
                .map_err(redb::Error::from)?;
            self.forwards.remove(id).map_err(redb::Error::from)?;
            // No longer answered for: peers' reconciliation may see it go.
            self.drop_sources(&BlobId::from_bytes(*id))?;
        }
        Ok(expired.len())
    }

    /// (seq, last access, envelope) of the head in a slot.
    fn head(&self, mailbox: [u8; 32], slot: &str) -> Result<Option<StoredHead>, StoreError> {
        Ok(self
            .heads
            .get((mailbox, slot))
            .map_err(redb::Error::from)?
            .map(|row| {
                let (seq, last_access, envelope) = row.value();
                StoredHead {
                    seq,
                    last_access,
                    envelope: envelope.to_vec(),
                }
            }))
    }

    /// Writes a head row and its place in the last-access order, replacing
    /// `old` (the row's previous state) if there was one.
    fn write_head(
        &mut self,
        mailbox: [u8; 32],
        slot: &str,
        old: Option<&StoredHead>,
        new: &StoredHead,
    ) -> Result<(), StoreError> {
        if let Some(old) = old {
            self.heads_by_access
                .remove((old.last_access, mailbox, slot))
                .map_err(redb::Error::from)?;
        }
        self.heads
            .insert(
                (mailbox, slot),
                (new.seq, new.last_access, new.envelope.as_slice()),
            )
            .map_err(redb::Error::from)?;
        self.heads_by_access
            .insert((new.last_access, mailbox, slot), ())
            .map_err(redb::Error::from)?;
        Ok(())
    }

    /// The compare-and-set of a head PUT: stores `head` only if its `seq`
    /// is above the stored one. Either way the slot was accessed at `now`.
    fn put_head(
        &mut self,
        head: &NewHead,
        now: u64,
        max_heads: u64,
    ) -> Result<HeadOutcome, StoreError> {
        let mailbox = head.key.mailbox.to_bytes();
        let slot = head.key.slot.as_str();
        let stored = self.head(mailbox, slot)?;
        let outcome = match &stored {
            Some(current) if !head.replaces(current.seq, &current.envelope) => {
                // The refusal shows the client the stored head: a read, and
                // so an access.
                if now > current.last_access {
                    let touched = StoredHead {
                        last_access: now,
                        ..current.clone()
                    };
                    self.write_head(mailbox, slot, Some(current), &touched)?;
                }
                return Ok(HeadOutcome::Stale {
                    seq: current.seq,
                    current: current.envelope.clone(),
                });
            }
            Some(_) => HeadOutcome::Replaced,
            None => {
                if max_heads > 0 && self.head_count >= max_heads {
                    return Ok(HeadOutcome::RelayFull);
                }
                if self.slots_in(mailbox)? >= MAX_SLOTS_PER_MAILBOX {
                    return Ok(HeadOutcome::MailboxFull);
                }
                self.head_count += 1;
                HeadOutcome::Created
            }
        };
        let new = StoredHead {
            seq: head.seq,
            last_access: stored.as_ref().map_or(now, |old| old.last_access.max(now)),
            envelope: head.envelope.clone(),
        };
        self.write_head(mailbox, slot, stored.as_ref(), &new)?;
        Ok(outcome)
    }

    /// Records `token` as used; false if it already was.
    fn spend(&mut self, token: SpentToken) -> Result<bool, StoreError> {
        let fresh = self
            .spent
            .insert((token.expires_at, token.nonce), ())
            .map_err(redb::Error::from)?
            .is_none();
        Ok(fresh)
    }

    /// Forgets up to a few hundred tokens that expired before `before`:
    /// enough to keep pace with the deletions that record them.
    fn forget_spent_tokens(&mut self, before: u64) -> Result<(), StoreError> {
        let expired: Vec<(u64, [u8; 16])> = self
            .spent
            .range(..(before, [0u8; 16]))
            .map_err(redb::Error::from)?
            .take(256)
            .map(|row| row.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()
            .map_err(redb::Error::from)?;
        for key in expired {
            self.spent.remove(key).map_err(redb::Error::from)?;
        }
        Ok(())
    }

    /// How many slots `mailbox` has, counting up to the per-mailbox limit.
    fn slots_in(&self, mailbox: [u8; 32]) -> Result<usize, StoreError> {
        let mut count = 0;
        for row in mailbox_range(&self.heads, mailbox)?.take(MAX_SLOTS_PER_MAILBOX) {
            row.map_err(redb::Error::from)?;
            count += 1;
        }
        Ok(count)
    }

    /// Records an access to a head at `at`; false if there is no such head.
    fn touch_head(&mut self, key: &HeadKey, at: u64) -> Result<bool, StoreError> {
        let (mailbox, slot) = (key.mailbox_bytes(), key.slot.as_str());
        let Some(current) = self.head(mailbox, slot)? else {
            return Ok(false);
        };
        if at > current.last_access {
            let touched = StoredHead {
                last_access: at,
                ..current.clone()
            };
            self.write_head(mailbox, slot, Some(&current), &touched)?;
        }
        Ok(true)
    }

    /// Deletes up to `max` heads last accessed before `cutoff`.
    fn collect_heads(&mut self, cutoff: u64, max: usize) -> Result<usize, StoreError> {
        let expired: Vec<(u64, [u8; 32], String)> = self
            .heads_by_access
            .range(..(cutoff, [0u8; 32], ""))
            .map_err(redb::Error::from)?
            .take(max)
            .map(|row| {
                row.map(|(k, _)| {
                    let (at, mailbox, slot) = k.value();
                    (at, mailbox, slot.to_owned())
                })
            })
            .collect::<Result<_, _>>()
            .map_err(redb::Error::from)?;
        let mut deleted = 0;
        for (at, mailbox, slot) in expired {
            self.heads_by_access
                .remove((at, mailbox, slot.as_str()))
                .map_err(redb::Error::from)?;
            if self
                .heads
                .remove((mailbox, slot.as_str()))
                .map_err(redb::Error::from)?
                .is_some()
            {
                self.head_count = self.head_count.saturating_sub(1);
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// One row of the heads table.
#[derive(Clone, Debug)]
struct StoredHead {
    seq: u64,
    last_access: u64,
    envelope: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cairn_proto::{HeadRecord, SignedRecord, SigningKey, Slot, Timestamp};

    use super::*;

    /// splitmix64: a small deterministic generator, so a failure replays.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % n
        }

        /// An index below `n`.
        fn pick(&mut self, n: usize) -> usize {
            usize::try_from(self.below(u64::try_from(n).unwrap())).unwrap()
        }
    }

    fn head(key: &SigningKey, slot: &str, seq: u64) -> NewHead {
        let record = HeadRecord {
            mailbox: key.verifying_key(),
            slot: Slot::new(slot).unwrap(),
            seq,
            target: BlobId::of(slot.as_bytes()),
            timestamp: Timestamp(seq),
        };
        let envelope = SignedRecord::sign(&record, key).unwrap();
        envelope.verify::<HeadRecord>().unwrap().into()
    }

    /// (mailbox, slot) → (seq, last access, envelope): what the tables
    /// should hold.
    type Model = BTreeMap<([u8; 32], String), (u64, u64, Vec<u8>)>;

    fn assert_tables_match(t: &Tables<'_>, model: &Model) {
        let rows: Model = t
            .heads
            .iter()
            .unwrap()
            .map(|row| {
                let (k, v) = row.unwrap();
                let ((mailbox, slot), (seq, at, envelope)) = (k.value(), v.value());
                ((mailbox, slot.to_owned()), (seq, at, envelope.to_vec()))
            })
            .collect();
        assert_eq!(&rows, model);
        let order: Vec<(u64, [u8; 32], String)> = t
            .heads_by_access
            .iter()
            .unwrap()
            .map(|row| {
                let (k, _) = row.unwrap();
                let (at, mailbox, slot) = k.value();
                (at, mailbox, slot.to_owned())
            })
            .collect();
        let mut expected: Vec<_> = model
            .iter()
            .map(|((mailbox, slot), (_, at, _))| (*at, *mailbox, slot.clone()))
            .collect();
        expected.sort();
        assert_eq!(order, expected);
        assert_eq!(t.head_count, model.len() as u64);
    }

    /// Random puts, touches, listings and collections against a plain map:
    /// the compare-and-set, the access order and the count always agree
    /// with it, across many committed transactions.
    #[test]
    fn heads_match_a_plain_map_model() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::open_db(dir.path(), 1 << 20).unwrap();
        let keys: Vec<SigningKey> = (0..3u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
        let slots = ["a", "A", "0", "_", "-", "zz", "a-"];
        let max_heads = 12;
        let mut model = Model::new();
        let mut rng = Rng(7);
        let mut now = 1_000;
        let mut seen = std::collections::BTreeSet::new();
        for _round in 0..150 {
            let txn = db.begin_write().unwrap();
            {
                let mut t = Tables::open(&txn).unwrap();
                for _ in 0..=rng.below(8) {
                    now += rng.below(3);
                    let key = &keys[rng.pick(keys.len())];
                    let mailbox = key.verifying_key().to_bytes();
                    let slot = slots[rng.pick(slots.len())];
                    let row = (mailbox, slot.to_owned());
                    match rng.below(10) {
                        0..=5 => {
                            let h = head(key, slot, rng.below(6));
                            let count = model.len() as u64;
                            let expected = match model.get_mut(&row) {
                                Some(stored) if h.seq <= stored.0 => {
                                    stored.1 = stored.1.max(now);
                                    HeadOutcome::Stale {
                                        seq: stored.0,
                                        current: stored.2.clone(),
                                    }
                                }
                                Some(stored) => {
                                    *stored = (h.seq, stored.1.max(now), h.envelope.clone());
                                    HeadOutcome::Replaced
                                }
                                None if count >= max_heads => HeadOutcome::RelayFull,
                                None => {
                                    model.insert(row, (h.seq, now, h.envelope.clone()));
                                    HeadOutcome::Created
                                }
                            };
                            seen.insert(match &expected {
                                HeadOutcome::Created => "created",
                                HeadOutcome::Replaced => "replaced",
                                HeadOutcome::Stale { .. } => "stale",
                                HeadOutcome::RelayFull => "full",
                                HeadOutcome::MailboxFull => "mailbox full",
                            });
                            assert_eq!(t.put_head(&h, now, max_heads).unwrap(), expected);
                        }
                        6 | 7 => {
                            let at = now - rng.below(5);
                            let held = model.get_mut(&row).map(|stored| {
                                stored.1 = stored.1.max(at);
                            });
                            let key = HeadKey {
                                mailbox: key.verifying_key(),
                                slot: Slot::new(slot).unwrap(),
                            };
                            assert_eq!(t.touch_head(&key, at).unwrap(), held.is_some());
                        }
                        8 => {
                            let cutoff = now - rng.below(20);
                            let max = rng.pick(4);
                            let mut due: Vec<_> = model
                                .iter()
                                .filter(|(_, (_, at, _))| *at < cutoff)
                                .map(|((mailbox, slot), (_, at, _))| (*at, *mailbox, slot.clone()))
                                .collect();
                            due.sort();
                            due.truncate(max);
                            for (_, mailbox, slot) in &due {
                                model.remove(&(*mailbox, slot.clone()));
                            }
                            if !due.is_empty() {
                                seen.insert("collected");
                            }
                            assert_eq!(t.collect_heads(cutoff, max).unwrap(), due.len());
                        }
                        _ => {
                            // One mailbox's range holds its rows and no other's.
                            let listed: Vec<String> = mailbox_range(&t.heads, mailbox)
                                .unwrap()
                                .map(|row| row.unwrap().0.value().1.to_owned())
                                .collect();
                            let expected: Vec<String> = model
                                .keys()
                                .filter(|(m, _)| *m == mailbox)
                                .map(|(_, slot)| slot.clone())
                                .collect();
                            assert_eq!(listed, expected);
                            assert_eq!(t.slots_in(mailbox).unwrap(), expected.len());
                        }
                    }
                }
                assert_tables_match(&t, &model);
                t.save_totals().unwrap();
            }
            txn.commit().unwrap();
        }
        // Every outcome but a full mailbox (1024 slots) was exercised.
        let seen: Vec<_> = seen.into_iter().collect();
        assert_eq!(seen, ["collected", "created", "full", "replaced", "stale"]);
    }
}
