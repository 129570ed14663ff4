//! The embedded backend (the default, one process): bodies as files
//! ([`super::files`]), metadata in an embedded redb database ([`index`]),
//! all writes through one batching writer thread ([`writer`]) that applies
//! them to the index's tables ([`tables`]).
//!
//! # Commit protocol (an upload)
//!
//! 1. Stream the body to `tmp/<random>.part`, hashing as it arrives.
//! 2. Compare the hash with the claimed id; on mismatch delete the temp file.
//! 3. Blobs over 1 MiB: `fdatasync` the temp file in the upload's own task,
//!    so big flushes run in parallel and never hold up a batch.
//! 4. Writer thread, in one batch with other requests: rename each temp file
//!    to `blobs/ab/<id>`, then one `syncfs` of the store's filesystem
//!    (making every file's contents and every rename of the batch durable),
//!    then commit the index transaction (itself fsynced). Two device flushes
//!    per batch, not two per blob: group commit.
//! 5. Only then is the upload acknowledged (201).
//!
//! Blobs of at most [`INLINE_MAX`] bytes skip steps 1–4: their bytes go into
//! their row of the index (`blobs_v2`, [`record`]) in the same transaction,
//! so the one commit makes them durable.
//!
//! # What a crash leaves behind
//!
//! - Before 4: a temp file. Removed at next start; nothing was acknowledged.
//! - Between 4's rename and its commit: a complete, verified file under
//!   `blobs/` that the index does not list. Never acknowledged; `fsck` reports
//!   it as an orphan and `--repair` indexes it (its bytes are valid).
//! - After 4: the blob is durable and indexed.
//! - A deletion commits the index change (and a `pending_unlink` row) before
//!   removing the file; a crash in between leaves a file that the next start
//!   removes.
//!
//! # Invariants
//!
//! - Every file under `blobs/` hashes to its name.
//! - Every blob in the index has its file (once pending unlinks are done).
//! - `stats.bytes` is the sum of indexed sizes, `owners` the per-owner sums.
//! - `stats.heads` is the number of heads; `heads_by_access_v1` has exactly
//!   one row per head, at its stored last access.
//!
//! # Heads
//!
//! Mailbox heads (docs/PROTOCOL.md §7.7) live only in the index, in
//! `heads_v1` with their last-access order in `heads_by_access_v1`. A PUT is
//! one writer operation: the `seq` comparison and the write happen in the
//! same transaction, and the answer follows the commit, so an acknowledged
//! head survives any crash and two concurrent PUTs cannot both win. Reads
//! are coalesced into access times like blob reads; a crash loses at most
//! the access times not yet flushed, never a head. Heads do not count
//! against blob capacity (each is a few hundred bytes); their number is
//! bounded by the `max_heads` setting and [`MAX_SLOTS_PER_MAILBOX`].
//!
//! Filesystem assumptions: `tmp/` and `blobs/` are on one filesystem; rename
//! within it is atomic; `syncfs` makes all of its written data and metadata
//! durable and reports write-back errors (Linux 5.8 and later); `fsync` of a

mod ballast;
mod fsck;
mod index;
mod read;
mod record;
mod tables;
mod upgrade;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::thread::JoinHandle;

use bytes::Bytes;
use cairn_proto::{BlobId, Slot, VerifyingKey};
use tokio::sync::{mpsc, oneshot};

pub use self::fsck::{FsckReport, fsck};
use self::index::{
    BLOBS, BY_ACCESS, CO_OWNERS, FORWARD_SOURCES, FORWARDS, FORWARDS_BY_ACCESS, HEADS,
    HEADS_BY_ACCESS, IndexReader, Location, OWNERS, PENDING_UNLINK, SOURCES, SPENT_TOKENS, STATS,
};
use self::writer::{QUEUE_DEPTH, WriteOp, Writer};
use super::StoreStats;
use super::backend::Backend;
use super::body::{BlobBody, BlobRead, Want};
use super::cache::BlobCache;
use super::error::StoreError;
use super::files::{self, BlobFiles};
use super::model::{
    BatchItem, BlobRecord, ClaimOutcome, DeleteOutcome, Forward, ForwardRow, HeadKey, HeadOutcome,
    HeadRow, InsertOutcome, Limits, NewHead, OpenReport, Source, SourceKey, SpentToken, Staged,
};
use super::rules::Rules;

/// The embedded backend: a reader of the index, the writer thread's queue,
/// and the blob files.
#[derive(Debug)]
pub(crate) struct Embedded {
    reader: IndexReader,
    tx: mpsc::Sender<WriteOp>,
    files: BlobFiles,
}

