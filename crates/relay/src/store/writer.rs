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
    BLOBS, BY_ACCESS, BlobMeta, INLINE, OWNERS, PENDING_UNLINK, STAT_BLOBS, STAT_BYTES, STATS,
};
use super::{DeleteOutcome, INLINE_MAX, InsertOutcome, Staged, StoreError, StoreStats};

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
        owner: VerifyingKey,
        now: u64,
        reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
    },
    Delete {
        id: BlobId,
        owner: VerifyingKey,
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
    Touch(oneshot::Sender<Result<usize, StoreError>>, usize),
    Collect(
        oneshot::Sender<Result<Vec<(BlobId, u64)>, StoreError>>,
        Vec<(BlobId, u64)>,
    ),
}

impl Reply {
    fn send_ok(self) {
        // A requester that went away (client disconnected) no longer cares;
        // the change itself is committed either way.
        match self {
            Self::Insert(tx, v) => drop(tx.send(Ok(v))),
            Self::Delete(tx, v) => drop(tx.send(Ok(v))),
            Self::Touch(tx, n) => drop(tx.send(Ok(n))),
            Self::Collect(tx, v) => drop(tx.send(Ok(v))),
        }
    }

    fn send_err(self, err: StoreError) {
        match self {
            Self::Insert(tx, _) => drop(tx.send(Err(err))),
            Self::Delete(tx, _) => drop(tx.send(Err(err))),
            Self::Touch(tx, _) => drop(tx.send(Err(err))),
            Self::Collect(tx, _) => drop(tx.send(Err(err))),
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
        WriteOp::Touch { reply, .. } => drop(reply.send(Err(err))),
        WriteOp::Collect { reply, .. } => drop(reply.send(Err(err))),
    }
}

pub(crate) struct Writer {
    pub(crate) db: Arc<redb::Database>,
    pub(crate) files: BlobFiles,
    pub(crate) stats: Arc<StoreStats>,
    pub(crate) capacity: u64,
    pub(crate) key_quota: u64,
    /// Unlinks finished after the previous commit, to drop from
    /// `PENDING_UNLINK` in the next transaction.
    pub(crate) unlinked: Vec<BlobId>,
    pub(crate) cache: Arc<BlobCache>,
}

impl Writer {
    /// Runs until every sender is gone.
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
        let (bytes, blobs);
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
                        owner,
                        now,
                        reply,
                    } => {
                        let refused = if let Some(mut meta) = t.meta(&id)? {
                            t.touch(&id, &mut meta, now)?;
                            Some(InsertOutcome::AlreadyHeld)
                        } else if t.bytes.saturating_add(size) > self.capacity {
                            Some(InsertOutcome::RelayFull)
                        } else if self.key_quota > 0
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
                            // Where a blob lives depends on its size alone, so
                            // a delete and a re-upload of one id in a batch
                            // always agree on it.
                            let staged = match staged {
                                Staged::File(temp) if size <= INLINE_MAX as u64 => {
                                    let data = std::fs::read(&temp)
                                        .map_err(|e| StoreError::io("read small upload", e))?;
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
                                }
                                Staged::Bytes(data) => {
                                    self.files
                                        .install_bytes(&id, &data)
                                        .map_err(|e| StoreError::io("install blob file", e))?;
                                    installed = true;
                                }
                                Staged::File(temp) => {
                                    self.files
                                        .install(&temp, &id)
                                        .map_err(|e| StoreError::io("install blob file", e))?;
                                    installed = true;
                                }
                            }
                            unlink.remove(&id);
                            t.insert(&id, size, owner, now)?;
                            InsertOutcome::Stored
                        };
                        replies.push(Reply::Insert(reply, outcome));
                    }
                    WriteOp::Delete { id, owner, reply } => {
                        let outcome = match t.meta(&id)? {
                            None => DeleteOutcome::NotFound,
                            Some(meta) if meta.owner != Some(owner) => DeleteOutcome::NotOwner,
                            Some(meta) => {
                                if t.remove(&id, &meta)? {
                                    unlink.insert(id);
                                } else {
                                    deleted_inline = true;
                                }
                                DeleteOutcome::Deleted
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
                            }
                        }
                        replies.push(Reply::Touch(reply, held));
                    }
                    WriteOp::Collect { cutoff, max, reply } => {
                        let expired: Vec<(u64, [u8; 32])> = t
                            .by_access
                            .range(..(cutoff, [0u8; 32]))
                            .map_err(redb::Error::from)?
                            .take(max)
                            .map(|row| row.map(|(k, _)| k.value()))
                            .collect::<Result<_, _>>()
                            .map_err(redb::Error::from)?;
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
                }
            }
            t.stats
                .insert(STAT_BYTES, t.bytes)
                .map_err(redb::Error::from)?;
            t.stats
                .insert(STAT_BLOBS, t.count)
                .map_err(redb::Error::from)?;
            (bytes, blobs) = (t.bytes, t.count);
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

/// The index tables inside one write transaction, with running totals.
struct Tables<'txn> {
    blobs: redb::Table<'txn, [u8; 32], [u8; 56]>,
    by_access: redb::Table<'txn, (u64, [u8; 32]), ()>,
    owners: redb::Table<'txn, [u8; 32], u64>,
    pending: redb::Table<'txn, [u8; 32], ()>,
    inline: redb::Table<'txn, [u8; 32], &'static [u8]>,
    stats: redb::Table<'txn, &'static str, u64>,
    bytes: u64,
    count: u64,
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
        let (bytes, count) = (stat(STAT_BYTES)?, stat(STAT_BLOBS)?);
        Ok(Self {
            blobs: txn.open_table(BLOBS).map_err(redb::Error::from)?,
            by_access: txn.open_table(BY_ACCESS).map_err(redb::Error::from)?,
            owners: txn.open_table(OWNERS).map_err(redb::Error::from)?,
            pending: txn.open_table(PENDING_UNLINK).map_err(redb::Error::from)?,
            inline: txn.open_table(INLINE).map_err(redb::Error::from)?,
            stats,
            bytes,
            count,
        })
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

    fn insert(
        &mut self,
        id: &BlobId,
        size: u64,
        owner: VerifyingKey,
        now: u64,
    ) -> Result<(), StoreError> {
        let meta = BlobMeta {
            size,
            created: now,
            last_access: now,
            owner: Some(owner),
        };
        let used = self.owner_usage(&owner)?;
        self.blobs
            .insert(id.as_bytes(), meta.encode())
            .map_err(redb::Error::from)?;
        self.by_access
            .insert((now, *id.as_bytes()), ())
            .map_err(redb::Error::from)?;
        self.owners
            .insert(owner.to_bytes(), used + size)
            .map_err(redb::Error::from)?;
        self.bytes += size;
        self.count += 1;
        Ok(())
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
            let left = self.owner_usage(owner)?.saturating_sub(meta.size);
            if left == 0 {
                self.owners
                    .remove(owner.to_bytes())
                    .map_err(redb::Error::from)?;
            } else {
                self.owners
                    .insert(owner.to_bytes(), left)
                    .map_err(redb::Error::from)?;
            }
        }
        self.bytes = self.bytes.saturating_sub(meta.size);
        self.count = self.count.saturating_sub(1);
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
}