/// An opened embedded backend and what it needs kept beside it.
pub(crate) struct Opened {
    pub(crate) backend: Embedded,
    /// The totals, which its writer updates after each commit.
    pub(crate) stats: Arc<StoreStats>,
    /// The writer thread; it ends after [`Backend::close`].
    pub(crate) writer: JoinHandle<()>,
    pub(crate) files: BlobFiles,
    pub(crate) report: OpenReport,
}

impl Embedded {
    /// Opens the store under `data_dir`, finishes deletions a stop
    /// interrupted and starts the writer thread, which invalidates `cache`
    /// whenever a blob goes.
    pub(crate) fn open(
        data_dir: &Path,
        limits: &Limits,
        cache: Arc<BlobCache>,
    ) -> Result<Opened, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::io("create data directory", e))?;
        let (files, temp_files_removed) =
            BlobFiles::open(data_dir).map_err(|e| StoreError::io("open blob directories", e))?;
        let db = Arc::new(open_db(data_dir, limits.index_cache_bytes)?);
        let pending_unlinks_finished = finish_pending_unlinks(&db, &files)?;
        let reader = IndexReader::new(Arc::clone(&db));
        let (bytes, blobs, heads) = reader.stats()?;
        let stats = Arc::new(StoreStats {
            bytes: AtomicU64::new(bytes),
            blobs: AtomicU64::new(blobs),
            heads: AtomicU64::new(heads),
            reserved: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer = Writer::new(
            db,
            files.clone(),
            Arc::clone(&stats),
            Rules::new(limits),
            cache,
            ballast::Ballast::open(data_dir, limits.disk_reserve)
                .map_err(|e| StoreError::io("create the index's ballast", e))?,
        );
        let writer = std::thread::Builder::new()
            .name("cairn-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::io("spawn store writer", e))?;
        Ok(Opened {
            backend: Self {
                reader,
                tx,
                files: files.clone(),
            },
            stats,
            writer,
            files,
            report: OpenReport {
                temp_files_removed,
                pending_unlinks_finished,
            },
        })
    }

    /// Sends an operation to the writer and waits for its answer.
    async fn send<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> WriteOp,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(op(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a read of the index on the blocking pool.
    async fn read_index<T: Send + 'static>(
        &self,
        read: impl FnOnce(&IndexReader) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || read(&reader))
            .await
            .map_err(|e| StoreError::Failed(format!("index read task: {e}")))?
    }
}

impl Backend for Embedded {
    async fn insert(
        &self,
        staged: Staged,
        id: BlobId,
        size: u64,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<InsertOutcome, StoreError> {
        self.send(|reply| WriteOp::Insert {
            staged,
            id,
            size,
            source,
            now,
            token,
            reply,
        })
        .await
    }

    async fn insert_batch(
        &self,
        items: Vec<BatchItem>,
        source: Source,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        self.send(|reply| WriteOp::InsertBatch {
            items,
            source,
            now,
            token,
            reply,
        })
        .await
    }

    async fn seed(
        &self,
        blobs: Vec<(BlobId, Bytes)>,
        source: Source,
        now: u64,
    ) -> Result<usize, StoreError> {
        let inserts = blobs.into_iter().map(|(id, data)| {
            let size = data.len() as u64;
            self.insert(Staged::Bytes(data), id, size, source, now, None)
        });
        // Many at once, so the writer commits them in large batches.
        let outcomes = futures_util::future::join_all(inserts).await;
        let mut stored = 0;
        for outcome in outcomes {
            if outcome? == InsertOutcome::Stored {
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
        self.send(|reply| WriteOp::AcknowledgeHeld {
            id,
            source,
            now,
            token,
            reply,
        })
        .await
    }

    async fn add_owner(
        &self,
        id: BlobId,
        owner: VerifyingKey,
        now: u64,
        token: Option<SpentToken>,
    ) -> Result<ClaimOutcome, StoreError> {
        self.send(|reply| WriteOp::AddOwner {
            id,
            owner,
            now,
            token,
            reply,
        })
        .await
    }

    async fn delete(
        &self,
        id: BlobId,
        owner: VerifyingKey,
        token: SpentToken,
        forget_before: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        self.send(|reply| WriteOp::Delete {
            id,
            owner,
            token,
            forget_before,
            reply,
        })
        .await
    }

    async fn forward(
        &self,
        id: BlobId,
        size: u64,
        forward: Forward,
        now: u64,
    ) -> Result<bool, StoreError> {
        self.send(|reply| WriteOp::Forward {
            id,
            size,
            forward,
            now,
            reply,
        })
        .await
    }

    async fn collect(&self, cutoff: u64, max: usize) -> Result<Vec<(BlobId, u64)>, StoreError> {
        self.send(|reply| WriteOp::Collect { cutoff, max, reply })
            .await
    }

    async fn forget_spent_tokens(&self, before: u64) -> Result<usize, StoreError> {
        self.send(|reply| WriteOp::ForgetSpent { before, reply })
            .await
    }

    async fn collect_forwards(&self, cutoff: u64, max: usize) -> Result<usize, StoreError> {
        self.send(|reply| WriteOp::CollectForwards { cutoff, max, reply })
            .await
    }

    async fn write_accesses(
        &self,
        blobs: &[(BlobId, u64)],
        heads: &[(HeadKey, u64)],
    ) -> Result<(), StoreError> {
        if !blobs.is_empty() {
            let accesses = blobs.to_vec();
            self.send(|reply| WriteOp::Touch { accesses, reply })
                .await?;
        }
        if !heads.is_empty() {
            let accesses = heads.to_vec();
            self.send(|reply| WriteOp::TouchHeads { accesses, reply })
                .await?;
        }
        Ok(())
    }

    async fn put_head(&self, head: NewHead, now: u64) -> Result<HeadOutcome, StoreError> {
        self.send(|reply| WriteOp::PutHead { head, now, reply })
            .await
    }

    async fn collect_heads(&self, cutoff: u64, max: usize) -> Result<usize, StoreError> {
        self.send(|reply| WriteOp::CollectHeads { cutoff, max, reply })
            .await
    }

    async fn open_body(&self, id: &BlobId) -> Result<Option<BlobBody>, StoreError> {
        let path = self.files.path(id);
        let id = *id;
        self.read_index(move |reader| {
            // Only indexed blobs are served: a file renamed into place but
            // not yet committed is not acknowledged.
            match reader.locate(&id)? {
                None => Ok(None),
                Some(Location::Inline(bytes)) => Ok(Some(BlobBody::Inline(bytes.into()))),
                Some(Location::File) => BlobBody::open_file(&path),
            }
        })
        .await
    }

    async fn read(
        &self,
        id: BlobId,
        want: impl FnOnce(u64) -> Want + Send + 'static,
    ) -> Result<Option<BlobRead>, StoreError> {
        let path = self.files.path(&id);
        self.read_index(move |reader| read::read(reader, &path, &id, want))
            .await
    }

    async fn owner_usage(&self, owner: &VerifyingKey) -> Result<u64, StoreError> {
        let owner = *owner;
        self.read_index(move |r| r.owner_usage(&owner)).await
    }

    async fn ids_from(&self, source: SourceKey) -> Result<Vec<BlobId>, StoreError> {
        self.read_index(move |r| r.ids_from(source)).await
    }

    async fn sources_of(&self, id: &BlobId) -> Result<Vec<SourceKey>, StoreError> {
        let id = *id;
        self.read_index(move |r| r.sources_of(&id)).await
    }

    async fn least_recently_used(&self, max: usize) -> Result<Vec<(BlobId, u64)>, StoreError> {
        self.read_index(move |r| r.least_recently_used(max)).await
    }

    async fn forward_of(&self, id: &BlobId) -> Result<Option<Forward>, StoreError> {
        let id = *id;
        self.read_index(move |r| r.forward(&id)).await
    }

    async fn forwards_from(
        &self,
        start: [u8; 32],
        max: usize,
    ) -> Result<Vec<(BlobId, Forward)>, StoreError> {
        self.read_index(move |r| r.forwards_from(start, max)).await
    }

    async fn forward_count(&self) -> Result<u64, StoreError> {
        self.read_index(IndexReader::forwards).await
    }

    async fn head(&self, key: &HeadKey) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.clone();
        self.read_index(move |r| r.head(&key)).await
    }

    async fn heads(&self, mailbox: &VerifyingKey) -> Result<Vec<(Slot, Vec<u8>)>, StoreError> {
        let mailbox = *mailbox;
        self.read_index(move |r| r.heads(&mailbox)).await
    }

    /// One process: the lease is always this one's.
    async fn try_lease(&self, _name: &str, _now: u64, _ttl: u64) -> bool {
        true
    }

    async fn close(&self) {
        // A writer that is gone already has nothing left to stop.
        let _ = self.tx.send(WriteOp::Stop).await;
    }

    fn keeps_staged_files(&self) -> bool {
        true
    }

    async fn export_blobs(
        &self,
        after: Option<BlobId>,
        max: usize,
    ) -> Result<Vec<BlobRecord>, StoreError> {
        self.read_index(move |r| r.blobs_after(after, max)).await
    }

    async fn export_heads(
        &self,
        after: Option<HeadKey>,
        max: usize,
    ) -> Result<Vec<HeadRow>, StoreError> {
        self.read_index(move |r| r.heads_after(after.as_ref(), max))
            .await
    }

    async fn export_forwards(
        &self,
        after: Option<BlobId>,
        max: usize,
    ) -> Result<Vec<ForwardRow>, StoreError> {
        self.read_index(move |r| r.forwards_after(after, max)).await
    }

    async fn import_blob(
        &self,
        staged: Staged,
        record: BlobRecord,
    ) -> Result<InsertOutcome, StoreError> {
        self.send(|reply| WriteOp::Import {
            staged,
            record,
            reply,
        })
        .await
    }

    async fn import_head(&self, row: HeadRow) -> Result<bool, StoreError> {
        self.send(|reply| WriteOp::ImportHead { row, reply }).await
    }

    async fn import_forward(&self, row: ForwardRow) -> Result<bool, StoreError> {
        self.send(|reply| WriteOp::ImportForward { row, reply })
            .await
    }
}

/// Where the index lives under the data directory.
pub(crate) fn index_path(data_dir: &Path) -> PathBuf {
    data_dir.join("index.redb")
}

/// Opens the index database with a page cache of `cache_bytes`, creating
/// its tables and bringing an index an earlier release wrote up to the
/// current layout ([`upgrade`]).
pub(crate) fn open_db(data_dir: &Path, cache_bytes: usize) -> Result<redb::Database, StoreError> {
    let db = redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(index_path(data_dir))
        .map_err(redb::Error::from)?;
    let txn = db.begin_write().map_err(redb::Error::from)?;
    let upgraded = upgrade::to_v2(&txn)?;
    txn.open_table(BLOBS).map_err(redb::Error::from)?;
    txn.open_table(BY_ACCESS).map_err(redb::Error::from)?;
    txn.open_table(OWNERS).map_err(redb::Error::from)?;
    txn.open_table(CO_OWNERS).map_err(redb::Error::from)?;
    txn.open_table(PENDING_UNLINK).map_err(redb::Error::from)?;
    txn.open_table(STATS).map_err(redb::Error::from)?;
    txn.open_table(HEADS).map_err(redb::Error::from)?;
    txn.open_table(HEADS_BY_ACCESS).map_err(redb::Error::from)?;
    txn.open_table(SOURCES).map_err(redb::Error::from)?;
    txn.open_table(FORWARD_SOURCES).map_err(redb::Error::from)?;
    txn.open_table(FORWARDS).map_err(redb::Error::from)?;
    txn.open_table(FORWARDS_BY_ACCESS)
        .map_err(redb::Error::from)?;
    txn.open_table(SPENT_TOKENS).map_err(redb::Error::from)?;
    txn.commit().map_err(redb::Error::from)?;
    if let Some(upgraded) = upgraded {
        tracing::info!(
            blobs = upgraded.blobs,
            inline = upgraded.inline,
            forwarded_sources = upgraded.forwarded_sources,
            "the index was upgraded to its version 2 layout (one row per blob)"
        );
    }
    Ok(db)
}

/// Removes files of blobs whose deletion committed before the last stop.
fn finish_pending_unlinks(db: &redb::Database, files: &BlobFiles) -> Result<usize, StoreError> {
    use redb::ReadableTable as _;
    let txn = db.begin_write().map_err(redb::Error::from)?;
    let mut done = 0;
    {
        let mut pending = txn.open_table(PENDING_UNLINK).map_err(redb::Error::from)?;
        let blobs = txn.open_table(BLOBS).map_err(redb::Error::from)?;
        let ids: Vec<[u8; 32]> = pending
            .iter()
            .map_err(redb::Error::from)?
            .map(|row| row.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()
            .map_err(redb::Error::from)?;
        for raw in ids {
            // Re-uploaded since: the file is the live blob's.
            if blobs.get(raw).map_err(redb::Error::from)?.is_none() {
                let id = BlobId::from_bytes(raw);
                if let Some(dir) = files
                    .remove(&id)
                    .map_err(|e| StoreError::io("remove deleted blob", e))?
                {
                    files::fsync_dir(&dir)
                        .map_err(|e| StoreError::io("fsync blob directory", e))?;
                }
            }
            pending.remove(raw).map_err(redb::Error::from)?;
            done += 1;
        }
    }
    txn.commit().map_err(redb::Error::from)?;
    Ok(done)
}
